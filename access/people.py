"""Accounts: password hashes and the lockout after repeated failures.

Passwords are hashed with argon2id (argon2-cffi, the reference implementation's binding, with
its current default cost), never stored or logged.  Lockout is sans-I/O: the failures so far
and `now` in, the new count and the end of the lock out; the store keeps them and the service
ledgers each failure and each lock, so the 管理簿 shows an attack on an account.
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from .errors import AccessError

__all__ = ["Account", "BadCredentials", "MIN_PASSWORD", "hash_password", "password_matches", "after_failure"]

MIN_PASSWORD = 12
_HASHER = PasswordHasher()


class BadCredentials(AccessError):
    """Unknown name, wrong password, disabled or locked account: the message does not say
    which of the first two, so it cannot be used to find account names."""


@dataclass(frozen=True, slots=True)
class Account:
    name: str
    role: str
    deputy_of: str | None
    disabled: bool
    absent: bool
    failed_logins: int
    locked_until: str | None
    created_at: str


def hash_password(password: str) -> str:
    if len(password) < MIN_PASSWORD:
        raise AccessError(f"a password has at least {MIN_PASSWORD} characters")
    return _HASHER.hash(password)


def password_matches(stored_hash: str, password: str) -> bool:
    try:
        return _HASHER.verify(stored_hash, password)
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False


def after_failure(failures: int, now: datetime, max_failures: int, lock_minutes: int) -> tuple[int, datetime | None]:
    """The failure count after one more, and until when the account is locked (None: not yet)."""
    failures += 1
    if failures >= max_failures:
        return failures, now + timedelta(minutes=lock_minutes)
    return failures, None

"""The centre's access service put together: its PostgreSQL, its policy, its folder (the CA, the
grant key, the ledger key) and the mutual-TLS fetch from the sites.  The CLI (`callrec centre
user|request|copies|ledger ...`) and the console at the centre both open it here.

The centre's ledger key is derived from a master key of its own, `ledger.key` in the centre's
folder (beside ca.key and grant.key; back it up with them).  It is made on first use only while the
centre's chain is empty: a chain whose key is gone cannot be verified, and a new key would hide
that rather than say it.
"""
from __future__ import annotations

import asyncio
import concurrent.futures
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from access.centre_ledger import CENTRE_KEY_LABEL, CentreLedger
from access.centre_service import CentreService, SiteFetched
from access.errors import AccessError
from policy.loader import load_policy
from policy.schema import Policy
from storage.keys import MasterKey, MasterKeyError, MasterKeyMissing, create_key_file
from wire.errors import CallrecError

from .config import DSN_ENV
from .pki import CentreCA, load_ca
from .site_client import fetch

__all__ = ["LEDGER_KEY_FILE", "POLICY_ENV", "MtlsFetcher", "centre_ledger_key", "centre_service"]

POLICY_ENV = "CALLREC_CENTRE_POLICY"
LEDGER_KEY_FILE = "ledger.key"


class CentreAccessError(CallrecError):
    """The centre's access service cannot be opened as asked; says why."""


class MtlsFetcher:
    """access.centre_service.SiteFetcher over callrec/site_client.py with the centre's client
    certificate.  Callable from an event loop too (the console): the fetch then runs its own loop
    in a worker thread."""

    def __init__(self, ca: CentreCA, timeout: float = 60.0) -> None:
        self.ca = ca
        self.timeout = timeout

    def __call__(self, site: str, host: str, port: int, token: str, output: Path) -> SiteFetched:
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            got = fetch(self.ca, host, port, token, output, site=site, timeout=self.timeout)
        else:
            with concurrent.futures.ThreadPoolExecutor(1) as pool:
                got = pool.submit(fetch, self.ca, host, port, token, output, site=site, timeout=self.timeout).result()
        return SiteFetched(got.path, got.sha256, got.size, got.site_ledger_seq)


def centre_ledger_key(folder: Path, conn: Any) -> bytes:
    """The centre ledger's key from the folder's ledger.key, made now if the chain is empty."""
    path = folder / LEDGER_KEY_FILE
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except FileNotFoundError:
        fd = None
    if fd is not None:
        try:
            if os.fstat(fd).st_mode & 0o077:
                raise CentreAccessError(f"{path}: group or others may read it; chmod 0600")
            text = os.read(fd, 1024).strip()
        finally:
            os.close(fd)
        try:
            key = MasterKey(bytes.fromhex(text.decode("ascii")))
        except (UnicodeDecodeError, ValueError, MasterKeyError) as exc:
            raise CentreAccessError(f"{path}: not a key file as callrec writes it (64 hex digits): {exc}") from None
        return key.derive(CENTRE_KEY_LABEL)
    if CentreLedger(conn, b"\0" * 32).head() is not None:
        raise MasterKeyMissing("is missing but the centre's ledger has entries: put the backed-up key back "
                               "(a new key could not verify the chain)", path)
    return create_key_file(path).derive(CENTRE_KEY_LABEL)


@contextmanager
def centre_service(dsn: str | None, policy: Policy | Path | None, folder: Path,
                   fetcher: MtlsFetcher | None = None) -> Iterator[CentreService]:
    """The centre's service on a connection of its own, closed after.  `dsn` and `policy` default
    to $CALLREC_CENTRAL_DSN and $CALLREC_CENTRE_POLICY."""
    import psycopg

    from storage.central_link import connect

    dsn = dsn or os.environ.get(DSN_ENV)
    if not dsn:
        raise CentreAccessError(f"name the centre's PostgreSQL: --dsn or ${DSN_ENV}")
    policy = policy or (Path(os.environ[POLICY_ENV]) if os.environ.get(POLICY_ENV) else None)
    if policy is None:
        raise CentreAccessError(f"the centre's policy (roles, purposes, copy rules): --policy or ${POLICY_ENV}")
    if isinstance(policy, Path):
        policy = load_policy(policy)
    ca = load_ca(folder)
    try:
        conn = connect(dsn, name="callrec centre")
    except psycopg.Error as exc:
        raise CentreAccessError(f"cannot reach the centre: {str(exc).strip()}") from None
    try:
        if conn.execute("SELECT to_regclass('centre_ledger') IS NULL").fetchone()[0]:
            raise AccessError("the centre's schema has no access tables: run `callrec central migrate`")
        service = CentreService(conn, policy, ledger_key=centre_ledger_key(folder, conn), grant_key=ca.grant_key,
                                folder=folder, fetcher=fetcher or MtlsFetcher(ca))
        yield service
    finally:
        conn.close()

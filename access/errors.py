"""What the access layer refuses, on callrec's one error base."""
from __future__ import annotations

from wire.errors import CallrecError

__all__ = ["AccessError", "Forbidden", "FormError", "PackageError"]


class AccessError(CallrecError):
    """A request about people, requests, approvals or copies that cannot be done as asked."""


class Forbidden(AccessError):
    """The person, in the role they act in, may not do this under the organisation's policy;
    the message names the rule and its clause.  Nothing was changed."""


class PackageError(AccessError):
    """A copy package cannot be written as asked (the path exists, a file does not match its
    seal, the manifest is unusable) or a fingerprint given to check one is not a fingerprint.
    Nothing was left under the package's name."""


class FormError(AccessError):
    """A form cannot be printed as asked: a field its organisation's form cannot say (a purpose
    outside its boxes, a date before 平成) or the fonts it is set in are not installed."""

"""What happens to a recording after it is made: people, roles, requests, approvals, copies, forms.

Built on `storage` (it reads the index and writes the ledger through it) and on the
organisation's `policy` (`access:` section); the console drives the same core.

`__all__` names the modules others may import; each module's own `__all__` names what it
offers.
"""
__all__ = ["centre_book", "centre_ledger", "centre_service", "copies", "copy_manifest", "desk", "errors", "forms",
           "monthly", "package", "people", "reporting", "requests", "rules", "service", "site_desk", "site_grants",
           "site_identity"]

"""Where recordings are kept: the index, the encrypted vaults, retention, integrity, the ledger.

It stands without the capture stack: it imports the wire formats, the policy
and `recorder.record` (the hand-over contract) only, so the access layer and
the console can build on it.  The vault format, the audio files inside it,
durable writes and the retention planner are its own business.

`__all__` names the modules others may import; each module's own `__all__`
names what it offers.
"""
__all__ = ["anchor", "archive", "archive_audit", "central_link", "central_schema", "central_search",
           "central_sync", "durable", "errors", "faults", "index", "keys", "layout", "ledger", "lock", "marks",
           "notices", "outbox",
           "records", "recordings", "recovery", "reports", "reserve", "seal_ledger", "sealing", "search", "store",
           "sweep", "verify", "warnings", "wipe"]

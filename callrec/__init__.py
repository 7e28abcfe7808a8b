"""The `callrec` command and the daemon: the wiring of recorder, announcer, policy and storage.

The top floor: it imports every package below it, and nothing imports it.
"""
__all__ = ["cli"]

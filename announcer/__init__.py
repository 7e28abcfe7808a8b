"""The SIP user agent that plays the 録音告知 announcement on inbound calls.

A sans-I/O core (transactions, the call state machine, digest, registration,
SDP offer/answer) driven by `now` with `get_timer()`/`handle_timer()`, and
one asyncio adapter, `service`, which alone sends packets, reads the
announcement file and writes proof of notice to storage.

`__all__` names the modules others may import; each module's own `__all__`
names what it offers.
"""
__all__ = ["audio", "config", "errors", "outcomes", "service"]

"""Capture and the call-recording cores: packets in, recordings out through a sink.

`record` is the whole of what storage sees (a frozen call snapshot, the
result of a call and the sink protocols); `engine`, `capture_file` and
`live_capture` are what the daemon and the CLI drive.  Link and IP decoding,
call tracking, RTP timing and interleaving stay inside.

`__all__` names the modules others may import; each module's own `__all__`
names what it offers.
"""
__all__ = ["batch", "capture_file", "engine", "errors", "fanout", "live_capture", "marks", "on_demand", "record"]

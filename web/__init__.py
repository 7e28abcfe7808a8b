"""The console: browser screens over `access` and `storage`, with no rule of its own.

A separate process (`callrec web`) beside the recording daemon: it opens its own index
connections, asks the daemon for its health over the status socket, and lets people do through
the access layer what its rules allow them to, in Japanese (English switchable).  Every rule is
the access layer's, checked on the server for every request; hiding a button is only courtesy.

`__all__` names the modules others may import; each module's own `__all__` names what it offers.
"""
__all__ = ["app", "config", "daemon_control", "server"]

"""The organisation's rules, read from YAML policy files, and the decisions they imply.

Pure, and on the ground floor beside `wire`: what to record, what to announce,
how long to keep.  Loading a policy loads no audio, no announcer and no
numpy: an announcement is a file path here, and the announcer reads it.

`__all__` names the modules others may import; each module's own `__all__`
names what it offers.
"""
__all__ = ["access", "announcement", "decide", "harassment", "loader", "notice", "on_demand", "retention", "schema",
           "strict"]

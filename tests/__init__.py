"""The callrec test suite.  Helpers are imported from here as `tests.<module>`."""

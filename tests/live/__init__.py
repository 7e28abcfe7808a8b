"""The live daemon end to end (tests/test_live_e2e.py): SIPp caller and
callee on either side of a switch whose SPAN port callrec captures, tcpdump
on the same port as the witness of what went on the wire."""

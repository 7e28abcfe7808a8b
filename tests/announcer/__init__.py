"""Announcer test helpers: a scripted PBX for the UA core (pbx.py), the service on loopback
(loopback.py), and SIPp as the PBX in network namespaces (lab.py, scenarios.py)."""

"""The SIP user agent that plays the 録音告知 announcement (built in a later issue)."""

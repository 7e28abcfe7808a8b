"""The command line and the wiring of recorder, policy and storage."""

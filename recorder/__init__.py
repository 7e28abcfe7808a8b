"""Capture decoding, SIP/SDP, RTP and audio writing: packets in, recordings out."""

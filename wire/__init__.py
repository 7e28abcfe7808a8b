"""The formats on the wire and on disk that every part of callrec shares.

SIP and SDP (what the recorder watches and the announcer speaks), RTP (parsed
by the recorder, packetised by the announcer), G.711, the WAV and pcap files
a recording is handed out as or a capture is read from, and the error base.
Pure: bytes and values in, values out; nothing here imports another package
of ours, so the recorder, the announcer and storage all stand on it.

`__all__` names the modules others may import; each module's own `__all__`
names what it offers.
"""
__all__ = ["errors", "g711", "pcap", "rtp", "rtppcap", "sdp", "sip", "wav"]

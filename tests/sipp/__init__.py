"""Our own captures, made by real tools: SIPp calls between network
namespaces, recorded with tcpdump, for the interop tests."""

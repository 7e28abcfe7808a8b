"""The record layout of a vault file, parsed independently of the reader
in storage.vault, so the tests can cut, swap and search single records."""
from __future__ import annotations

import struct
from pathlib import Path

from storage.vault import read_header


def framing(path: Path) -> list[tuple[int, int]]:
    """(offset, total size) of every record, parsed here independently of
    the reader, from the documented layout."""
    data = path.read_bytes()
    offset = read_header(path).size
    records = []
    while offset < len(data):
        (word,) = struct.unpack(">I", data[offset : offset + 4])
        size = 4 + (word & 0x7FFFFFFF)
        records.append((offset, size))
        offset += size
    assert offset == len(data)
    return records

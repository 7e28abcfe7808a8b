from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from wire import g711

SOX_TYPES = {"PCMU": "ul", "PCMA": "al"}


@pytest.mark.parametrize("law", ["PCMU", "PCMA"])
def test_tables_match_sox(tmp_path: Path, law: str) -> None:
    codes = tmp_path / f"codes.{SOX_TYPES[law]}"
    codes.write_bytes(bytes(range(256)))
    out = tmp_path / "out.raw"
    subprocess.run(
        [
            "sox",
            "-t",
            SOX_TYPES[law],
            "-r",
            "8000",
            "-c",
            "1",
            str(codes),
            "-t",
            "s16",
            "-L",
            str(out),
        ],
        check=True,
        capture_output=True,
    )
    reference = np.frombuffer(out.read_bytes(), dtype="<i2")
    assert reference.shape == (256,)
    assert np.array_equal(g711.table(law), reference)


def test_known_itu_values() -> None:
    u, a = g711.ULAW_TO_PCM16, g711.ALAW_TO_PCM16
    assert (u[0x00], u[0x80], u[0xFF], u[0x7F]) == (-32124, 32124, 0, 0)
    assert (a[0x2A], a[0xAA], a[0xD5], a[0x55]) == (-32256, 32256, 8, -8)
    assert u.dtype == np.dtype("<i2") and a.dtype == np.dtype("<i2")


def test_sign_symmetry_and_monotonic_segments() -> None:
    for tab in (g711.ULAW_TO_PCM16, g711.ALAW_TO_PCM16):
        for code in range(128):
            assert tab[code] == -tab[code ^ 0x80]
    # mu-law codes 0x80..0xFF are positive values descending to zero.
    assert np.all(np.diff(g711.ULAW_TO_PCM16[0x80:].astype(int)) < 0)


def test_silence_bytes_decode_near_zero() -> None:
    assert g711.ULAW_TO_PCM16[g711.SILENCE_BYTE["PCMU"]] == 0
    assert abs(int(g711.ALAW_TO_PCM16[g711.SILENCE_BYTE["PCMA"]])) == 8


def test_tables_are_read_only() -> None:
    with pytest.raises(ValueError):
        g711.ULAW_TO_PCM16[0] = 1


@given(st.binary(max_size=400), st.sampled_from(["PCMU", "PCMA"]))
def test_decode_is_little_endian_table_lookup(data: bytes, law: str) -> None:
    out = g711.decode(law, data)
    assert len(out) == 2 * len(data)
    tab = g711.table(law)
    for i, code in enumerate(data):
        assert (
            int.from_bytes(out[2 * i : 2 * i + 2], "little", signed=True) == tab[code]
        )


def test_decode_rejects_other_encodings() -> None:
    with pytest.raises(ValueError):
        g711.decode("G722", b"\x00")

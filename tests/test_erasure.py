"""Sure erasure on a real filesystem: after shred() the audio, its
ciphertext and its keys cannot be found anywhere in the raw disk image of
a small ext4 filesystem on a loop device."""
from __future__ import annotations

import os
import subprocess
from pathlib import Path

import numpy as np
import pytest

from wire.g711 import encode
from storage.keys import create_key_file
from storage.vault import VaultWriter, open_vault, read_header, shred
from tests.disk_image import detach, found, needles, require_tools, run
from tests.vault_framing import framing

pytestmark = pytest.mark.root


def g711_speechlike(seconds: int) -> bytes:
    """Stereo mu-law of a chirp with noise: real G.711 bytes, and distinctive
    enough that any 48-byte window found in the image can only be ours."""
    rng = np.random.default_rng(20240401)
    t = np.arange(8000 * seconds) / 8000
    left = 8000 * np.sin(2 * np.pi * (200 + 300 * t) * t) + rng.normal(0, 900, t.size)
    right = 6000 * np.sin(2 * np.pi * 440 * t) + rng.normal(0, 900, t.size)
    samples = np.stack([left, right], axis=1).ravel().clip(-32000, 32000)
    return encode("PCMU", samples.astype(np.int16))


def test_shredded_vault_leaves_nothing_in_the_disk_image(tmp_path: Path) -> None:
    require_tools()
    image = tmp_path / "disk.img"
    mount = tmp_path / "mnt"
    mount.mkdir(mode=0o700)
    with image.open("wb") as file:
        file.truncate(16 * 1024 * 1024)
    run("mkfs.ext4", "-F", "-q", "-E", "lazy_itable_init=0,lazy_journal_init=0", str(image))
    master = create_key_file(tmp_path / "master.key")
    audio = g711_speechlike(20)
    mounted = False
    try:
        try:
            run("mount", "-o", "loop", str(image), str(mount))
        except subprocess.CalledProcessError as exc:
            pytest.fail(
                f"cannot mount an ext4 image on a loop device in this environment "
                f"(needs root, /dev/loop-control and loop support in the kernel): {exc.stderr.decode().strip()}",
                pytrace=False,
            )
        mounted = True
        data = mount / "data"
        data.mkdir(mode=0o700)
        path = data / "call.vault"
        writer = VaultWriter(path, master, {"kind": "wav-data", "encoding": "PCMU", "channels": 2, "rate": 8000})
        for start in range(0, len(audio), 16000):
            writer.append(audio[start : start + 16000])
            writer.flush(durable=True)
        writer.close()

        header = read_header(path)
        data_key = master.unwrap(header.wrapped, header.context)
        raw = path.read_bytes()
        ciphertexts = [raw[offset + 4 : offset + size] for offset, size in framing(path)[:-1]]
        plaintext_needles = needles(audio, 200)
        cipher_needles = [needle for ciphertext in ciphertexts for needle in needles(ciphertext, 4)]
        key_needles = [header.wrapped, data_key]
        with open_vault(path, master) as reader:
            assert b"".join(reader.chunks()) == audio

        os.sync()
        before = image.read_bytes()
        assert found(before, plaintext_needles) == [], "the audio must never reach the disk unencrypted"
        assert len(found(before, cipher_needles)) == len(cipher_needles), "control: the search finds the ciphertext"
        assert found(before, [header.wrapped]) == [0], "control: the search finds the wrapped key"
        assert found(before, [data_key]) == [], "the data key is only ever on disk wrapped"

        shred(path)
        assert not path.exists()
        os.sync()
        run("umount", str(mount))
        mounted = False
        after = image.read_bytes()
        assert found(after, plaintext_needles) == [], "plaintext found in the image after shred"
        assert found(after, cipher_needles) == [], "record ciphertext found in the image after shred"
        assert found(after, key_needles) == [], "wrapped or data key found in the image after shred"
    finally:
        if mounted:
            subprocess.run(["umount", str(mount)], timeout=60)
        detach(image)

"""Make announcer/data/default_announcement.wav, the Japanese notice callrec ships:
「この通話は、応対品質の向上のため録音させていただきます。」

Reproducible from Debian packages alone: espeak-ng (its Japanese voice reads kana, so the text is
given here in its reading) and sox (resampling to 8 kHz mono 16-bit, no dither, repeatable).
Debian 12 main has Open JTalk but no HTS voice for it (hts-voice-nitech-jp-atr503-m001 is not in
main), so Open JTalk cannot speak here. tests/test_announcer_audio.py runs this script and
compares its output with the committed file byte for byte.

    python -m announcer.make_default_announcement [OUTPUT]
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

TEXT = "この通話は、応対品質の向上のため録音させていただきます。"
READING = "このつうわわ、おうたいひんしつの こうじょうのため、ろくおん させて いただきます。"
OUTPUT = Path(__file__).resolve().parent / "data" / "default_announcement.wav"
ESPEAK = ("-v", "ja", "-s", "140", "-p", "45", "-a", "120")
SOX_EFFECTS = ("norm", "-3", "pad", "0.2", "0.3")


def _tool(name: str, package: str) -> str:
    path = shutil.which(name)
    if path is None:
        raise SystemExit(f"{name} is not installed: apt-get install {package}")
    return path


def make(output: Path) -> None:
    espeak, sox = _tool("espeak-ng", "espeak-ng"), _tool("sox", "sox")
    with tempfile.TemporaryDirectory() as tmp:
        spoken = Path(tmp) / "spoken.wav"
        subprocess.run([espeak, *ESPEAK, "-w", str(spoken), READING], check=True, timeout=60)
        made = Path(tmp) / "out.wav"
        subprocess.run([sox, "-R", "-D", str(spoken), "-r", "8000", "-c", "1", "-b", "16", "-e", "signed-integer",
                        str(made), *SOX_EFFECTS], check=True, timeout=60)
        os.chmod(made, 0o644)
        shutil.move(made, output)


if __name__ == "__main__":
    make(Path(sys.argv[1]) if len(sys.argv) > 1 else OUTPUT)

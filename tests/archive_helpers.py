"""The archive stage's tests share these: a policy with an archive stage (大阪市水道局's periods),
the moments its sweeps act on the public captures' calls, where each file of a recording is, and a
sweep killed with SIGKILL just before one step of a move."""
from __future__ import annotations

import signal
import subprocess
import sys
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

from storage.archive import STAGING
from storage.audiofile import side_digest, wav_digest
from storage.index import CallRow
from storage.store import Store
from tests.interop import REPO

TOKYO = ZoneInfo("Asia/Tokyo")
POLICY = ("network: {trunk: [203.0.113.0/28], pbx: [192.0.2.10]}\n"
          "retention:\n  keep: {months: 6}\n  free_space_floor: 1 MiB\n"
          "  archive: {keep: {months: 6}, free_space_floor: 1 MiB}\n")
CAPTURES = ("sip-rtp-g711.pcap", "sip-rtp-g722.pcap")
"""Two calls answered on 26 November 2016 (JST), one (with a side file) on 27 November."""


def jst(text: str) -> float:
    return datetime.fromisoformat(text).replace(tzinfo=TOKYO).timestamp()


BEFORE_MOVE = jst("2017-05-26T23:59:59")
MOVE_26 = jst("2017-05-27T00:00:00")
"""Six months from 27 November, the day after the 26th: the 26th's calls move, the 27th's stay."""
MOVE_ALL = jst("2017-05-28T00:00:00")
ERASE_26 = jst("2017-11-27T00:00:00")
"""Six more months from 27 May, the day after the 26th's device period ended."""
ERASE_ALL = jst("2017-11-28T00:00:00")

STEPS = ("_check_copy", "_place", "_commit", "_remove_device_copies", "_ledger_moves", "_mark_finished")
"""A move's steps in order; a crash just before each leaves the state the one before made."""

_KILLED_SWEEP = """
import os, signal, sys
from pathlib import Path
from policy.loader import load_policy
from storage import archive, sweep
from storage.store import Store
from tests.archive_helpers import TOKYO

data, medium, policy, step, now = sys.argv[1:]
def crash(*args, **kwargs):
    os.kill(os.getpid(), signal.SIGKILL)
setattr(archive, step, crash)
with Store.open(Path(data), TOKYO, archive_dir=Path(medium)) as store:
    sweep.sweep(store, load_policy(Path(policy)).retention, float(now), "test")
"""


def sweep_killed_before(step: str, data: Path, medium: Path, policy: Path, now: float) -> None:
    """A sweep in its own process, killed by SIGKILL just before `step` of the first move."""
    assert step in STEPS
    result = subprocess.run([sys.executable, "-c", _KILLED_SWEEP, str(data), str(medium), str(policy), step,
                             repr(now)], check=False, cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == -signal.SIGKILL, f"the sweep was not killed at {step}: {result.stderr}"


def authoritative(store: Store, row: CallRow) -> Path:
    """The folder the row says its files are in."""
    assert store.archive_dir is not None
    return store.data_dir if row.stored_on is None else store.archive_dir


def good_copy(store: Store, row: CallRow) -> bool:
    """Whether the files where the row says they are authenticate and match the call's seals."""
    root = authoritative(store, row)
    assert row.audio_path is not None
    _, digest = wav_digest(root / row.audio_path, store.master, row.id)
    return digest == row.sha256 and all(side_digest(root / side.path, store.master, row.id) == side.sha256
                                        for side in row.side_files)


def vaults(folder: Path) -> list[Path]:
    """Every recording file under a data folder or on a medium (the staging folder included)."""
    return sorted(p for sub in ("recordings", STAGING) if (folder / sub).is_dir()
                  for p in (folder / sub).rglob("*") if p.is_file())

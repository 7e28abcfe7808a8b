"""A data folder that exists before callrec first uses it (made by hand with mkdir, so 0755)
becomes 0700, as the ones callrec makes are, or is refused with what to do about it."""
from __future__ import annotations

import os
import re
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from storage import layout
from storage.layout import FolderNotPrivate, ensure_private_dir
from tests.interop import REPO


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_a_new_folder_is_made_private_whatever_the_umask(tmp_path: Path) -> None:
    old = os.umask(0o002)
    try:
        ensure_private_dir(tmp_path / "data")
    finally:
        os.umask(old)
    assert mode(tmp_path / "data") == 0o700


def test_an_existing_open_folder_is_made_private_and_that_is_logged_once(tmp_path: Path) -> None:
    folder = tmp_path / "data"
    folder.mkdir()
    folder.chmod(0o755)
    with capture_logs() as logs:
        ensure_private_dir(folder)
        ensure_private_dir(folder)
    assert mode(folder) == 0o700
    assert logs == [{"event": "folder.made_private", "path": str(folder), "mode": "0755", "log_level": "warning"}]


def test_a_private_folder_is_left_alone(tmp_path: Path) -> None:
    folder = tmp_path / "data"
    folder.mkdir(mode=0o700)
    folder.chmod(0o500)
    with capture_logs() as logs:
        ensure_private_dir(folder)
    assert mode(folder) == 0o500 and logs == []


def test_a_folder_of_someone_else_is_refused_not_changed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = tmp_path / "data"
    folder.mkdir()
    folder.chmod(0o750)
    monkeypatch.setattr(layout.os, "geteuid", lambda: folder.stat().st_uid + 1)
    with pytest.raises(FolderNotPrivate, match=rf"{re.escape(str(folder))} is mode 0750 .*chmod 700 "):
        ensure_private_dir(folder)
    assert mode(folder) == 0o750


@pytest.mark.root
def test_a_data_folder_made_by_hand_is_private_after_the_first_command(tmp_path: Path) -> None:
    """As an administrator meets it: `mkdir /srv/callrec-data` then a callrec command; and the
    same folder handed to another user is refused by the command, with exit status 2."""
    assert os.geteuid() == 0, "this test gives a folder to another user and must run as root (CI does)"
    data = tmp_path / "callrec-data"
    data.mkdir()
    data.chmod(0o755)
    command = [sys.executable, "-m", "callrec", "calls", "list", "--data-dir", str(data)]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    result = subprocess.run(command, capture_output=True, text=True, timeout=120, env=env, cwd=tmp_path, check=False)
    assert result.returncode == 0, result.stderr
    assert mode(data) == 0o700 and "folder.made_private" in result.stderr
    other = tmp_path / "theirs"
    other.mkdir()
    other.chmod(0o755)
    os.chown(other, 65534, 65534)
    refused = subprocess.run([*command[:-1], str(other)], capture_output=True, text=True, timeout=120, env=env,
                             cwd=tmp_path, check=False)
    assert refused.returncode == 2 and f"chmod 700 {other}" in refused.stderr
    assert mode(other) == 0o755

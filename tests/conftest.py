"""Shared fixtures."""
from __future__ import annotations

import os
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from hypothesis import settings

from tests.sipp.captures import Captures, make_captures
from tests.sipp.netns import LabError

settings.register_profile("callrec", deadline=None)
settings.load_profile("callrec")
"""Property tests judge results, never speed: a per-example deadline fails them whenever the
machine is busy (speed is measured in bench/)."""


@pytest.fixture(scope="session")
def sipp_captures(tmp_path_factory: pytest.TempPathFactory) -> Captures:
    """Our own SIPp captures (see tests/sipp/captures.py), made once per
    session as root in network namespaces that are gone again when this
    returns.  A machine where that cannot be done fails the tests that use
    them: these captures are what proves the recorder against real tools."""
    try:
        return make_captures(tmp_path_factory.mktemp("sipp-captures"))
    except LabError as exc:
        pytest.fail(f"cannot make the SIPp captures: {exc}", pytrace=False)


@pytest.fixture()
def small_disk(tmp_path: Path) -> Iterator[Callable[[str], Path]]:
    """`small_disk("1m")` mounts a tmpfs of that size for the test and
    returns its mount point; every one is unmounted at the end.  Root only
    (CI runs as root): without it the test fails, saying why."""
    mounts: list[Path] = []

    def make(size: str) -> Path:
        assert os.geteuid() == 0, "this test mounts a small tmpfs of its own and must run as root (CI does)"
        mount = tmp_path / f"small{len(mounts)}"
        mount.mkdir(mode=0o700)
        subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0700", "tmpfs", str(mount)],
                       check=True, timeout=30)
        mounts.append(mount)
        return mount

    yield make
    for mount in mounts:
        subprocess.run(["umount", "-l", str(mount)], check=False, timeout=30)

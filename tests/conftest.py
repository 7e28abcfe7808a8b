"""Shared fixtures."""
from __future__ import annotations

import pytest

from sipp.captures import Captures, make_captures
from sipp.netns import LabError


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

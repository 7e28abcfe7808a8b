"""Log lines carry their time zone: a timestamp without an offset next to an index that writes
+09:00 leaves an operator guessing which clock a log line was on."""
from __future__ import annotations

import re
import time
from collections.abc import Iterator
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
import structlog

from callrec import logs
from storage.index import iso


@pytest.fixture()
def tokyo(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The machine's local zone is Japan's for the test (the appliance's is), and structlog's
    set-up is put back afterwards."""
    saved = structlog.get_config()
    monkeypatch.setenv("TZ", "Asia/Tokyo")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()
    structlog.configure(**saved)


def logged_time(capsys: pytest.CaptureFixture[str]) -> str:
    logs.configure("info", journal=False)
    structlog.get_logger("callrec.test").info("test.event", n=1)
    line = capsys.readouterr().err
    found = re.search(r"timestamp='?([^' ]+)", line)
    assert found, line
    return found.group(1)


def test_every_log_timestamp_is_iso_8601_with_its_offset(tokyo: None, capsys: pytest.CaptureFixture[str]) -> None:
    stamp = logged_time(capsys)
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}\+09:00", stamp), stamp
    when = datetime.fromisoformat(stamp)
    assert when.utcoffset() == timedelta(hours=9)
    assert abs(when.timestamp() - time.time()) < 60


def test_a_log_line_and_an_index_time_write_the_offset_alike(tokyo: None,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    stamp = logged_time(capsys)
    assert stamp[-6:] == iso(time.time(), ZoneInfo("Asia/Tokyo"))[-6:] == "+09:00"


def test_the_offset_follows_the_machine_zone(monkeypatch: pytest.MonkeyPatch,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    saved = structlog.get_config()
    monkeypatch.setenv("TZ", "UTC")
    time.tzset()
    try:
        assert logged_time(capsys).endswith("+00:00")
    finally:
        monkeypatch.undo()
        time.tzset()
        structlog.configure(**saved)

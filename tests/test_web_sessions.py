"""Console sessions without a clock: idle and absolute expiry, the CSRF token, sign-out."""
from __future__ import annotations

from pathlib import Path

from web.sessions import SessionStore

T0 = 1_790_000_000.0


def test_a_session_lives_while_used_and_dies_idle_or_old(tmp_path: Path) -> None:
    store = SessionStore(tmp_path / "index.sqlite3", idle_seconds=900, max_seconds=8 * 3600)
    token, session = store.begin("kanri", T0)
    assert store.resume(token, T0 + 899) is not None
    assert store.resume(token, T0 + 899 + 900) is not None, "each use restarts the idle clock"
    assert store.resume(token, T0 + 899 + 900 + 901) is None, "idle too long"
    assert store.resume(token, T0 + 899 + 900 + 902) is None, "and gone for good"
    token, _ = store.begin("kanri", T0)
    for minute in range(1, 8 * 60, 10):
        assert store.resume(token, T0 + minute * 60) is not None
    assert store.resume(token, T0 + 8 * 3600 + 1) is None, "no session outlives its absolute limit"


def test_the_token_is_not_stored_and_csrf_must_match(tmp_path: Path) -> None:
    path = tmp_path / "index.sqlite3"
    store = SessionStore(path, 900, 3600)
    token, session = store.begin("sato", T0)
    store.close()
    stored = b"".join(f.read_bytes() for f in tmp_path.glob("index.sqlite3*"))
    assert session.csrf.encode() in stored, "the table is where the test looks"
    assert token.encode() not in stored
    assert session.csrf_ok(session.csrf) and not session.csrf_ok("forged") and not session.csrf_ok(None)


def test_sign_out_and_disabling_end_sessions(tmp_path: Path) -> None:
    store = SessionStore(tmp_path / "index.sqlite3", 900, 3600)
    first, _ = store.begin("sato", T0)
    second, _ = store.begin("sato", T0)
    store.end(first)
    assert store.resume(first, T0 + 1) is None and store.resume(second, T0 + 1) is not None
    store.end_all("sato")
    assert store.resume(second, T0 + 2) is None
    assert store.resume(None, T0) is None and store.resume("unknown", T0) is None

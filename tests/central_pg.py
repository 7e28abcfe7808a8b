"""A real PostgreSQL for a test: initdb and pg_ctl in a temporary folder, listening on a unix
socket there only (no TCP port to collide with another helper's), stopped and removed after.

As root (CI), the server runs as the `postgres` account Debian's package makes: PostgreSQL
refuses to run as root.  Missing tools fail the test loudly: the README's test command installs
`postgresql`.
"""
from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

__all__ = ["PostgresServer", "postgres"]

BIN_DIRS = sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True)


def _tool(name: str) -> str:
    found = shutil.which(name) or next((str(d / name) for d in BIN_DIRS if (d / name).exists()), None)
    if found is None:
        pytest.fail(f"{name} is missing: install Debian's `postgresql` (the README's test command does)")
    return found


class PostgresServer:
    """One server in its own folder; `start`, `stop` (the centre going away) and `start` again
    keep the data."""

    def __init__(self, prefix: str = "central-pg-", durable: bool = False) -> None:
        self.durable = durable
        """fsync on (the bench's figures); the tests run without it, as nothing survives them."""
        self.folder = Path(tempfile.mkdtemp(prefix=prefix))
        self.data = self.folder / "data"
        self.socket_dir = self.folder
        self._as = None if os.geteuid() != 0 else pwd.getpwnam("postgres")
        if self._as is not None:
            os.chown(self.folder, self._as.pw_uid, self._as.pw_gid)
        self._run([_tool("initdb"), "-D", str(self.data), "-A", "trust", "-U", "callrec", "-E", "UTF8",
                   "--locale=C.UTF-8", "--no-sync"])

    def _run(self, argv: list[str]) -> None:
        if self._as is not None:
            argv = ["runuser", "-u", "postgres", "--", *argv]
        done = subprocess.run(argv, check=False, capture_output=True, text=True, timeout=120)
        if done.returncode != 0:
            pytest.fail(f"{' '.join(argv)} failed: {done.stderr or done.stdout}")

    @property
    def dsn(self) -> str:
        return f"host={self.socket_dir} port=5432 user=callrec dbname=postgres"

    def start(self) -> None:
        options = f"-c listen_addresses='' -k {self.socket_dir} -c max_connections=40"
        if not self.durable:
            options += " -c fsync=off"
        self._run([_tool("pg_ctl"), "-D", str(self.data), "-o", options, "-l", str(self.folder / "log"),
                   "-w", "-t", "60", "start"])

    def stop(self) -> None:
        self._run([_tool("pg_ctl"), "-D", str(self.data), "-m", "fast", "-w", "stop"])

    def create_database(self, name: str) -> str:
        """A fresh database on this server; returns its DSN."""
        with psycopg.connect(self.dsn, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return f"host={self.socket_dir} port=5432 user=callrec dbname={name}"

    def remove(self) -> None:
        if (self.data / "postmaster.pid").exists():
            self.stop()
        shutil.rmtree(self.folder, ignore_errors=True)


@pytest.fixture
def postgres() -> Iterator[PostgresServer]:
    server = PostgresServer()
    try:
        server.start()
        yield server
    finally:
        server.remove()

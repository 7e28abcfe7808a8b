"""Two sites synced to one centre, for the central search and the console at the centre: a real
PostgreSQL (tests/central_pg.py), two appliances' data folders that replay different public
captures (and site B thirty calls more, made through its index), a hold at each, the retention
rule run at site A (tombstones), and each site's outbox
sent with `callrec central sync --once`, as an operator would."""
from __future__ import annotations

import json
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from tests.central_pg import PostgresServer
from tests.central_sites import make_rows, site_config
from tests.console_site import PASSWORD, free_port
from tests.interop import REPO, calls, capture, run_cli

__all__ = ["BULK", "KUMAMOTO", "CentreConsole", "SITE_CAPTURES", "TwoSites", "two_sites"]

KUMAMOTO = REPO / "policies" / "kumamoto.yaml"
SITE_CAPTURES = {"site-a": "sip-rtp-g711.pcap", "site-b": "SIP_DTMF2.pcap"}
BULK = 30
"""Calls made at site B through its index (tests/central_sites.make_rows): 1.8 s apart from
2026-05-28 05:26:40 JST, outside numbers 0300000000, 0300000001 ..."""


@dataclass
class TwoSites:
    dsn: str
    configs: dict[str, Path]
    held: dict[str, str]
    """The call held at each site, by site."""

    def data(self, site: str) -> Path:
        return Path(json.loads(self.configs[site].read_text())["data_dir"])

    def calls(self, site: str) -> list[dict]:
        return calls(self.data(site))


def two_sites(server: PostgresServer, folder: Path) -> TwoSites:
    """site-a and site-b at one centre, every change sent."""
    dsn = server.create_database("centre")
    run_cli("central", "init", "--dsn", dsn)
    configs = {site: site_config(folder, site, dsn) for site in SITE_CAPTURES}
    held: dict[str, str] = {}
    for site, name in SITE_CAPTURES.items():
        run_cli("replay", capture(name), "--config", configs[site])
        first = calls(Path(json.loads(configs[site].read_text())["data_dir"]))[0]["id"]
        run_cli("hold", "add", first, "--reason", f"情報公開請求 {site}", "--config", configs[site])
        held[site] = first
    make_rows(Path(json.loads(configs["site-b"].read_text())["data_dir"]), BULK, prefix="b")
    run_cli("retention", "run", "--now", "2018-01-01T00:00:00+09:00", "--policy", KUMAMOTO, "--config",
            configs["site-a"])
    for config in configs.values():
        run_cli("central", "sync", "--once", "--config", config)
    return TwoSites(dsn, configs, held)


class CentreConsole:
    """`callrec web --centre DSN` on a loopback port: the console at the centre, with its people
    (name → role) in a data folder of its own, started and stopped by the test."""

    def __init__(self, folder: Path, dsn: str, people: dict[str, str], policy: Path = KUMAMOTO) -> None:
        """The console starts first: at the centre it makes its own data folder (key, people,
        sessions, its ledger) on its first start, as no recorder runs there to make one."""
        self.folder = folder
        self.data = folder / "centre-console"
        self.where = ("--data-dir", self.data, "--policy", policy)
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.log_path = folder / "centre-web.log"
        self.log = self.log_path.open("wb")
        self.proc = subprocess.Popen([sys.executable, "-m", "callrec", "web", *map(str, self.where), "--port",
                                      str(self.port), "--plain-http", "--centre", dsn], cwd=REPO, stdout=self.log,
                                     stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 30
        while "web.ready" not in self.logtext():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise AssertionError(f"callrec web --centre never became ready: {self.logtext()}")
            time.sleep(0.1)
        manager = next(name for name, role in people.items() if role == "manager")
        for name, role in people.items():
            by = [] if name == manager else ["--user", manager]
            first = "" if name == manager else PASSWORD.format(manager) + "\n"
            run_cli("user", "add", name, "--role", role, *self.where, *by, input=first + PASSWORD.format(name) + "\n")

    def logtext(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=20)
        self.log.close()

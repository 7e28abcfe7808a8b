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
from datetime import UTC, datetime
from pathlib import Path

from callrec.pki import enrol_site, init_ca
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
    """`callrec web --centre DSN --centre-dir DIR` on a loopback port: the console at the centre,
    its CA made first (`callrec centre ca init`), its people added at the centre (`callrec centre
    user add`); sites it fetches audio from are enrolled and served on demand (`serve`).  Started
    and stopped by the test."""

    def __init__(self, folder: Path, dsn: str, people: dict[str, str], policy: Path = KUMAMOTO) -> None:
        self.folder = folder
        self.dsn = dsn
        self.policy = policy
        self.centre_dir = folder / "centre"
        self.ca = init_ca(self.centre_dir, datetime.now(UTC), "熊本市")
        self.data = folder / "centre-console"
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.log_path = folder / "centre-web.log"
        self.log = self.log_path.open("wb")
        self.servers: list[subprocess.Popen[bytes]] = []
        self.proc = subprocess.Popen([sys.executable, "-m", "callrec", "web", "--data-dir", str(self.data),
                                      "--policy", str(policy), "--port", str(self.port), "--plain-http", "--centre",
                                      dsn, "--centre-dir", str(self.centre_dir)], cwd=REPO, stdout=self.log,
                                     stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 30
        while "web.ready" not in self.logtext():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise AssertionError(f"callrec web --centre never became ready: {self.logtext()}")
            time.sleep(0.1)
        self.manager = next(name for name, role in people.items() if role == "manager")
        for name, role in people.items():
            by = None if name == self.manager else self.manager
            self.centre_cli("user", "add", name, "--role", role, user=by, input=PASSWORD.format(name) + "\n")

    def centre_cli(self, *args: str | Path, user: str | None = None, input: str = "") -> str:
        """`callrec centre ARGS` at this centre, signed in as `user` (its password first on stdin)."""
        signed = ["--user", user] if user else []
        first = PASSWORD.format(user) + "\n" if user else ""
        return run_cli("centre", *args, "--dsn", self.dsn, "--centre-dir", self.centre_dir, "--policy", self.policy,
                       *signed, input=first + input).stdout

    def serve(self, site: str, config: Path) -> None:
        """Enrol the site with this centre's CA, start its fetch server, and tell the centre where it is."""
        bundle, code = enrol_site(self.ca, site, datetime.now(UTC))
        (self.folder / f"{site}.bundle").write_bytes(bundle)
        (self.folder / f"{site}.code").write_text(code)
        run_cli("site", "enrol", self.folder / f"{site}.bundle", "--config", config, "--code-file",
                self.folder / f"{site}.code")
        with (self.folder / f"{site}.serve.log").open("wb") as err:
            server = subprocess.Popen([sys.executable, "-m", "callrec", "site", "serve", "--config", str(config),
                                       "--listen", "127.0.0.1:0"], cwd=REPO, stdout=subprocess.PIPE, stderr=err)
        self.servers.append(server)
        assert server.stdout is not None
        line = server.stdout.readline().decode()
        assert line.startswith("listening on "), (line, (self.folder / f"{site}.serve.log").read_text())
        self.centre_cli("site-address", site, f"127.0.0.1:{line.rsplit(':', 1)[1].strip()}", user=self.manager)

    def logtext(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self) -> None:
        for process in (*self.servers, self.proc):
            if process.poll() is None:
                process.terminate()
                process.wait(timeout=20)
        self.log.close()

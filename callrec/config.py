"""The daemon's own settings (where data lives, which policy, which
interfaces), as opposed to the organisation's rules in the policy."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

from pydantic import Field

from announcer.config import AnnouncerConfig
from policy.loader import read_yaml, validate
from policy.strict import Strict
from web.config import WebConfig

DEFAULT_DATA_DIR = Path(os.environ.get("CALLREC_DATA_DIR", "callrec-data"))


class Health(Strict):
    """When silence on the mirror port means something is unplugged."""

    quiet_sip_minutes: Annotated[float, Field(gt=0)] = 30.0
    quiet_rtp_minutes: Annotated[float, Field(gt=0)] = 30.0
    business_hours: Annotated[str, Field(pattern=r"^([01][0-9]|2[0-3]):[0-5][0-9]-([01][0-9]|2[0-4]):[0-5][0-9]$")] = (
        "08:30-17:15"
    )
    business_days: list[Annotated[int, Field(ge=0, le=6)]] = [0, 1, 2, 3, 4]
    disk_warn_percent: Annotated[float, Field(gt=0, lt=100)] = 90.0


class SiteFetch(Strict):
    """The fetch server a site runs for its centre (README: several sites): mutual TLS with the
    certificates of `callrec site enrol`."""

    listen: str = "0.0.0.0"
    port: Annotated[int, Field(ge=1, le=65535)] = 7443


DSN_ENV = "CALLREC_CENTRAL_DSN"
"""Where the centre's commands look for its PostgreSQL when no --dsn is given."""


class Central(Strict):
    """The centre this appliance syncs its rows and ledgers to (README: several sites); absent,
    the appliance stands alone as it always has."""

    dsn: Annotated[str, Field(min_length=1)]
    """libpq connection string or URI; a password goes in ~/.pgpass or PGPASSFILE, not here."""
    site: Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9-]{0,62}$")]
    """This appliance's name at the centre, one per data folder."""
    lag_warning_seconds: Annotated[float, Field(gt=0)] = 900.0
    """A change unsent this long: a warning in the journal and in `callrec status`."""
    batch_rows: Annotated[int, Field(ge=1, le=10000)] = 500
    interval_seconds: Annotated[float, Field(gt=0, le=3600)] = 2.0
    timeout_seconds: Annotated[float, Field(gt=0, le=300)] = 10.0


class Config(Strict):
    data_dir: Path = DEFAULT_DATA_DIR
    policy: Path | None = None
    interfaces: Annotated[list[str], Field(min_length=1, max_length=16)] = ["lo"]
    promiscuous: bool = True
    sip_ports: list[Annotated[int, Field(ge=1, le=65535)]] = [5060]
    status_socket: Path | None = None
    key_file: Path | None = None
    anchor_dir: Path | None = None
    """Where the ledgers' heads are anchored (README: the ledger's anchor); a
    second medium is best. Default: beside the data folder, DATA.anchor."""
    sweep_interval_seconds: Annotated[float, Field(ge=5, le=86400)] = 60.0
    create_key: bool = True
    log_level: Annotated[str, Field(pattern="^(debug|info|warning|error)$")] = "info"
    health: Health = Health()
    announcer: AnnouncerConfig | None = None
    web: WebConfig | None = None
    archive_dir: Path | None = None
    """The second medium's folder, for a policy with an archive stage (retention.archive)."""
    site_fetch: SiteFetch | None = None
    """Serve recordings to the centre against its grants; this data folder must be enrolled."""
    capture_workers: Annotated[int, Field(ge=1, le=64)] = 1
    """Processes capturing live, the media spread over them by PACKET_FANOUT (callrec.workers);
    1 captures in the daemon itself."""
    central: Central | None = None

    @property
    def status_path(self) -> Path:
        """The admin socket; beside the data unless the unit puts it in /run."""
        return self.status_socket or self.data_dir / "status.sock"

    def restart_needed(self, other: Config) -> list[str]:
        """Settings a running daemon cannot change without a restart."""
        fields = ("data_dir", "interfaces", "promiscuous", "sip_ports", "status_socket", "key_file", "archive_dir",
                  "anchor_dir", "capture_workers", "central")
        return [name for name in fields if getattr(self, name) != getattr(other, name)]


def load_config(path: Path) -> Config:
    """Read the config file; errors name file, line and field like policy errors."""
    config = validate(Config, read_yaml(path), str(path))
    base = path.parent
    updates: dict[str, Path] = {}
    if not config.data_dir.is_absolute():
        updates["data_dir"] = base / config.data_dir
    if config.policy is not None and not config.policy.is_absolute():
        updates["policy"] = base / config.policy
    if config.status_socket is not None and not config.status_socket.is_absolute():
        updates["status_socket"] = base / config.status_socket
    if config.key_file is not None and not config.key_file.is_absolute():
        updates["key_file"] = base / config.key_file
    if config.archive_dir is not None and not config.archive_dir.is_absolute():
        updates["archive_dir"] = base / config.archive_dir
    if config.anchor_dir is not None and not config.anchor_dir.is_absolute():
        updates["anchor_dir"] = base / config.anchor_dir
    if config.announcer is not None:
        updates["announcer"] = config.announcer.relative_to(base)
    return config.model_copy(update=updates)

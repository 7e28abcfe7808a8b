"""The console's settings: the `web:` section of config.yaml."""
from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Annotated

from pydantic import Field

from policy.strict import Strict

__all__ = ["CentreLink", "WebConfig"]


class CentreLink(Strict):
    """The centre the console shows (README: several sites): its PostgreSQL, searched across
    every site's calls; absent, the console shows this appliance's own store as it always has."""

    dsn: Annotated[str, Field(min_length=1)]
    """libpq connection string or URI; a password goes in ~/.pgpass or PGPASSFILE, not here."""
    lag_warning_seconds: Annotated[float, Field(gt=0)] = 900.0
    """A site whose oldest unsent change is older than this is shown as lagging (the sites' own
    default warning, central.lag_warning_seconds)."""
    timeout_seconds: Annotated[float, Field(gt=0, le=60)] = 5.0
    """How long a page waits for the centre before it says the centre cannot be reached."""
    folder: Path | None = None
    """The centre's folder (its CA, grant key and ledger key: `callrec centre ca init`); default
    $CALLREC_CENTRE_DIR or ./callrec-centre, as the `callrec centre` commands."""


class WebConfig(Strict):
    """Where the console listens and how long a sign-in lasts.

    HTTPS always, except on a loopback address (a test, or an SSH tunnel); with no certificate
    given, a self-signed one is made on first start and kept in the data folder."""

    listen: str = "127.0.0.1"
    port: Annotated[int, Field(ge=1, le=65535)] = 8443
    certificate: Path | None = None
    private_key: Path | None = None
    plain_http: bool = False
    """Only on loopback: serve plain HTTP (tests, or behind an SSH tunnel)."""
    session_idle_minutes: Annotated[int, Field(ge=1, le=240)] = 15
    session_max_hours: Annotated[int, Field(ge=1, le=24)] = 8
    centre: CentreLink | None = None

    @property
    def loopback(self) -> bool:
        try:
            return ipaddress.ip_address(self.listen).is_loopback
        except ValueError:
            return self.listen == "localhost"

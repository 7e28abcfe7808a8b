"""The console's settings: the `web:` section of config.yaml."""
from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Annotated

from pydantic import Field

from policy.strict import Strict

__all__ = ["WebConfig"]


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

    @property
    def loopback(self) -> bool:
        try:
            return ipaddress.ip_address(self.listen).is_loopback
        except ValueError:
            return self.listen == "localhost"

"""The announcer's section of the daemon config (`announcer:` in config.yaml).

Strict like the rest of the config: a misspelt PBX address would otherwise silently refuse every
call. The registration password is never in the YAML: password_file names a file (0600) that holds
it, so the config can be shown to anyone who asks why calls are refused.
"""
from __future__ import annotations

import ipaddress
from enum import StrEnum
from pathlib import Path
from typing import Annotated

from pydantic import Field, field_validator, model_validator

from policy.loader import read_yaml, validate
from policy.schema import Network, networks
from policy.strict import Strict

__all__ = ["AnnouncerConfig", "load_announcer_config"]

Port = Annotated[int, Field(ge=1, le=65535)]


class HandOver(StrEnum):
    REFER = "refer"
    EARLY_MEDIA_302 = "early_media_302"


class DestinationFrom(StrEnum):
    REQUEST_URI = "request_uri"
    TO = "to"
    DIVERSION = "diversion"


class Registration(Strict):
    """Register to the PBX as an extension, for PBXs that only route to registered endpoints."""

    registrar: str  # host or host:port of the registrar (an IP address)
    user: Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.!~*'()&=+$,;?/%-]+$")]
    auth_user: Annotated[str | None, Field(max_length=64)] = None
    password_file: Path
    domain: str | None = None
    expires: Annotated[int, Field(ge=60, le=86400)] = 3600
    transport: Annotated[str, Field(pattern="^(udp|tcp)$")] = "udp"

    @field_validator("registrar")
    @classmethod
    def _hostport(cls, value: str) -> str:
        ipaddress.ip_address(split_hostport(value, 5060)[0])
        return value

    def password(self) -> str:
        """Read when registering, so a changed password file needs no restart."""
        return self.password_file.read_text(encoding="utf-8").strip()


class AnnouncerConfig(Strict):
    listen_address: str = "127.0.0.1"
    listen_port: Port = 5060
    transports: Annotated[list[Annotated[str, Field(pattern="^(udp|tcp)$")]], Field(min_length=1)] = ["udp", "tcp"]
    pbx: Annotated[list[Network], Field(min_length=1)]
    rtp_ports: tuple[Port, Port] = (20000, 20999)
    hand_over: HandOver = HandOver.REFER
    destination_from: DestinationFrom = DestinationFrom.REQUEST_URI
    operator: Annotated[str, Field(pattern=r"^\+?[0-9*#]{1,32}$")]
    handover_host: str | None = None
    ring_seconds: Annotated[float, Field(ge=0, le=30)] = 0.0
    refer_timeout: Annotated[float, Field(gt=0, le=60)] = 4.0
    notify_timeout: Annotated[float, Field(gt=0, le=300)] = 60.0
    stop_timeout: Annotated[float, Field(gt=0, le=60)] = 10.0
    max_calls: Annotated[int, Field(ge=1, le=2000)] = 400
    registration: Registration | None = None

    @field_validator("listen_address")
    @classmethod
    def _address(cls, value: str) -> str:
        return str(ipaddress.ip_address(value))

    _networks = field_validator("pbx", mode="before")(networks)

    @model_validator(mode="after")
    def _range(self) -> AnnouncerConfig:
        low, high = self.rtp_ports
        if high - low < 1:
            raise ValueError("rtp_ports must be a range [low, high] with room for at least one stream")
        return self

    def relative_to(self, base: Path) -> AnnouncerConfig:
        """Relative paths in the section are relative to the file's folder."""
        if self.registration is None or self.registration.password_file.is_absolute():
            return self
        registration = self.registration.model_copy(update={"password_file": base / self.registration.password_file})
        return self.model_copy(update={"registration": registration})

    def allows(self, host: str) -> bool:
        try:
            address = ipaddress.ip_address(host)
        except ValueError:
            return False
        return any(address in net for net in self.pbx)


def split_hostport(value: str, default: int) -> tuple[str, int]:
    if value.startswith("["):
        host, _, rest = value[1:].partition("]")
        return host, int(rest[1:]) if rest.startswith(":") else default
    if value.count(":") == 1:
        host, _, port = value.partition(":")
        return host, int(port)
    return value, default


def load_announcer_config(path: Path) -> tuple[AnnouncerConfig, Path | None, Path | None]:
    """The announcer section, and the policy and data_dir the same file names.

    Reads either a daemon config.yaml (its `announcer:` section and top-level `policy` and
    `data_dir`) or a file that is the section alone; errors name file, line and field like the
    daemon's config errors. Relative paths are relative to the file.
    """
    tree = read_yaml(path)
    whole = "announcer" in tree
    section, prefix = (tree["announcer"], ("announcer",)) if whole else (tree, ())
    config = validate(AnnouncerConfig, tree, str(path), prefix, section).relative_to(path.parent)
    base = path.parent
    policy = Path(str(tree["policy"])) if whole and tree.get("policy") else None
    data_dir = Path(str(tree["data_dir"])) if whole and tree.get("data_dir") else None
    return (config, base / policy if policy is not None else None,
            base / data_dir if data_dir is not None else None)

"""The policy file's schema.

The schema is strict (unknown keys are refused) because a misspelt key in a
legal retention or exclusion rule must never be silently ignored.
"""
from __future__ import annotations

import ipaddress
import re
from typing import Annotated, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import Field, ValidationInfo, field_validator, model_validator

from .access import Access
from .announcement import Announcement
from .harassment import Harassment
from .on_demand import OnDemand
from .retention import Listening, Retention
from .strict import Strict

__all__ = ["Network", "NoticeContact", "OwnNumber", "Policy", "PublicNotice", "networks"]

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def networks(value: object) -> object:
    """Addresses or networks as written in YAML (pydantic checks the list)."""
    if not isinstance(value, list):
        return value
    out = []
    for item in value:
        try:
            out.append(ipaddress.ip_network(str(item), strict=False))
        except ValueError:
            raise ValueError(f"{item!r} is not an IP address or network") from None
    return out


class OwnNumber(Strict):
    """One of the organisation's own numbers as the carrier shows them: the representative
    number (代表), a DID (ダイヤルイン), or a block of DIDs written with trailing X for the digits
    that vary (023-641-12XX) or as a range from `number` to `to` (both ends included)."""

    number: Annotated[str, Field(min_length=1, max_length=32, pattern=r"^\+?[0-9()\- .]+[xX]*$")]
    to: Annotated[str | None, Field(min_length=1, max_length=32, pattern=r"^\+?[0-9()\- .]+$")] = None
    label: Annotated[str, Field(max_length=64)] = ""

    @model_validator(mode="after")
    def _whole_range(self) -> OwnNumber:
        if self.to is None:
            return self
        if "x" in self.number.lower():
            raise ValueError("a range (to:) is written with whole numbers, not X digits")
        if self.number.lstrip().startswith("+") != self.to.lstrip().startswith("+"):
            raise ValueError("write both ends of a range in the same form (both 0XX or both +81)")
        if sum(ch.isdigit() for ch in self.number) != sum(ch.isdigit() for ch in self.to):
            raise ValueError("a range's two ends must have the same number of digits")
        return self


class Numbering(Strict):
    """How numbers look at this site, so that calls get a direction and parties."""

    country_code: Annotated[str, Field(pattern=r"^[1-9][0-9]{0,2}$")] = "81"
    extension_pattern: str = r"^[1-9][0-9]{2,4}$"

    @field_validator("extension_pattern")
    @classmethod
    def _compiles(cls, value: str) -> str:
        try:
            re.compile(value)
        except re.error as exc:
            raise ValueError(f"not a valid regular expression: {exc}") from None
        return value

    own_numbers: list[OwnNumber] = []
    """The organisation's own numbers (representative, DIDs, blocks): a call from one of them
    is outbound and one to one of them inbound, whatever form (0XX, +81) the carrier writes,
    and the city-side number of a call is the one among them."""
    withheld_caller: Literal["discard", "keep_masked"] = "discard"
    """A caller who withheld the number (Privacy: id, 184, anonymous From) while the carrier
    still sends it in P-Asserted-Identity: discard it (nothing of it is stored), or keep it
    masked (never in a list, a search or the console; disclosed only by fulfilling an
    approved request, ledgered)."""

    @field_validator("own_numbers", mode="before")
    @classmethod
    def _plain_own_numbers(cls, value: object) -> object:
        """Let a plain list of numbers stand for entries without labels."""
        if isinstance(value, list):
            return [{"number": str(v)} if isinstance(v, (str, int)) else v for v in value]
        return value


class NetworkRoles(Strict):
    """Addresses of the carrier trunk and of the PBX, as seen on the mirror port."""

    trunk: list[Network] = []
    pbx: list[Network] = []

    _networks = field_validator("trunk", "pbx", mode="before")(networks)


class ExcludedLine(Strict):
    """A consultation line that is never recorded (matsumoto §3(2))."""

    number: Annotated[str, Field(min_length=1, max_length=32, pattern=r"^\+?[0-9()\- .]+$")]
    label: Annotated[str, Field(max_length=64)] = ""


class Recording(Strict):
    """Which calls are recorded besides external ones."""

    internal_calls: bool = True
    unknown_direction: bool = True
    preroll_seconds: Annotated[float, Field(ge=0, le=10)] = 2.0
    rtp_timeout_seconds: Annotated[float, Field(ge=10, le=86400)] = 300.0
    max_open_dialogs: Annotated[int, Field(ge=1000, le=10_000_000)] = 100_000
    """Calls followed at once; past it an INVITE flood's unanswered dialogs are forgotten,
    oldest first (about 3 KiB each; answered calls are always kept)."""


class NoticeContact(Strict):
    """Where the public asks about the recording (窓口), as the published notice gives it."""

    office: Annotated[str, Field(min_length=1, max_length=80)]
    phone: Annotated[str | None, Field(min_length=1, max_length=32, pattern=r"^\+?[0-9()\- .]+$")] = None


class PublicNotice(Strict):
    """What the published notice (設置の公表: 品川区 第4条, 松本市 第5条, 山形市 第4条, 熊本市 第3条,
    さいたま 第3条7) says beyond what the rest of the policy already fixes: the purpose in the
    guideline's words, where the device records, who manages it and whom to ask."""

    purpose: Annotated[str, Field(max_length=400)] = ""
    location: Annotated[str, Field(max_length=200)] = ""
    """設置場所: whose telephones are recorded (e.g. 本庁舎, お客様センター)."""
    manager: Annotated[str, Field(max_length=64)] = ""
    """管理責任者 as the guideline names the post (e.g. 管財課長)."""
    contact: NoticeContact | None = None


class Policy(Strict):
    """An organisation's rules for the recorder."""

    version: int = 1
    organisation: Annotated[str, Field(max_length=128)] = ""
    timezone: str = "Asia/Tokyo"
    numbering: Numbering = Numbering()
    network: NetworkRoles = NetworkRoles()
    recording: Recording = Recording()
    excluded_lines: list[ExcludedLine] = []
    retention: Retention = Retention()
    announcement: Announcement = Announcement()
    listening: Listening = Listening()
    access: Access | None = None
    """Who may do what with recordings; none: the embedded default, one administrator at a root shell."""
    notice: PublicNotice | None = None
    """What `callrec policy notice` publishes besides the rules themselves."""
    on_demand: OnDemand | None = None
    """Lines recorded only when staff ask during the call (品川区 第2条(2))."""
    harassment: Harassment | None = None
    """Calls marked as customer harassment: categories, the mark code, alert, warning (policy/harassment.py)."""

    @field_validator("version")
    @classmethod
    def _known_version(cls, value: int) -> int:
        if value != 1:
            raise ValueError("only policy version 1 exists")
        return value

    @field_validator("timezone")
    @classmethod
    def _zone_exists(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {value!r}") from None
        return value

    @field_validator("excluded_lines", mode="before")
    @classmethod
    def _plain_numbers(cls, value: object) -> object:
        """Let a plain list of numbers stand for entries without labels."""
        if isinstance(value, list):
            return [{"number": str(v)} if isinstance(v, (str, int)) else v for v in value]
        return value

    @field_validator("on_demand")
    @classmethod
    def _not_excluded(cls, value: OnDemand | None, info: ValidationInfo) -> OnDemand | None:
        """An excluded line is never recorded, asked or not: listing it as on-demand too would
        promise staff a recording the exclusion forbids."""
        if value is None:
            return value
        numbering = info.data.get("numbering") or Numbering()
        excluded = {_normalise(line.number, numbering.country_code) for line in info.data.get("excluded_lines", [])}
        both = [line.label or f"#{n + 1}" for n, line in enumerate(value.lines)
                if _normalise(line.number, numbering.country_code) in excluded]
        if both:
            raise ValueError(f"on-demand line {both[0]} is also an excluded line, which is never recorded")
        return value

    @field_validator("harassment")
    @classmethod
    def _harassment_fits(cls, value: Harassment | None, info: ValidationInfo) -> Harassment | None:
        """The mark codes must not overlap the on-demand codes (one keypad, one recorder), the
        alert must name roles the access rules have, and listening in only where the access rules
        let recordings be heard on the device."""
        if value is None:
            return value
        on_demand = info.data.get("on_demand")
        if on_demand is not None:
            clash = value.clashes({on_demand.start_code: "the on-demand start code",
                                   on_demand.stop_code: "the on-demand stop code"})
            if clash:
                raise ValueError(clash)
        access = info.data.get("access")
        unknown = [r for r in value.alert.roles if access is None or r not in access.roles]
        if unknown:
            raise ValueError(f"alert.roles names {', '.join(unknown)}, which access.roles does not have")
        if value.alert.listen and (access is None or access.on_device_listening != "allowed"):
            raise ValueError("alert.listen: listening in is allowed only where access.on_device_listening is "
                             "allowed" + (f" ({access.listening_clause})" if access is not None else ""))
        return value


def _normalise(number: str, country_code: str) -> str:
    """A policy number in the national form (decide.normalise_number, which imports this module)."""
    from .decide import normalise_number

    return normalise_number(number, country_code) or number

"""What the policy says about one call: its direction, its parties, and
whether it may be recorded at all."""
from __future__ import annotations

import enum
import ipaddress
import re
from dataclasses import dataclass
from typing import Iterable

from .schema import OwnNumber, Policy
from .on_demand import OnDemandRule
from .schema import Policy

__all__ = ["Classification", "Direction", "OwnNumbers", "PolicyDecider", "normalise_number"]


class Direction(enum.StrEnum):
    INBOUND = "inbound"
    OUTBOUND = "outbound"
    INTERNAL = "internal"
    UNKNOWN = "unknown"


def normalise_number(number: str | None, country_code: str) -> str | None:
    """A number in the national form the site writes in its policy.

    Carriers send +81 3 1234 5678, 0312345678 or 03-1234-5678 for the same
    line; the exclusion list must match all of them.
    """
    if not number:
        return None
    kept = "".join(ch for ch in number if ch.isdigit() or ch == "+")
    if not kept or "+" in kept[1:]:
        return number
    if kept.startswith("+" + country_code):
        return "0" + kept[1 + len(country_code):]
    return kept


class OwnNumbers:
    """The policy's own numbers, compiled for a lookup per call: exact numbers in a set,
    X-blocks as (prefix, length), ranges as (first, last, length), all in national form."""

    def __init__(self, entries: Iterable[OwnNumber], country_code: str) -> None:
        self._exact: set[str] = set()
        self._blocks: list[tuple[str, int]] = []
        self._ranges: list[tuple[int, int, int]] = []
        for entry in entries:
            wild = len(entry.number) - len(entry.number.rstrip("xX"))
            fixed = normalise_number(entry.number.rstrip("xX"), country_code) or ""
            if entry.to is not None:
                last = normalise_number(entry.to, country_code) or ""
                self._ranges.append((int(fixed), int(last), len(fixed)))
            elif wild:
                self._blocks.append((fixed, len(fixed) + wild))
            else:
                self._exact.add(fixed)

    def contains(self, number: str | None) -> bool:
        if not number or not number.isdigit():
            return False
        if number in self._exact:
            return True
        if any(len(number) == size and number.startswith(prefix) for prefix, size in self._blocks):
            return True
        value = int(number)
        return any(len(number) == size and low <= value <= high for low, high, size in self._ranges)


def _within(address: str | None, nets: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]) -> bool:
    if not address or not nets:
        return False
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in net for net in nets)


@dataclass(frozen=True, slots=True)
class Classification:
    direction: Direction
    local_number: str | None
    remote_number: str | None
    local_is_caller: bool
    excluded: bool
    excluded_label: str
    record: bool
    on_demand: OnDemandRule | None = None
    """Set on a call to record whose line is recorded only when asked for (policy.on_demand)."""


class PolicyDecider:
    """Applies one policy to calls; built once per policy load."""

    def __init__(self, policy: Policy) -> None:
        self.policy = policy
        self._cc = policy.numbering.country_code
        self._extension = re.compile(policy.numbering.extension_pattern)
        self._trunk = tuple(policy.network.trunk)
        self._pbx = tuple(policy.network.pbx)
        self._excluded = {
            normalise_number(line.number, self._cc): line.label or "excluded line"
            for line in policy.excluded_lines
        }
        self._own = OwnNumbers(policy.numbering.own_numbers, self._cc)
        section = policy.on_demand
        self._on_demand = {} if section is None else {
            normalise_number(line.number, self._cc): OnDemandRule.of(section, line, n)
            for n, line in enumerate(section.lines)
        }

    def is_trunk(self, address: str | None) -> bool:
        """An address of the carrier's trunk (the policy's network.trunk)."""
        return _within(address, self._trunk)

    def is_pbx(self, address: str | None) -> bool:
        """An address of the PBX (network.pbx): a B2BUA's legs leave from any of them."""
        return _within(address, self._pbx)

    def normalise(self, number: str | None) -> str | None:
        """The number as the index stores it (national form at home)."""
        return normalise_number(number, self._cc)

    def is_extension(self, number: str | None) -> bool:
        return bool(number) and self._extension.fullmatch(number) is not None

    def is_own(self, number: str | None) -> bool:
        """One of the organisation's own numbers (representative, DID, block), in any form."""
        return self._own.contains(normalise_number(number, self._cc))

    def is_local(self, number: str | None) -> bool:
        """A number on the organisation's side: an extension or one of its own numbers."""
        return self.is_extension(number) or self.is_own(number)

    def exclusion(self, numbers: Iterable[str | None]) -> str | None:
        """The label of the excluded line among numbers, if any."""
        for number in numbers:
            label = self._excluded.get(normalise_number(number, self._cc))
            if label is not None:
                return label
        return None

    def classify(
        self,
        *,
        src_addresses: Iterable[str],
        dst_addresses: Iterable[str],
        caller: str | None,
        callee: str | None,
        other_numbers: Iterable[str | None] = (),
    ) -> Classification:
        """Direction from the trunk's addresses first (what the carrier sends
        is inbound whatever the numbers look like), then from the numbering
        plan: the organisation's own numbers and its extensions are the
        local side, so a call from the representative number is outbound
        even where the trunk's addresses are not in the policy."""
        caller_n = normalise_number(caller, self._cc)
        callee_n = normalise_number(callee, self._cc)
        caller_local, callee_local = self.is_local(caller_n), self.is_local(callee_n)
        if any(self.is_trunk(a) for a in src_addresses):
            direction = Direction.INBOUND
        elif any(self.is_trunk(a) for a in dst_addresses):
            direction = Direction.OUTBOUND
        else:
            if caller_local and callee_local:
                direction = Direction.INTERNAL
            elif caller_local:
                direction = Direction.OUTBOUND
            elif callee_local:
                direction = Direction.INBOUND
            else:
                direction = Direction.UNKNOWN
        local_is_caller = direction in (Direction.OUTBOUND, Direction.INTERNAL) or (
            direction is Direction.UNKNOWN and caller_local
        )
        local, remote = (caller_n, callee_n) if local_is_caller else (callee_n, caller_n)
        label = self.exclusion((caller, callee, *other_numbers))
        rec = self.policy.recording
        record = label is None and (
            direction in (Direction.INBOUND, Direction.OUTBOUND)
            or (direction is Direction.INTERNAL and rec.internal_calls)
            or (direction is Direction.UNKNOWN and rec.unknown_direction)
        )
        return Classification(
            direction=direction,
            local_number=None if label else local,
            remote_number=None if label else remote,
            local_is_caller=local_is_caller,
            excluded=label is not None,
            excluded_label=label or "",
            record=record,
            on_demand=self.on_demand_rule((caller, callee, *other_numbers)) if record else None,
        )

    def on_demand_rule(self, numbers: Iterable[str | None]) -> OnDemandRule | None:
        """The rule of the on-demand line among numbers, if any (matched as exclusions are: any
        number the call carries, in any form)."""
        if not self._on_demand:
            return None
        for number in numbers:
            rule = self._on_demand.get(normalise_number(number, self._cc))
            if rule is not None:
                return rule
        return None

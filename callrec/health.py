"""Is the recorder healthy?  Pure judgement over counters and the time, so
the rules are tested without a network: a recorder that silently stopped
seeing calls is the worst failure an operator can meet."""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, time

from .config import Health


@dataclass(slots=True)
class Observations:
    """What the daemon saw, as of `now` (seconds since the epoch)."""

    now: float
    started: float
    last_sip: float | None
    last_rtp: float | None
    kernel_drops: int
    disk_used_percent: float
    active_calls: int
    one_sided_calls: list[str] = field(default_factory=list)


@dataclass(slots=True)
class Problem:
    code: str
    message: str


def _in_business_hours(moment: datetime, rules: Health) -> bool:
    if moment.weekday() not in rules.business_days:
        return False
    start_s, end_s = rules.business_hours.split("-")
    start = time.fromisoformat(start_s)
    end = time.max if end_s == "24:00" else time.fromisoformat(end_s)
    return start <= moment.time() <= end


def assess(obs: Observations, rules: Health, local: datetime, previous_drops: int) -> list[Problem]:
    """The problems an operator must hear about now.

    Silence only counts during business hours (a city hall is quiet at
    night), and only once the daemon has been up long enough to judge.
    """
    problems = []
    if _in_business_hours(local, rules):
        for code, last, minutes in (("no_sip", obs.last_sip, rules.quiet_sip_minutes),
                                    ("no_rtp", obs.last_rtp, rules.quiet_rtp_minutes)):
            since = last if last is not None else obs.started
            if obs.now - since > minutes * 60:
                problems.append(Problem(code, f"no {code[3:].upper()} seen for {int((obs.now - since) // 60)} "
                                              "minutes during business hours: is the mirror port connected?"))
    if obs.kernel_drops > previous_drops:
        problems.append(Problem("kernel_drops", f"the kernel dropped {obs.kernel_drops - previous_drops} packets "
                                                "since the last check: calls may have gaps"))
    if obs.disk_used_percent >= rules.disk_warn_percent:
        problems.append(Problem("disk", f"the data disk is {obs.disk_used_percent:.0f}% full"))
    for call_id in obs.one_sided_calls:
        problems.append(Problem("one_sided", f"call {call_id} has RTP from one side only"))
    return problems

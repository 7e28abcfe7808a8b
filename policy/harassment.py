"""Calls marked as customer harassment (カスハラ), kept as evidence (品川区 第1条, 熊本市 第1条・様式1).

The guidelines record calls *for* this: to remove improper pressure and demands on staff.  The
`harassment:` section names what a mark may say and what follows from it:

- `categories`: each with its id, its label in the guideline's words, the clause it stands on
  (e.g. 品川区 第5条(2) 脅迫・恐喝・不当な要求), the keypad digit staff press for it, and how long a
  call marked so is kept as evidence (`keep`, a retention period; `{years: N}` is accepted too).
  The evidence hold counts from the day of the mark and outlasts the ordinary rule and the
  capacity ring (storage/marks.py).
- `mark_prefix`: staff on the call press the prefix and then the category's digit on their
  extension (RFC 4733, as the on-demand codes: policy/on_demand.py); the same code for the whole
  organisation, learnt once.
- `alert`: which roles see a mark made during the call at once (the console's live alert), and
  whether they may listen in: only where the access rules let recordings be heard on the device
  at all (`on_device_listening: allowed`).
- `warning`: a number marked `after_marks` times within `within_days` hears the warning
  announcement instead of the ordinary notice on its next calls (the announcer plays it).

Pure: the schema, the rule the recorder matches digits with, and the words `callrec policy
check` prints.
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

from pydantic import Field, field_validator, model_validator

from .retention import Period
from .strict import Strict

if TYPE_CHECKING:
    from .schema import Policy

__all__ = ["Category", "Harassment", "HarassmentAlert", "HarassmentWarning", "MarkRule", "describe_harassment",
           "evidence_keeping", "evidence_last_day"]

Key = Annotated[str, Field(pattern=r"^[a-z][a-z0-9_]{0,31}$")]
Clause = Annotated[str, Field(min_length=1, max_length=200)]
DIGIT_PATTERN = r"^[0-9*#A-D]$"
MAX_CODE_DIGITS = 8
"""The recorder matches a code on the last eight digits pressed (recorder/on_demand.py)."""


class Category(Strict):
    """One kind of harassment a mark may name, with its clause and its evidence period."""

    id: Key
    label: Annotated[str, Field(min_length=1, max_length=64)]
    clause: Clause
    digit: Annotated[str, Field(pattern=DIGIT_PATTERN)]
    """Pressed after `mark_prefix` to mark the call with this category."""
    keep: Period
    """How long a call marked so is kept as evidence, from the day of the mark (北広島市: 原則5年)."""

    @field_validator("keep", mode="before")
    @classmethod
    def _years(cls, value: object) -> object:
        """`{years: N}` is how the guidelines state evidence periods; it is N×12 calendar months."""
        if isinstance(value, dict) and set(value) == {"years"}:
            years = value["years"]
            if not isinstance(years, int) or isinstance(years, bool) or not 1 <= years <= 100:
                raise ValueError("years must be a whole number from 1 to 100")
            return {"months": years * 12}
        return value


class HarassmentAlert(Strict):
    """Who is told at once when staff mark a call during it, and whether they may listen in."""

    roles: list[Key] = []
    """Roles (keys of access.roles) whose people see the live alert on the console."""
    listen: bool = False
    """Whether those people may listen in on the marked call: only where recordings may be heard
    on the device at all (access.on_device_listening: allowed)."""
    clause: Annotated[str, Field(max_length=200)] = ""


class HarassmentWarning(Strict):
    """A number marked `after_marks` times within `within_days` hears `announcement` instead of
    the ordinary notice (withheld numbers never match); the manager can clear the number."""

    after_marks: Annotated[int, Field(ge=1, le=100)]
    within_days: Annotated[int, Field(ge=1, le=3660)]
    announcement: Path
    """The warning's audio, relative to the policy file, as announcement.audio is: the announcer
    reads and checks it, so loading a policy reads no audio."""
    clause: Clause


class Harassment(Strict):
    """The `harassment:` section."""

    clause: Clause
    """Why the site marks calls at all (e.g. 品川区 第1条 職員への不正な圧力や要求等の排除)."""
    mark_prefix: Annotated[str, Field(pattern=r"^[0-9*#A-D]{1,7}$")]
    categories: Annotated[list[Category], Field(min_length=1)]
    alert: HarassmentAlert = HarassmentAlert()
    warning: HarassmentWarning | None = None

    @model_validator(mode="after")
    def _distinct(self) -> Harassment:
        ids = [c.id for c in self.categories]
        if len(set(ids)) != len(ids):
            raise ValueError("two categories share an id")
        digits = [c.digit for c in self.categories]
        if len(set(digits)) != len(digits):
            raise ValueError("two categories share a digit: the mark code would not say which is meant")
        return self

    def category(self, category_id: str) -> Category | None:
        return next((c for c in self.categories if c.id == category_id), None)

    def codes(self) -> dict[str, str]:
        """The full mark codes (prefix + digit) and the category each stands for."""
        return {self.mark_prefix + c.digit: c.id for c in self.categories}

    def clashes(self, other_codes: dict[str, str]) -> str | None:
        """Why these codes cannot live beside another section's (the recorder matches every code
        on the last digits pressed, so a code that ends another would do both), or None."""
        for code, category in self.codes().items():
            for other, name in other_codes.items():
                if code.endswith(other) or other.endswith(code):
                    return f"mark code {code} ({category}) and {name} {other} overlap: neither may end with the other"
        return None


@dataclass(frozen=True, slots=True)
class MarkRule:
    """What the recorder needs: the full codes and the category each marks (fixed at start)."""

    codes: tuple[tuple[str, str], ...]

    @classmethod
    def of(cls, section: Harassment) -> MarkRule:
        return cls(tuple(sorted(section.codes().items())))

    def match(self, keyed: str) -> str | None:
        """The category whose code the digits keyed so far end with, if any."""
        return next((category for code, category in self.codes if keyed.endswith(code)), None)


def evidence_last_day(category: Category, marked_on: date) -> date:
    """The last calendar day a call marked on `marked_on` is kept as evidence."""
    return category.keep.last_day(marked_on)


def evidence_keeping(section: Harassment) -> str:
    """The sentence the public notice adds to how long recordings are kept: a marked call is kept
    longer than the rest, and the public is told how much longer at most."""
    reference = date(2026, 4, 1)
    longest = max(section.categories, key=lambda c: c.keep.last_day(reference))
    same = all(c.keep == longest.keep for c in section.categories)
    period = _period_ja(longest.keep)
    return ("職員への脅迫や不当な要求などがあったとして記録した通話は、証拠として、記録した日から"
            + (f"{period}" if same else f"区分に応じて最長{period}") + "保存し、その後は通常の規則により消去します。")


def _period_ja(period: Period) -> str:
    if period.months is not None:
        return f"{period.months // 12}年" if period.months % 12 == 0 else f"{period.months}か月"
    if period.days is not None:
        return f"{period.days}日"
    if period.until_end_of_fiscal_year_after is not None:
        return f"{period.until_end_of_fiscal_year_after}年度後の年度末まで"
    return f"{period.until_end_of_month_after}か月後の月末まで"


def _period_en(period: Period) -> str:
    if period.months is not None:
        return f"{period.months // 12} years" if period.months % 12 == 0 else f"{period.months} months"
    if period.days is not None:
        return f"{period.days} days"
    if period.until_end_of_fiscal_year_after is not None:
        return f"until the end of the fiscal year {period.until_end_of_fiscal_year_after} after"
    return f"until the end of the month {period.until_end_of_month_after} after"


def describe_harassment(policy: Policy, lang: str = "ja") -> list[str]:
    """The marking rules in plain words for `callrec policy check`."""
    section = policy.harassment
    if section is None:
        return []
    ja = lang == "ja"
    lines = [(f"職員への不当な要求等の通話は、通話中に内線で {section.mark_prefix} に続けて区分の番号を押すか、"
              f"後から管理画面・コマンドで記録できます。 [{section.clause}]") if ja else
             (f"A call may be marked as harassment during it (press {section.mark_prefix} and the category's digit "
              f"on the extension) or afterwards (console, command). [{section.clause}]")]
    for c in section.categories:
        period = _period_ja(c.keep) if ja else _period_en(c.keep)
        code = f"{section.mark_prefix}{c.digit}: {c.label}"
        lines.append(f"{code} — 証拠として記録の日から{period}保存 [{c.clause}]" if ja
                     else f"{code} — kept as evidence for {period} from the mark [{c.clause}]")
    alert = section.alert
    if alert.roles:
        roles = ", ".join(alert.roles)
        listen = ("（通話の傍受可）" if alert.listen else "（傍受不可）") if ja else (
            " (may listen in)" if alert.listen else " (may not listen in)")
        lines.append((f"通話中の記録は直ちに {roles} に通知します{listen}" if ja else
                      f"A mark made during the call alerts {roles} at once{listen}")
                     + (f" [{alert.clause}]" if alert.clause else ""))
    warning = section.warning
    if warning is not None:
        lines.append((f"{warning.within_days}日以内に{warning.after_marks}回記録された番号からの着信には、通常の告知に"
                      f"代えて警告を流します（非通知を除く）。 [{warning.clause}]") if ja else
                     (f"A number marked {warning.after_marks} times within {warning.within_days} days hears the "
                      f"warning instead of the ordinary notice (withheld numbers excepted). [{warning.clause}]"))
    return lines

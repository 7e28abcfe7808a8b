"""Who may do what with the recordings, for which purposes, and how copies are kept.

Every guideline names the people (松本市 第3条 管理責任者 and 第3条2 its deputy, 第4条 取扱者;
山形市 第3条; さいたま 第3条 運用責任者 and 運営受託者, who acts only on an instruction),
the purposes a recording may serve (松本市 第8条1, 山形市 第9条1, 品川区 第7条1, 熊本市 第5条),
how it may be heard (熊本市 第4条3, さいたま 第4条) and how long a copy is kept
(さいたま 第4条6(2), 品川区 第7条4).  The policy says it in these terms, each rule with its
clause, so the section manager can check it against the guideline; the access layer enforces
it.  Accounts themselves live in the store, not here: an administrator edits this file.
"""
from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, model_validator

from .strict import Strict

__all__ = ["Access", "Action", "CopyRules", "Purpose", "RoleRule", "Wanted", "describe_access"]

Key = Annotated[str, Field(pattern=r"^[a-z][a-z0-9_]{0,31}$")]
Clause = Annotated[str, Field(min_length=1, max_length=200)]


class Action(StrEnum):
    """What a person may be allowed to do."""

    SEARCH = "search"              # find calls and read their metadata
    REQUEST = "request"            # file a request for a recording
    APPROVE = "approve"            # approve or refuse requests (never one's own)
    INSTRUCT = "instruct"          # tell a contractor to carry out an approved request (さいたま 様式1)
    FULFIL = "fulfil"              # carry out an approved request: the copy, the listening, the extension
    DISPOSE = "dispose"            # record that a copy was destroyed
    HOLD = "hold"                  # legal hold (松本市 第7条5)
    MANAGE_USERS = "manage_users"  # accounts, roles, absence
    READ_LEDGER = "read_ledger"    # the 通話記録管理簿
    VERIFY = "verify"              # integrity check
    START_RECORDING = "start_recording"  # record a live call on an on-demand line (品川区 第2条(2))
    MARK = "mark"                  # mark a call as harassment after it (the keypad code needs no account)
    MANAGE_MARKS = "manage_marks"  # withdraw a mark, release an evidence hold (the manager)


class Wanted(StrEnum):
    """What a request asks for."""

    LISTEN = "listen"                  # hear it on the device
    COPY = "copy"                      # a numbered copy package (複製データ / 出力データ)
    EXTENSION_ONLY = "extension_only"  # which extension placed an outbound call (山形市 第9条1(4))


class RoleRule(Strict):
    """One role: its title as the guideline says it, what it may do, and where that is written."""

    title: Annotated[str, Field(min_length=1, max_length=64)]
    clause: Clause
    may: list[Action] = []
    acts_for: Key | None = None
    """A deputy: holds the named role's rights, but only while a holder of that role it is
    deputy of is marked absent (松本市 第3条2)."""
    needs_instruction: bool = False
    """A contractor: fulfils only requests the manager has instructed it to (さいたま 第3条6)."""


class Purpose(Strict):
    """A use a recording may be put to, with the clause that allows it."""

    key: Key
    label: Annotated[str, Field(min_length=1, max_length=120)]
    clause: Clause
    wanted: list[Wanted] = [Wanted.COPY]
    """What a request with this purpose may ask for (山形市 第9条1(4) asks the extension only)."""
    crime: bool = False
    """A crime occurred (熊本市 第4条3 allows playback for it without the manager's judgement)."""
    evidence: bool = False
    """An evidence export (証拠提出) for the police or a lawyer about customer harassment: its copy
    package also carries the call's harassment marks and its proof of notice, and the monthly
    report counts it."""


class CopyRules(Strict):
    """How long a copy is kept, where it may be written, and what its recipient must do."""

    keep: Literal["end_of_next_fiscal_year", "until_purpose_met"] | Annotated[int, Field(ge=1, le=3650)] = (
        "until_purpose_met")
    """end_of_next_fiscal_year: さいたま 第4条6(2) (年度 April–March after the one it was made in);
    until_purpose_met: 品川区 第7条4, 山形市 第9条4 (no date: tracked until its disposal is
    recorded); a number: that many days after it is made."""
    clause: Clause
    export_dir: Path | None = None
    """The only folder copies may be written to; None: the data folder's `exports/`."""
    conditions: Annotated[str, Field(max_length=600)] = ""
    """What the recipient must observe (松本市 第8条2), printed in the copy and the answer."""


class Access(Strict):
    """The `access:` section of a policy."""

    forms: Literal["shinagawa", "matsumoto", "yamagata", "kumamoto", "saitama"]
    roles: dict[Key, RoleRule]
    approvers: list[Key]
    approvers_clause: Clause
    purposes: list[Purpose]
    on_device_listening: Literal["allowed", "approved_request", "never"] = "approved_request"
    """allowed: anyone whose role may fulfil; approved_request: only to fulfil an approved
    request (熊本市 第4条3); never: recordings are heard only from exported copies
    (さいたま 第4条1, 5)."""
    listening_clause: Clause
    direct_hand_out: bool = False
    """Whether `callrec calls audio` may still hand a recording out without a request; by
    default a site with access rules hands recordings out only by fulfilling an approved one."""
    copies: CopyRules
    max_failed_logins: Annotated[int, Field(ge=1, le=20)] = 5
    lockout_minutes: Annotated[int, Field(ge=1, le=1440)] = 15

    @model_validator(mode="after")
    def _consistent(self) -> Access:
        for name, role in self.roles.items():
            if role.acts_for is not None and role.acts_for not in self.roles:
                raise ValueError(f"role {name} acts for {role.acts_for}, which is not a role")
            if role.acts_for == name:
                raise ValueError(f"role {name} cannot act for itself")
        unknown = [a for a in self.approvers if a not in self.roles]
        if unknown:
            raise ValueError(f"approvers name roles that do not exist: {', '.join(unknown)}")
        missing = [a for a in self.approvers if Action.APPROVE not in self.roles[a].may]
        if missing:
            raise ValueError(f"approver roles without 'approve' in may: {', '.join(missing)}")
        keys = [p.key for p in self.purposes]
        if len(set(keys)) != len(keys):
            raise ValueError("two purposes share a key")
        if not self.purposes:
            raise ValueError("at least one purpose is needed: recordings are used only for listed purposes")
        return self

    def role(self, key: str) -> RoleRule | None:
        return self.roles.get(key)

    def purpose(self, key: str) -> Purpose | None:
        return next((p for p in self.purposes if p.key == key), None)


_KEEP_JA = {"end_of_next_fiscal_year": "作成した日の属する年度の翌年度末まで",
            "until_purpose_met": "目的を達成するまで"}
_KEEP_EN = {"end_of_next_fiscal_year": "until the end of the fiscal year after the one it was made in",
            "until_purpose_met": "until its purpose is met"}
_LISTEN_JA = {"allowed": "取扱いを許された者は装置で再生できます",
              "approved_request": "装置での再生は、承認された依頼の実行としてのみ行います",
              "never": "装置では再生せず、出力した複製データのみを聴取します"}
_LISTEN_EN = {"allowed": "people allowed to fulfil may play recordings on the device",
              "approved_request": "recordings are played on the device only to fulfil an approved request",
              "never": "recordings are never played on the device; only exported copies are heard"}


def describe_access(access: Access, lang: str = "ja") -> list[str]:
    """Who may do what, for which purposes, and how copies are kept, in plain words with the
    clauses, for `callrec policy check` and the section manager who signs it off."""
    ja = lang == "ja"
    lines = []
    for role in access.roles.values():
        rights = ", ".join(a.value for a in role.may) or ("-" if role.acts_for is None else "")
        if role.acts_for is not None:
            rights += (f" (不在時は{access.roles[role.acts_for].title}の職務を代理)" if ja else
                       f" (acts as {access.roles[role.acts_for].title} while they are absent)")
        if role.needs_instruction:
            rights += " (管理責任者の指示があった場合のみ)" if ja else " (only on the manager's instruction)"
        lines.append(f"{role.title}: {rights} [{role.clause}]")
    for purpose in access.purposes:
        wanted = ", ".join(w.value for w in purpose.wanted)
        lines.append(f"{'利用目的' if ja else 'purpose'} {purpose.key}: {purpose.label} ({wanted}) [{purpose.clause}]")
    keep = access.copies.keep
    if isinstance(keep, int):
        kept = f"作成から{keep}日" if ja else f"{keep} days after it is made"
    else:
        kept = (_KEEP_JA if ja else _KEEP_EN)[keep]
    lines.append((f"複製データは{kept}保存し、廃棄を記録します" if ja else f"A copy is kept {kept}, and its disposal "
                  "is recorded") + f" [{access.copies.clause}]")
    lines.append(f"{(_LISTEN_JA if ja else _LISTEN_EN)[access.on_device_listening]} [{access.listening_clause}]")
    return lines

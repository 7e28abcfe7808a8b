"""Whether a person, in the role they hold, may do something: the policy's rules, decided.

Sans-I/O: the caller says who acts (their account, and whether the person a deputy stands in
for is absent) and what they want; the answer is a `Grant` that says in which role they act
and for whom, or `Forbidden` naming the rule and its clause.  Nothing is read or written here,
so the CLI and the console ask the same question and get the same answer.
"""
from __future__ import annotations

from dataclasses import dataclass

from policy.access import Access, Action, Purpose, Wanted

from .errors import Forbidden

__all__ = ["Actor", "Grant", "check_listening", "check_purpose", "permit"]


@dataclass(frozen=True, slots=True)
class Actor:
    """A signed-in person as the rules see them.

    `deputy_of` is the account a deputy stands in for, and `principal_absent` whether that
    account is marked absent now (only then does the deputy hold its rights)."""

    name: str
    role: str
    deputy_of: str | None = None
    principal_absent: bool = False


@dataclass(frozen=True, slots=True)
class Grant:
    """Permission given: the role whose right was used, and the person acted for, if any.
    Both go into the ledger entry, so the 管理簿 says who acted and as what."""

    actor: str
    role: str
    title: str
    acting_for: str | None = None

    def ledger_details(self) -> dict[str, str]:
        details = {"role": self.role, "role_title": self.title}
        if self.acting_for is not None:
            details["acting_for"] = self.acting_for
        return details


def permit(access: Access, actor: Actor, action: Action) -> Grant:
    """The grant for `action`, or Forbidden.  A role's own rights come first; a deputy's
    borrowed rights only while the person it stands in for is absent (松本市 第3条2)."""
    rule = access.role(actor.role)
    if rule is None:
        raise Forbidden(f"{actor.name}'s role {actor.role!r} is not in the policy's access.roles: "
                        "nobody else may operate the device (山形市 第3条, 松本市 第4条)")
    if action in rule.may:
        return Grant(actor.name, actor.role, rule.title)
    if rule.acts_for is not None:
        principal = access.roles[rule.acts_for]
        if action in principal.may:
            if actor.deputy_of is None:
                raise Forbidden(f"{actor.name} is a {rule.title} of nobody: set whom they stand in for "
                                f"(callrec user add ... --deputy-of NAME) ({rule.clause})")
            if not actor.principal_absent:
                raise Forbidden(f"{actor.name} may {action} only while {actor.deputy_of} is marked absent "
                                f"({rule.clause})")
            return Grant(actor.name, rule.acts_for, principal.title, acting_for=actor.deputy_of)
    raise Forbidden(f"{rule.title} ({actor.name}) may not {action} ({rule.clause})")


def check_purpose(access: Access, key: str, wanted: Wanted) -> Purpose:
    """The purpose a request names, if the policy lists it and it allows what is asked."""
    purpose = access.purpose(key)
    if purpose is None:
        listed = ", ".join(f"{p.key} ({p.label})" for p in access.purposes)
        raise Forbidden(f"purpose {key!r} is not one the policy allows; recordings are used only for: {listed}")
    if wanted not in purpose.wanted:
        raise Forbidden(f"purpose {purpose.label} ({purpose.clause}) allows "
                        f"{', '.join(w.value for w in purpose.wanted)}, not {wanted}")
    return purpose


def check_listening(access: Access, wanted: Wanted) -> None:
    """Listening on the device where the policy forbids it is refused when it is asked for,
    not when it would be carried out (さいたま 第4条1: only exported data is heard)."""
    if wanted is Wanted.LISTEN and access.on_device_listening == "never":
        raise Forbidden("recordings are not listened to on the device; ask for a copy instead "
                        f"({access.listening_clause})")

"""`callrec calls mark / marks / unmark / release-evidence` at 品川区's appliance: staff mark a
call, only the manager withdraws a mark or releases the hold, each with a reason; every act names
the person and their role in the 管理簿, and people without the right are refused (ledgered)."""
from __future__ import annotations

import json
from pathlib import Path

from tests.test_access_paths import Site


def test_marking_withdrawing_and_releasing_through_the_access_rules(tmp_path: Path) -> None:
    site = Site(tmp_path, "shinagawa")
    site.add_user("kanri", "manager")
    site.add_user("sato", "handler", "kanri")
    site.add_user("audit", "auditor", "kanri")
    call = site.inbound["id"]

    assert "may not mark" in site.run("calls", "mark", call, "--category", "threat", user="audit", ok=False)
    assert "unknown category 'rude'" in site.run("calls", "mark", call, "--category", "rude", user="sato", ok=False)
    said = site.run("calls", "mark", call, "--category", "threat", "--note", "「燃やすぞ」と繰り返す", user="sato")
    first = said.split(":")[0]
    assert first.startswith("M") and "kept as evidence until 20" in said
    second = site.run("calls", "mark", call, "--category", "trouble", user="sato").split(":")[0]

    [listed] = [m for m in json.loads(site.run("calls", "marks", call, "--json", user="sato")) if m["id"] == first]
    assert (listed["marked_by"], listed["via"], listed["note"]) == ("sato", "cli", "「燃やすぞ」と繰り返す")
    assert "脅迫・恐喝" in site.run("calls", "marks", user="kanri")

    assert "may not manage_marks" in site.run("calls", "unmark", first, "--reason", "誤り", user="sato", ok=False)
    assert "still kept as evidence by another mark" in site.run("calls", "unmark", first, "--reason", "誤操作",
                                                                user="kanri")
    assert "may not manage_marks" in site.run("calls", "release-evidence", call, "--reason", "x", user="sato",
                                              ok=False)
    assert "1 mark(s) kept" in site.run("calls", "release-evidence", call, "--reason", "示談成立", user="kanri")
    assert "not kept as evidence" in site.run("calls", "release-evidence", call, "--reason", "again", user="kanri",
                                              ok=False)
    states = {m["id"]: m for m in json.loads(site.run("calls", "marks", call, "--json", user="kanri"))}
    assert states[first]["withdrawn_by"] == "kanri" and states[second]["released_reason"] == "示談成立"

    entries = [e for e in site.ledger() if e["event"].startswith(("harassment", "evidence")) or
               (e["event"] == "refused_action" and e["details"].get("action") in ("mark", "manage_marks"))]
    assert [(e["event"], e["actor"], e["details"].get("role")) for e in entries] == [
        ("refused_action", "audit", "auditor"),
        ("harassment_marked", "sato", "handler"), ("harassment_marked", "sato", "handler"),
        ("refused_action", "sato", "handler"),
        ("harassment_mark_withdrawn", "kanri", "manager"),
        ("refused_action", "sato", "handler"),
        ("evidence_hold_released", "kanri", "manager")]
    assert "ok" in site.run("verify", user="audit").lower()

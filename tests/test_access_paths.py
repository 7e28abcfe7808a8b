"""Each organisation's whole path through `callrec`, as its people would walk it.

A call is recorded under the organisation's own example policy; accounts are made; a request
is filed, decided, carried out (a signed copy, listening, or the extension only), its forms
printed, its copy tracked and disposed of; and every ledger entry names a person and the role
they acted in.  The forbidden paths of the issue are tried on the way and must change nothing
but the ledger's record of the refusal.
"""
from __future__ import annotations

import csv
import io
import json
import re
import sqlite3
import subprocess
from pathlib import Path

from tests.builders import PBX, TRUNK, sdp, sip, udp_frame, write_pcap
from tests.call_frames import T0, bye, media, signalling
from tests.interop import REPO, calls, recording_bytes, run_cli

PASSWORDS = {name: f"{name}-passphrase-2026" for name in
             ("kanri", "sato", "audit", "kimura", "staff1", "vendor", "tanaka", "suzuki", "ito", "kacho", "yamada")}


def outbound(call_id: str, extension: str, dialled: str, t: float) -> list[tuple[float, bytes]]:
    """An extension calling out through the trunk (山形市 第9条1(4) asks which extension it was)."""
    kw = dict(call_id=call_id, callee=dialled, caller=extension)
    return [
        (t, udp_frame(PBX, 5060, TRUNK, 5060, sip(f"INVITE sip:{dialled}@{TRUNK} SIP/2.0", cseq="1 INVITE",
                                                  body=sdp(PBX, 40010), **kw))),
        (t + 1, udp_frame(TRUNK, 5060, PBX, 5060, sip("SIP/2.0 200 OK", cseq="1 INVITE", to_tag="t1",
                                                      body=sdp(TRUNK, 20010), **kw))),
        (t + 1.01, udp_frame(PBX, 5060, TRUNK, 5060, sip(f"ACK sip:{dialled}@{TRUNK} SIP/2.0", cseq="1 ACK",
                                                         to_tag="t1", **kw))),
        (t + 4, udp_frame(PBX, 5060, TRUNK, 5060, sip(f"BYE sip:{dialled}@{TRUNK} SIP/2.0", cseq="2 BYE",
                                                      to_tag="t1", **kw))),
    ]


class Site:
    """One organisation's appliance: its data folder, its policy, and its people at the CLI."""

    def __init__(self, tmp_path: Path, organisation: str) -> None:
        self.data = tmp_path / "data"
        self.policy = REPO / "policies" / f"{organisation}.yaml"
        up, _ = media(T0 + 1.05, 3, src=(TRUNK, 20000), dst=(PBX, 40000), ssrc=1)
        frames = signalling() + up + bye(T0 + 5) + outbound("out@x", "2101", "0312345678", T0 + 30)
        capture = write_pcap(tmp_path / "calls.pcap", sorted(frames, key=lambda f: f[0]))
        self.run("replay", capture)
        rows = calls(self.data)
        self.inbound = next(r for r in rows if r["direction"] == "inbound")
        self.outbound = next(r for r in rows if r["direction"] == "outbound")

    def run(self, *args: str | Path, user: str | None = None, new_password: str | None = None,
            password: str | None = None, ok: bool = True) -> str:
        lines = []
        if user is not None:
            lines.append(password if password is not None else PASSWORDS[user])
        if new_password is not None:
            lines.append(new_password)
        extra = ["--user", user] if user is not None else []
        result = run_cli(*args, "--data-dir", self.data, "--policy", self.policy, *extra, check=False,
                         input="".join(f"{line}\n" for line in lines))
        assert (result.returncode == 0) == ok, f"callrec {' '.join(map(str, args))}: {result.stderr}"
        return result.stdout if ok else result.stderr

    def add_user(self, name: str, role: str, by: str | None = None, *extra: str) -> None:
        self.run("user", "add", name, "--role", role, *extra, user=by, new_password=PASSWORDS[name])

    def approved(self, filer: str, decider: str, department: str, purpose: str, wanted: str, call: str) -> str:
        """A request filed by one person and approved by another; its number."""
        number = filed_number(self.run("request", "file", "--department", department, "--purpose", purpose,
                                       "--wanted", wanted, "--call", call, user=filer))
        self.run("request", "approve", number, user=decider)
        return number

    def ledger(self) -> list[dict]:
        return json.loads(run_cli("ledger", "list", "--json", "--data-dir", self.data).stdout)

    def copies(self, by: str) -> list[dict]:
        return json.loads(self.run("copies", "list", "--json", user=by))

    def people_entries(self) -> list[dict]:
        """The ledger entries written by the access layer (not the recorder's own)."""
        ours = {"request_filed", "request_approved", "request_refused", "request_instructed", "request_fulfilled",
                "request_closed", "copy_made", "copy_disposed", "listened", "extension_disclosed", "user_added",
                "user_disabled", "password_changed", "absence_changed", "refused_action"}
        return [e for e in self.ledger() if e["event"] in ours]


def pdf_text(site: Site, which: str, number: str, user: str, out: Path) -> str:
    """A form printed by `callrec request form|answer`, as pdftotext reads it."""
    site.run("request", which, number, "-o", out, user=user)
    return subprocess.run(["pdftotext", "-layout", str(out), "-"], capture_output=True, text=True,
                          check=True).stdout


def filed_number(stdout: str) -> str:
    match = re.match(r"(R\d{4}-\d{4}): filed", stdout)
    assert match, stdout
    return match.group(1)


def assert_every_entry_names_a_person(site: Site, people: set[str]) -> None:
    entries = site.people_entries()
    assert entries
    for entry in entries:
        if entry["event"] == "user_added" and entry["reason"] == "first account":
            continue  # made from the administrator's shell, before any account existed
        assert entry["actor"] in people, entry
        if entry["event"] != "refused_action" or "role" in entry["details"]:
            assert entry["details"]["role"], entry


def test_kumamoto_request_approved_copy_verified_and_disposed(tmp_path: Path) -> None:
    """熊本市 第6条: the 主管課長 files 様式1; the 管理責任者 answers with 様式2 and the copy."""
    site = Site(tmp_path, "kumamoto")
    site.add_user("kanri", "manager")
    site.add_user("sato", "requester", "kanri")
    site.add_user("audit", "auditor", "kanri")
    call = site.inbound["id"]
    number = filed_number(site.run("request", "file", "--department", "市民課", "--purpose", "disclosure",
                                   "--wanted", "copy", "--call", call, "--details", "11月20日10時30分頃 約3分",
                                   user="sato"))
    assert "may not approve" in site.run("request", "approve", number, user="sato", ok=False)
    site.run("request", "approve", number, "--reason", "第5条(1)に該当", user="kanri")
    refused = site.run("request", "fulfil", number, "--holder", "市民課長", user="sato", ok=False)
    assert "may not fulfil" in refused
    assert "may not approve" in site.run("request", "approve", number, user="audit", ok=False)
    out = site.run("request", "fulfil", number, "--holder", "市民課長", user="kanri")
    copy = re.search(r"(C\d{4}-\d{4}): (\S+\.zip)", out)
    assert copy, out
    package = Path(copy.group(2))
    assert package.parent == (site.data / "exports").resolve()
    assert "ok" in run_cli("copies", "verify", package).stdout.lower()
    [held] = site.copies("kanri")
    assert (held["holder"], held["deadline"], held["disposed_at"], held["sha256"]) == (
        "市民課長", None, None, site.inbound["sha256"])
    site.run("copies", "dispose", copy.group(1), "--how", "DVD-R を破砕", "--witness", "audit", user="kanri")
    [gone] = site.copies("kanri")
    assert gone["disposed_how"] == "DVD-R を破砕" and gone["witness"] == "audit"
    site.run("request", "close", number, user="kanri")
    form = pdf_text(site, "form", number, "sato", tmp_path / "shinsei.pdf")
    assert "電話録音データ取出し申請書" in form and "市民課" in form and number in form
    answer = pdf_text(site, "answer", number, "kanri", tmp_path / "kaitou.pdf")
    assert "電話録音データ取出し回答書" in answer and site.inbound["sha256"] in answer
    assert copy.group(1) in answer and "交付する" in answer
    assert "may not approve" in site.run("request", "answer", number, "-o", tmp_path / "x.pdf", user="sato",
                                         ok=False)
    book = tmp_path / "kanribo.csv"
    assert "may not read_ledger" in site.run("ledger", "book", "-o", book, user="sato", ok=False)
    site.run("ledger", "book", "-o", book, user="audit")
    rows = list(csv.reader(io.StringIO(book.read_text(encoding="utf-8-sig"))))
    assert rows[0][:3] == ["番号", "日時", "事項"] and any("kanri" in row for row in rows[1:])
    assert_every_entry_names_a_person(site, {"kanri", "sato", "audit"})
    made = [e for e in site.ledger() if e["event"] == "copy_made"]
    assert made[0]["approved_by"] == "kanri" and made[0]["details"]["sha256"] == site.inbound["sha256"]


def test_kumamoto_forbidden_paths_change_nothing(tmp_path: Path) -> None:
    site = Site(tmp_path, "kumamoto")
    site.add_user("kanri", "manager")
    assert "say who acts" in site.run("user", "add", "sato", "--role", "manager", new_password="x" * 12,
                                        ok=False)
    site.add_user("sato", "requester", "kanri")
    call = site.inbound["id"]
    assert "wrong name or password" in site.run("request", "list", user="sato", password="nope", ok=False)
    assert "not one the policy allows" in site.run("request", "file", "--department", "x", "--purpose", "gossip",
                                                  "--wanted", "copy", "--call", call, user="sato", ok=False)
    number = filed_number(site.run("request", "file", "--department", "市民課", "--purpose", "disclosure",
                                   "--wanted", "copy", "--call", call, user="sato"))
    assert "only an approved request" in site.run("request", "fulfil", number, "--holder", "x", user="kanri",
                                                  ok=False)
    site.run("request", "approve", number, user="kanri")
    outside = tmp_path / "share"
    assert "copies are written only under" in site.run("request", "fulfil", number, "--holder", "x", "--out",
                                                       outside, user="kanri", ok=False)
    assert not outside.exists()
    assert "approved request" in site.run("calls", "audio", call, "-o", tmp_path / "x.wav", "--reason", "r",
                                          ok=False)
    site.run("user", "disable", "sato", "--reason", "異動", user="kanri")
    assert "wrong name or password" in site.run("request", "list", user="sato", ok=False)
    for _ in range(5):
        site.run("request", "list", user="kanri", password="guess", ok=False)
    assert "locked until" in site.run("request", "list", user="kanri", ok=False)
    events = [e["event"] for e in site.ledger()]
    assert events.count("login_failed") >= 6 and "account_locked" in events
    assert not (site.data / "exports").exists()


def test_saitama_contractor_works_only_on_instruction_and_nobody_listens_on_the_device(tmp_path: Path) -> None:
    """さいたま 第3条6, 第4条1,5, 第5条 (作成指示書 / 提出書), 第4条6(2) (翌年度末まで)."""
    site = Site(tmp_path, "saitama")
    site.add_user("kimura", "manager")
    site.add_user("staff1", "staff", "kimura")
    site.add_user("vendor", "contractor", "kimura")
    call = site.inbound["id"]
    assert "allows copy, not listen" in site.run("request", "file", "--department", "広聴課", "--purpose",
                                                 "article1", "--wanted", "listen", "--call", call, user="staff1",
                                                 ok=False)
    number = filed_number(site.run("request", "file", "--department", "広聴課", "--purpose", "article1",
                                   "--wanted", "copy", "--call", call, user="staff1"))
    site.run("request", "approve", number, user="kimura")
    assert "acts only on the manager's instruction" in site.run("request", "fulfil", number, "--holder", "広聴課長",
                                                                user="vendor", ok=False)
    site.run("request", "instruct", number, "--to", "vendor", user="kimura")
    out = site.run("request", "fulfil", number, "--holder", "広聴課長", user="vendor")
    assert "C20" in out
    [held] = site.copies("kimura")
    deadline = held["deadline"]
    made = held["made_at"][:10]
    year = int(made[:4]) if int(made[5:7]) >= 4 else int(made[:4]) - 1
    assert deadline == f"{year + 2}-03-31"
    answer = pdf_text(site, "answer", number, "kimura", tmp_path / "teishutsu.pdf")
    assert "出力データ提出書" in answer and held["number"] in answer
    fingerprint = re.search(r"([0-9A-F]{4}(?:-[0-9A-F]{4}){7})", answer)
    assert fingerprint, answer
    verified = run_cli("copies", "verify", held["package"], "--fingerprint", fingerprint.group(1))
    assert verified.returncode == 0
    assert "作成指示書" in pdf_text(site, "form", number, "kimura", tmp_path / "shiji.pdf")
    assert_every_entry_names_a_person(site, {"kimura", "staff1", "vendor"})


def test_matsumoto_deputy_acts_only_while_the_manager_is_absent(tmp_path: Path) -> None:
    """松本市 第3条2 (事故あるとき), 第4条2 (管理取扱者は指示に従い), 第10条 (管理簿)."""
    site = Site(tmp_path, "matsumoto")
    site.add_user("tanaka", "manager")
    site.add_user("suzuki", "deputy", "tanaka", "--deputy-of", "tanaka")
    site.add_user("ito", "handler", "tanaka")
    number = filed_number(site.run("request", "file", "--department", "人事課", "--purpose", "investigation",
                                   "--wanted", "copy", "--call", site.inbound["id"], user="ito"))
    assert "only while tanaka is marked absent" in site.run("request", "approve", number, user="suzuki", ok=False)
    site.run("user", "absent", user="tanaka")
    site.run("request", "approve", number, "--reason", "警察からの照会", user="suzuki")
    approved = [e for e in site.ledger() if e["event"] == "request_approved"][0]
    assert approved["actor"] == "suzuki" and approved["details"]["acting_for"] == "tanaka"
    assert approved["details"]["role"] == "manager"
    site.run("request", "instruct", number, "--to", "ito", user="suzuki")
    site.run("request", "fulfil", number, "--holder", "松本警察署", user="ito")
    site.run("user", "present", user="tanaka")
    assert "only while tanaka is marked absent" in site.run("request", "close", number, user="suzuki", ok=False)
    answer = pdf_text(site, "answer", number, "tanaka", tmp_path / "kettei.pdf")
    assert "通話記録提供決定通知書" in answer and "無断で複製しない" in answer and site.inbound["sha256"] in answer
    assert "通話記録提供依頼書" in pdf_text(site, "form", number, "ito", tmp_path / "irai.pdf")
    assert_every_entry_names_a_person(site, {"tanaka", "suzuki", "ito"})


def test_yamagata_extension_only_reveals_the_extension_and_nothing_else(tmp_path: Path) -> None:
    """山形市 第9条1(4): which extension placed an outbound call."""
    site = Site(tmp_path, "yamagata")
    site.add_user("kacho", "manager")
    site.add_user("ito", "handler", "kacho")
    call = site.outbound["id"]
    number = site.approved("ito", "kacho", "総務課", "extension", "extension_only", call)
    out = site.run("request", "fulfil", number, "--holder", "総務課長", user="ito")
    assert f"{call}: extension 2101" in out
    assert "0312345678" not in out and "03-1234" not in out
    [disclosed] = [e for e in site.ledger() if e["event"] == "extension_disclosed"]
    assert disclosed["details"]["extension"] == "2101" and disclosed["actor"] == "ito"
    assert site.copies("kacho") == []
    assert_every_entry_names_a_person(site, {"kacho", "ito"})


def test_shinagawa_listening_after_approval_and_a_refusal_with_its_reason(tmp_path: Path) -> None:
    """品川区 第7条1(2): the manager finds it necessary; a refused request says why."""
    site = Site(tmp_path, "shinagawa")
    site.add_user("kacho", "manager")
    site.add_user("yamada", "handler", "kacho")
    call = site.inbound["id"]
    number = site.approved("yamada", "kacho", "戸籍住民課", "manager_need", "listen", call)
    out = site.run("request", "fulfil", number, "--holder", "戸籍住民課長", user="yamada")
    wav = Path(re.search(r"(\S+\.wav): to listen to", out).group(1))  # type: ignore[union-attr]
    assert wav.read_bytes() == recording_bytes(site.data, site.inbound)
    second = filed_number(site.run("request", "file", "--department", "戸籍住民課", "--purpose", "privacy_law",
                                   "--wanted", "copy", "--call", call, user="yamada"))
    assert "needs a reason" in site.run("request", "refuse", second, user="kacho", ok=False)
    site.run("request", "refuse", second, "--reason", "本人確認ができない", user="kacho")
    shown = json.loads(site.run("request", "show", second, "--json", user="kacho"))
    assert (shown["state"], shown["decision_reason"]) == ("refused", "本人確認ができない")
    assert "refused; it cannot become approved" in site.run("request", "approve", second, user="kacho", ok=False)
    refusal = pdf_text(site, "answer", second, "kacho", tmp_path / "kettei.pdf")
    assert "本人確認ができない" in refusal and site.inbound["sha256"] not in refusal
    assert_every_entry_names_a_person(site, {"kacho", "yamada"})


def test_kumamoto_hold_verify_and_ledger_name_the_person_and_their_role(tmp_path: Path) -> None:
    """Commands outside requests say who acts too: the 監査 reads the 管理簿 and verifies but holds nothing."""
    site = Site(tmp_path, "kumamoto")
    site.add_user("kanri", "manager")
    site.add_user("audit", "auditor", "kanri")
    call = site.inbound["id"]
    assert "may not hold" in site.run("hold", "add", call, "--reason", "開示請求", user="audit", ok=False)
    assert "say who acts" in site.run("hold", "add", call, "--reason", "開示請求", ok=False)
    site.run("hold", "add", call, "--reason", "開示請求 第3号", user="kanri")
    assert call in site.run("hold", "list", user="kanri")
    assert "ok" in site.run("verify", user="audit").lower()
    assert "chain intact" in site.run("ledger", "verify", user="audit")
    listed = site.run("ledger", "list", user="audit")
    assert "hold_added" in listed and "kanri" in listed
    held = [e for e in site.ledger() if e["event"] == "hold_added"][0]
    assert (held["actor"], held["details"]["role"]) == ("kanri", "manager")
    verified = [e for e in site.ledger() if e["event"] == "verification"][0]
    assert (verified["actor"], verified["details"]["role"]) == ("audit", "auditor")


def test_saitama_a_copy_past_its_deadline_is_listed_overdue_until_disposed(tmp_path: Path) -> None:
    """さいたま 第4条6(2): the register says which copies are late; disposal clears it."""
    site = Site(tmp_path, "saitama")
    site.add_user("kimura", "manager")
    site.add_user("staff1", "staff", "kimura")
    site.add_user("vendor", "contractor", "kimura")
    number = site.approved("staff1", "kimura", "広聴課", "article1", "copy", site.inbound["id"])
    site.run("request", "instruct", number, "--to", "vendor", user="kimura")
    site.run("request", "fulfil", number, "--holder", "広聴課長", user="vendor")
    [held] = site.copies("kimura")
    assert not held["overdue"]
    with sqlite3.connect(site.data / "index.sqlite3") as db:  # two fiscal years go by
        db.execute("UPDATE copies SET deadline = '2000-03-31' WHERE number = ?", (held["number"],))
    [late] = site.copies("kimura")
    assert late["overdue"] and "OVERDUE" in site.run("copies", "list", user="kimura")
    site.run("copies", "dispose", held["number"], "--how", "DVD-R を破砕", user="kimura")
    [gone] = site.copies("kimura")
    assert not gone["overdue"] and gone["disposed_by"] == "kimura"

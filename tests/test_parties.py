"""Parties and direction on a real trunk (issue 17 item 7) and the staff side of a call
(issue 12 item 5), on hand-made captures: two carriers writing numbers in national and
E.164 form, the city's representative number on outbound calls, withheld callers whose number
the carrier still sends, and the two legs a B2BUA PBX makes of one call."""
from __future__ import annotations

import json
import sqlite3
import zipfile
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from policy.decide import Direction, PolicyDecider
from policy.loader import PolicyError, parse_policy
from recorder.engine import Recorder
from storage.index import CallIndex
from storage.recordings import RecordingStore
from tests.builders import write_pcap
from tests.interop import REPO, calls, capture, recording, run_cli, store_key
from tests.trunk_frames import CARRIER_A, CARRIER_B, DIDS, PBX, REPRESENTATIVE, b2bua_call, e164, trunk_day

OWN = "numbering:\n  own_numbers: ['023-100-0000', '023-100-1XXX']\n"
TWO_CARRIERS = f"network:\n  trunk: [{CARRIER_A}/32, {CARRIER_B}/32]\n"
YAMAGATA = REPO / "policies" / "yamagata.yaml"


# ---- the policy's own numbers ---------------------------------------------------------
def test_own_numbers_in_every_form_and_block() -> None:
    decider = PolicyDecider(parse_policy(
        "numbering:\n  own_numbers:\n    - {number: '023-100-0000', label: 代表}\n    - '023-100-1XXX'\n"
        "    - {number: '+81 23 101 0000', to: '+81 23 101 0499'}\n"))
    for number in ("0231000000", "+81231000000", "023-100-1234", "+81-23-100-1999", "0231010499", "+81231010000"):
        assert decider.is_own(number), number
    for number in ("0231000001", "023100123", "02310012345", "0231010500", "0312345678", None, "anonymous"):
        assert not decider.is_own(number), number


@pytest.mark.parametrize(("entry", "field"), [
    ("{number: '023-100-12XX', to: '023-100-1299'}", "numbering.own_numbers.0"),
    ("{number: '023-100-1200', to: '023-100-129'}", "numbering.own_numbers.0"),
    ("{number: '023-100-1200', to: '+81-23-100-1299'}", "numbering.own_numbers.0"),
    ("{number: 'main office'}", "numbering.own_numbers.0.number"),
])
def test_a_misspelt_own_number_names_line_and_field(entry: str, field: str) -> None:
    with pytest.raises(PolicyError) as info:
        parse_policy(f"numbering:\n  own_numbers:\n    - {entry}\n", "site.yaml")
    assert info.value.field == field and info.value.line == 3


def test_withheld_caller_rule_is_one_of_two_words() -> None:
    with pytest.raises(PolicyError) as info:
        parse_policy("numbering:\n  withheld_caller: hide\n", "site.yaml")
    assert info.value.field == "numbering.withheld_caller"


@pytest.mark.parametrize("path", sorted((REPO / "policies").glob("*.yaml")), ids=lambda p: p.stem)
def test_every_example_policy_lists_own_numbers_and_says_what_happens_to_withheld_numbers(path: Path) -> None:
    text = path.read_text(encoding="utf-8")
    policy = parse_policy(text, str(path))
    assert len(policy.numbering.own_numbers) >= 2 and "withheld_caller:" in text
    decider = PolicyDecider(policy)
    representative = policy.numbering.own_numbers[0].number
    assert decider.classify(src_addresses=("192.0.2.99",), dst_addresses=("198.51.100.99",),
                            caller=representative, callee="0312345678").direction is Direction.OUTBOUND


def test_policy_check_says_the_own_numbers_and_the_withheld_rule() -> None:
    out = run_cli("policy", "check", YAMAGATA).stdout
    assert "市の番号 / own numbers: 3 件 / entries" in out and "kept masked, disclosed only by an approved request" in out
    assert "保存しない / not kept" in run_cli("policy", "check", REPO / "policies" / "tsu.yaml").stdout


def test_outbound_from_the_representative_number_is_not_swapped() -> None:
    """Without trunk addresses the built-in rules knew only extensions: a call from the city's
    own number to an outside one was `unknown`, with the city's number as the remote party."""
    decider = PolicyDecider(parse_policy(OWN))
    out = decider.classify(src_addresses=(PBX,), dst_addresses=(CARRIER_B,), caller=e164(REPRESENTATIVE),
                           callee="+81312345678")
    assert (out.direction, out.local_number, out.remote_number) == (Direction.OUTBOUND, REPRESENTATIVE, "0312345678")
    inbound = decider.classify(src_addresses=(CARRIER_B,), dst_addresses=(PBX,), caller="+819012345678",
                               callee=e164(DIDS[1]))
    assert (inbound.direction, inbound.local_number, inbound.remote_number) == (
        Direction.INBOUND, DIDS[1], "09012345678")


# ---- a realistic trunk, replayed ---------------------------------------------------------
def _replay_cli(tmp_path: Path, frames: list[tuple[float, bytes]], policy: str | Path) -> tuple[Path, list[dict]]:
    data = tmp_path / "data"
    if isinstance(policy, str):
        policy_file = tmp_path / "policy.yaml"
        policy_file.write_text(policy, encoding="utf-8")
    else:
        policy_file = policy
    result = run_cli("replay", write_pcap(tmp_path / "trunk.pcap", frames), "--data-dir", data,
                     "--policy", policy_file)
    (tmp_path / "replay.log").write_text(result.stdout + result.stderr, encoding="utf-8")
    return data, json.loads(run_cli("calls", "list", "--json", "--data-dir", data, "--policy", policy_file).stdout)


@pytest.mark.parametrize("policy", [OWN, TWO_CARRIERS], ids=["own-numbers-only", "trunk-addresses-only"])
def test_a_two_carrier_trunk_gets_every_direction_and_both_parties_right(tmp_path: Path, policy: str) -> None:
    """305 calls over two carriers (national and +81 forms), every third outbound with the
    representative number in From: no call is `unknown`, no outbound call has its parties swapped."""
    frames, expected = trunk_day(305)
    _, rows = _replay_cli(tmp_path, frames, policy)
    assert len(rows) == 305
    by_id = {row["sip_call_id"]: row for row in rows}
    for want in expected:
        row = by_id[want["call_id"]]
        assert row["direction"] == want["direction"], want
        assert (row["local_number"], row["remote_number"]) == (want["local_number"], want["remote_number"]), want
    assert sum(1 for row in rows if row["direction"] == "outbound") == len(range(0, 305, 3))


def _all_bytes(folder: Path) -> bytes:
    return b"".join(p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file())


def _forms(number: str) -> list[bytes]:
    return [number.encode(), e164(number).encode(), e164(number)[1:].encode()]


def test_a_withheld_callers_number_is_not_kept_where_the_policy_discards_it(tmp_path: Path) -> None:
    frames, expected = trunk_day(30)
    data, rows = _replay_cli(tmp_path, frames, OWN + TWO_CARRIERS)
    withheld = [want for want in expected if "withheld" in want]
    assert len(withheld) >= 3
    for want in withheld:
        row = next(r for r in rows if r["sip_call_id"] == want["call_id"])
        assert row["caller_withheld"] and row["remote_number"] is None and row["caller"] == "anonymous"
        assert row["withheld_number"] is None and row["local_number"] == want["local_number"]
        stored = _all_bytes(data) + (tmp_path / "replay.log").read_bytes()
        for form in _forms(str(want["withheld"])):
            assert form not in stored, f"withheld number {form!r} left on disk"


def _as(user: str, *args: str | Path, data: Path, ok: bool = True) -> str:
    result = run_cli(*args, "--data-dir", data, "--policy", YAMAGATA, "--user", user, check=False,
                     input=f"{user}-passphrase-2026\n")
    assert (result.returncode == 0) == ok, result.stderr
    return result.stdout


def test_a_kept_withheld_number_is_masked_everywhere_and_disclosed_only_by_an_approved_request(
        tmp_path: Path) -> None:
    """山形市's policy keeps it (keep_masked): in the index, never in `calls list`, `calls show`
    or `calls find` (a search by that number does not find the call: that would tell the
    number); fulfilling an approved copy request discloses it, ledgered, and the copy carries it."""
    frames, expected = trunk_day(30)
    data = tmp_path / "data"
    run_cli("replay", write_pcap(tmp_path / "trunk.pcap", frames), "--data-dir", data, "--policy", YAMAGATA)
    run_cli("user", "add", "kacho", "--role", "manager", "--data-dir", data, "--policy", YAMAGATA,
            input="kacho-passphrase-2026\n")
    run_cli("user", "add", "ito", "--role", "handler", "--user", "kacho", "--data-dir", data, "--policy", YAMAGATA,
            input="kacho-passphrase-2026\nito-passphrase-2026\n")
    rows = json.loads(_as("ito", "calls", "list", "--json", data=data))
    want = next(w for w in expected if "withheld" in w)
    number = str(want["withheld"])
    row = next(r for r in rows if r["sip_call_id"] == want["call_id"])
    assert row["remote_number"] is None and row["withheld_number"] == "(masked)"
    assert row["local_number"] == want["local_number"] and row["direction"] == "inbound"
    with sqlite3.connect(data / "index.sqlite3") as db:
        assert db.execute("SELECT withheld_number FROM calls WHERE id = ?", (row["id"],)).fetchone()[0] == number
    shown = [_as("ito", "calls", "list", data=data), json.dumps(rows),
             _as("ito", "calls", "show", row["id"], data=data),
             _as("ito", "calls", "show", row["id"], "--json", data=data),
             _as("ito", "calls", "find", "--number", number, data=data),
             _as("ito", "calls", "find", "--number", number, "--json", data=data),
             _as("ito", "calls", "list", "--number", number, "--json", data=data),
             _as("ito", "calls", "find", "--at", row["started_at"], "--window", "1m", "--json", data=data)]
    for text in (*shown[:4], shown[7]):
        assert number not in text and number[-8:] not in text
    assert "非通知 (withheld; number kept, masked)" in shown[0]
    assert row["id"] not in shown[4] and json.loads(shown[5])["candidates"] == [] and json.loads(shown[6]) == []
    assert row["id"] in shown[7]
    filed = _as("ito", "request", "file", "--department", "総務課", "--purpose", "investigation", "--wanted", "copy",
                "--call", row["id"], data=data)
    request = filed.split(":")[0]
    _as("kacho", "request", "approve", request, data=data)
    done = _as("ito", "request", "fulfil", request, "--holder", "山形警察署", data=data)
    assert f"{row['id']}: withheld caller's number {number}" in done
    ledger = json.loads(_as("kacho", "ledger", "list", "--json", data=data))
    [disclosed] = [e for e in ledger if e["event"] == "withheld_number_disclosed"]
    assert disclosed["actor"] == "ito" and disclosed["details"]["call_id"] == row["id"]
    assert number not in json.dumps(ledger, ensure_ascii=False), "the ledger names the call, not the number"
    package = Path(next(line.split(": ")[1].split(" (")[0] for line in done.splitlines() if ".zip" in line))
    with zipfile.ZipFile(package) as zipped:
        manifest = json.loads(next(zipped.read(n) for n in zipped.namelist() if n.endswith(".json")))
    assert manifest["call"]["withheld_number"] == number


# ---- the staff side and the legs of a B2BUA --------------------------------------------
B2BUA_POLICY = (f"numbering:\n  extension_pattern: '^[1-9][0-9]{{2,3}}$'\n  own_numbers: ['023-100-0000', '023-100-1XXX']\n"
                f"network:\n  trunk: [{CARRIER_A}/32]\n  pbx: [{PBX}/31]\n")


def _replay(tmp_path: Path, frames: list[tuple[float, bytes]], policy: str = B2BUA_POLICY
            ) -> tuple[Path, list[dict], Recorder]:
    data = tmp_path / "data"
    data.mkdir()
    index = CallIndex(data / "index.sqlite3")
    recorder = Recorder(PolicyDecider(parse_policy(policy)),
                        RecordingStore(data, index, ZoneInfo("Asia/Tokyo"), store_key(data)))
    for ts, frame in frames:
        recorder.feed_frame(ts, 1, frame)
    recorder.finish()
    rows = [r.as_dict() for r in index.rows()]
    index.close()
    return data, rows, recorder


@pytest.mark.parametrize("direct", [False, True], ids=["anchored", "direct"])
@pytest.mark.parametrize("outbound", [False, True], ids=["inbound", "outbound"])
def test_b2bua_legs_are_one_call_with_its_extension_and_the_audio_once(tmp_path: Path, outbound: bool,
                                                                       direct: bool) -> None:
    frames, want = b2bua_call(outbound=outbound, direct=direct)
    data, rows, recorder = _replay(tmp_path, frames)
    assert len(rows) == 1, [r["sip_call_id"] for r in rows]
    [row] = rows
    assert row["sip_call_id"] == want["root"] and row["leg_call_ids"] == want["legs"]
    assert (row["direction"], row["local_number"], row["remote_number"], row["extension"]) == (
        want["direction"], want["local_number"], want["remote_number"], want["extension"])
    assert recorder.counters()["legs_linked"] == 1 and row["complete"]
    wav = recording(data, row)
    staff_channel, remote_channel = wav.channel(0), wav.channel(1)
    for words, channel, other in ((want["remote"], remote_channel, staff_channel),
                                  (want["staff"], staff_channel, remote_channel)):
        for payload in words:
            assert channel.count(payload) == 1 and other.count(payload) == 0
        first = channel.find(words[0])
        assert channel[first:first + 160 * len(words)] == b"".join(words), "each packet once, in order"
    assert abs(wav.frames / 8000 - row["duration"]) < 0.5


def test_a_ring_group_leg_that_was_cancelled_is_part_of_the_call_and_the_answering_extension_is_kept(
        tmp_path: Path) -> None:
    frames, want = b2bua_call(outbound=False, direct=False, ring_also="302")
    _, rows, recorder = _replay(tmp_path, frames)
    [row] = rows
    assert row["extension"] == "301" and sorted(row["leg_call_ids"]) == sorted(want["legs"])
    assert recorder.stats["unanswered"] == 0, "the cancelled ring-group leg is no unanswered call"


def test_an_excluded_extension_reached_through_the_pbx_excludes_the_whole_call(tmp_path: Path) -> None:
    """The consultation line is an extension only the PBX's leg shows: nothing of the call is
    recorded, not even the trunk leg whose numbers were not excluded."""
    frames, _ = b2bua_call(outbound=False, direct=False, extension="555")
    data, rows, recorder = _replay(tmp_path, frames, B2BUA_POLICY + "excluded_lines: ['555']\n")
    assert rows == [] and recorder.stats["recordings"] == 0
    assert not any(p.is_file() for p in (data / "recordings").rglob("*"))
    assert b"0312345678" not in _all_bytes(data)


def test_a_withheld_callers_legs_are_linked_and_the_number_stays_masked(tmp_path: Path) -> None:
    """The trunk leg says Privacy: id with the number in P-Asserted-Identity; the PBX shows
    its phone an anonymous caller: still one call, and the number kept only as the policy says."""
    frames, want = b2bua_call(outbound=False, direct=False, withheld=True)
    policy = B2BUA_POLICY.replace("numbering:\n", "numbering:\n  withheld_caller: keep_masked\n")
    _, rows, _ = _replay(tmp_path, frames, policy)
    [row] = rows
    assert row["leg_call_ids"] == want["legs"] and row["extension"] == "301"
    assert row["remote_number"] is None and row["caller"] == "anonymous" and row["withheld_number"] == "(masked)"


def test_two_unrelated_calls_at_once_are_not_linked(tmp_path: Path) -> None:
    first, _ = b2bua_call(outbound=False, direct=True)
    other, _ = b2bua_call(outbound=True, direct=True, outside="0455550123", extension="402", t=1_764_000_000.3)
    renamed = [(ts, frame.replace(b"b2b-", b"two-")) for ts, frame in other]
    _, rows, _ = _replay(tmp_path, sorted(first + renamed, key=lambda f: f[0]))
    assert sorted((r["direction"], r["extension"], r["remote_number"]) for r in rows) == [
        ("inbound", "301", "0312345678"), ("outbound", "402", "0455550123")]


def test_the_public_asterisk_b2bua_capture_is_one_call(tmp_path: Path) -> None:
    """Asterisk between two softphones (re-INVITEs move the media phone to phone and back):
    the engine's note left the second leg a row of its own with no audio."""
    data = tmp_path / "data"
    run_cli("replay", capture("b2bua-asterisk.pcapng"), "--data-dir", data)
    [row] = calls(data)
    assert row["leg_call_ids"] == ["37686afc57ce24ac655742b3644a7bb8@172.16.98.101:5060"]
    assert row["audio_frames"] > 8000 * 7 and row["complete"]

"""The `callrec` command."""
from __future__ import annotations

import argparse
import json
import os
import socket
import sys
from pathlib import Path

import structlog

from policy.access import describe_access
from policy.announcement import exemption_summary
from policy.decide import PolicyDecider
from policy.harassment import describe_harassment
from policy.loader import load_policy
from policy.on_demand import describe_on_demand
from policy.retention import describe
from policy.schema import Policy
from recorder.engine import Recorder
from storage.layout import INDEX_FILE, ensure_private_dir
from storage.lock import DataDirLock
from storage.marks import KeypadMarks
from storage.notices import NoticeLog
from storage.recordings import RecordingStore
from storage.recovery import recover_store
from wire.errors import CallrecError

from . import (
    cmd_access,
    cmd_announcer,
    cmd_central,
    cmd_marks,
    cmd_policy,
    cmd_records,
    cmd_report,
    cmd_search,
    cmd_sites,
    cmd_web,
    logs,
)
from .cmd_central import central_line
from .config import Config
from .context import open_index, open_store, settings, tune_gc
from .daemon import run_daemon
from .replay import replay

__all__ = ["build_parser", "main"]

log = structlog.get_logger("callrec.cli")

REPLAY_ACTOR = "callrec replay"


def cmd_replay(args: argparse.Namespace) -> int:
    config, policy = settings(args)
    logs.configure(config.log_level)
    tune_gc()
    missing = [p for p in args.captures if not p.is_file()]
    if missing:
        print(f"callrec: no such capture file: {missing[0]}", file=sys.stderr)
        return 2
    ensure_private_dir(config.data_dir)
    with DataDirLock(config.data_dir):
        return _replay_locked(config, policy, args.captures)


def _replay_locked(config: Config, policy: Policy, captures: list[Path]) -> int:
    """Exit 1 when a capture could not be read or a call lost its audio or
    its row to the disk (counted per hour in the log, `storage.calls_lost`)."""
    with open_store(config, policy, create_key=True) as data:
        recover_store(data, REPLAY_ACTOR)
        store = RecordingStore(config.data_dir, data.index, data.tz, data.master, anchor_dir=data.anchor_dir)
        marks = KeypadMarks(data, policy.harassment, store)
        recorder = Recorder(PolicyDecider(policy), store, marks)
        try:
            failures = replay(recorder, captures)
        finally:
            store.close()
            marks.close()
        stats = {**recorder.decoder.stats, **recorder.tracker.stats, **recorder.stats, **recorder.marks.stats}
        log.info("replay.finished", **{k: v for k, v in stats.items() if v})
    lost = store.faults.totals()
    if lost:
        print("callrec: calls the disk kept from being recorded in full: "
              + ", ".join(f"{count} {what}" for what, count in sorted(lost.items())), file=sys.stderr)
    return 1 if failures or lost else 0


def cmd_calls_list(args: argparse.Namespace) -> int:
    config, policy = settings(args)
    cmd_access.may_search(args)
    index = open_index(config)
    try:
        rows = cmd_search.listed(index, args, policy)
    finally:
        index.close()
    if args.json:
        json.dump([r.as_dict() for r in rows], sys.stdout, ensure_ascii=False, indent=2)
        sys.stdout.write("\n")
        return 0
    cmd_search.print_rows(rows)
    return 0

def cmd_calls_show(args: argparse.Namespace) -> int:
    config, _ = settings(args)
    cmd_access.may_search(args)
    index = open_index(config)
    try:
        row = index.get(args.id)
        parts = [] if row is None else index.parts(row)
    finally:
        index.close()
    if row is None:
        print(f"callrec: no call with id {args.id}", file=sys.stderr)
        return 1
    values = row.as_dict()
    values["parts"] = [{"id": part.id, "leg": part.leg or "conversation"} for part in parts]
    if row.notice_id:
        notices = NoticeLog(config.data_dir / INDEX_FILE)
        try:
            notice = notices.get(row.notice_id)
        finally:
            notices.close()
        values["notice"] = notice.as_dict() if notice is not None else None
    if args.json:
        json.dump(values, sys.stdout, ensure_ascii=False, indent=2)
        sys.stdout.write("\n")
        return 0
    for key, value in values.items():
        if isinstance(value, (list, dict)):
            value = json.dumps(value, ensure_ascii=False)
        print(f"{key:16} {value if value is not None else '-'}")
    return 0

def cmd_run(args: argparse.Namespace) -> int:
    return run_daemon(args.config)


def cmd_status(args: argparse.Namespace) -> int:
    """Ask the running daemon; non-zero when it is unhealthy or unreachable,
    so monitoring can run this command as its check."""
    config, _ = settings(args)
    path = config.status_path
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(5)
            sock.connect(str(path))
            data = b""
            while chunk := sock.recv(65536):
                data += chunk
    except OSError as exc:
        print(f"callrec: no daemon answers on {path}: {exc.strerror or exc}", file=sys.stderr)
        return 3
    status = json.loads(data)
    if args.json:
        json.dump(status, sys.stdout, ensure_ascii=False, indent=2)
        sys.stdout.write("\n")
    else:
        print(f"{'healthy' if status['healthy'] else 'UNHEALTHY'}: {status['active_calls']} active calls, "
              f"{status['packets_per_second']:.0f} packets/s, {status['kernel_drops']} kernel drops")
        for worker in status.get("capture_workers", []):
            print(f"  capture worker {worker['worker']}: {worker['kernel_packets']} packets, "
                  f"{worker['kernel_drops']} kernel drops, {worker['active_calls']} active calls, "
                  f"{worker['restarts']} restarts" + ("" if worker["pid"] else " (down)"))
        for problem in status["problems"]:
            print(f"  {problem['code']}: {problem['message']}")
        for warning in status.get("warnings", []):
            print(f"  warning {warning['code']}: {warning['message']}")
        if status.get("calls_evicted"):
            print(f"  warning calls_evicted: {status['calls_evicted']} unanswered dialogs forgotten to stay within "
                  "recording.max_open_dialogs (an INVITE flood?)")
        if status.get("central"):
            print(central_line(status["central"]))
        if status.get("recording_stopped"):
            print(f"  NEW CALLS ARE NOT RECORDED: {status['recording_stopped']}")
        for hour, lost in (status.get("storage_faults") or {}).get("calls_per_hour", {}).items():
            print(f"  calls the disk cost, hour of {hour}: " + ", ".join(f"{n} {what}" for what, n in lost.items()))
    return 0 if status["healthy"] else 1


def cmd_policy_check(args: argparse.Namespace) -> int:
    """Validate, then say the rule in plain words (Japanese, then English)
    so the section manager can check it says what the guideline says."""
    policy = load_policy(args.file)
    print(f"{args.file}: ok ({policy.organisation or 'unnamed organisation'}, "
          f"{len(policy.excluded_lines)} excluded line(s), time zone {policy.timezone})")
    exempt = exemption_summary(policy)
    print(f"  録音告知の例外 / notice exceptions: {exempt['lines']} line(s), "
          f"{exempt['caller_numbers']} caller number(s), {exempt['caller_prefixes']} prefix(es)")
    kept = policy.numbering.withheld_caller == "keep_masked"
    print(f"  市の番号 / own numbers: {len(policy.numbering.own_numbers)} 件 / entries; "
          f"非通知の発信者番号 / withheld callers' numbers: "
          + ("保存し非表示、承認された依頼でのみ開示 / kept masked, disclosed only by an approved request" if kept
             else "保存しない / not kept"))
    for lang in ("ja", "en"):
        print()
        for line in (describe(policy, lang) + describe_on_demand(policy, lang) + describe_harassment(policy, lang)
                     + (describe_access(policy.access, lang) if policy.access else [])):
            print(f"  {line}")
    return 0

def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="callrec", description="Call recorder for a PBX mirror port.")
    sub = parser.add_subparsers(dest="command", required=True)

    def common(p: argparse.ArgumentParser, policy: bool = False) -> None:
        p.add_argument("--config", type=Path, help="daemon config file (YAML)")
        p.add_argument("--data-dir", type=Path, help="data folder (default ./callrec-data)")
        if policy:
            p.add_argument("--policy", type=Path, help="policy file (YAML); default: the config's")

    p = sub.add_parser("replay", help="record the calls in capture files (pcap/pcapng)")
    p.add_argument("captures", nargs="+", type=Path, metavar="CAPTURE")
    common(p)
    p.add_argument("--policy", type=Path, help="policy file (YAML)")
    p.set_defaults(func=cmd_replay)

    calls = sub.add_parser("calls", help="recorded calls").add_subparsers(dest="calls_command", required=True)
    listing = p = calls.add_parser("list", help="list recorded calls")
    common(p, policy=True)
    p.add_argument("--json", action="store_true")
    p.add_argument("--user", help="who asks, where the policy has access rules")
    p.add_argument("--all", action="store_true", help="also the rows of erased recordings")
    p.set_defaults(func=cmd_calls_list)
    p = calls.add_parser("show", help="show one recorded call")
    p.add_argument("id")
    common(p, policy=True)
    p.add_argument("--json", action="store_true")
    p.add_argument("--user", help="who asks, where the policy has access rules")
    p.set_defaults(func=cmd_calls_show)

    cmd_records.add_parsers(sub, calls, common)
    cmd_marks.add_parsers(calls, common)
    cmd_search.add_parsers(calls, common, listing)
    cmd_access.add_parsers(sub, common)
    cmd_report.add_parsers(sub, common)

    cmd_announcer.add_parser(sub)
    cmd_central.add_parser(sub, common)
    cmd_web.add_parser(sub, common)
    cmd_sites.add_parsers(sub, common)

    p = sub.add_parser("run", help="record live from the configured interfaces (foreground, for systemd)")
    p.add_argument("--config", type=Path, help="daemon config file (YAML); default: built-in, capture on lo")
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("status", help="health of the running daemon (exit 1 when unhealthy)")
    common(p)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_status)

    pol = sub.add_parser("policy", help="policy files").add_subparsers(dest="policy_command", required=True)
    p = pol.add_parser("check", help="validate a policy file")
    p.add_argument("file", type=Path)
    p.set_defaults(func=cmd_policy_check)
    cmd_policy.add_parsers(pol)
    return parser

def main(argv: list[str] | None = None) -> int:
    # Recordings, the index and its journal are the daemon's alone.
    os.umask(0o077)
    args = build_parser().parse_args(argv)
    # Commands speak through their output; the log says only what went wrong
    # (replay and run set their own level from the config).
    logs.configure("warning")
    try:
        return int(args.func(args))
    except CallrecError as exc:
        print(f"callrec: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130

if __name__ == "__main__":
    sys.exit(main())

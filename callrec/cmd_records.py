"""Commands that hand out, hold, check or erase recordings; each such act
goes into the ledger (通話記録管理簿) with who did it and why."""
from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

from policy.access import Action
from storage.archive import ArchiveError, MediumUnavailable, init_medium, mounted
from storage.anchor import check_anchor, export_anchor
from storage.layout import default_key_file
from storage.ledger import Event, LedgerError
from storage.lock import DataDirLock
from storage.records import RecordUnavailable, RequestRefused, hand_out, held_rows, set_hold
from storage.store import actor
from storage.sweep import sweep
from storage.verify import Finding, ledger_findings, verify_store
from storage.wipe import destroy_key_file, wipe_all

from .cmd_access import acting, cmd_ledger_book
from .context import open_store, settings


def _fail(message: str, status: int = 1) -> int:
    print(f"callrec: {message}", file=sys.stderr)
    return status


def _refused(exc: RequestRefused | RecordUnavailable) -> int:
    """A request the rules refuse is a usage error (2); a recording that
    cannot serve it is a failure (1)."""
    return _fail(str(exc), 2 if isinstance(exc, RequestRefused) else 1)


def cmd_calls_audio(args: argparse.Namespace) -> int:
    """The recording exactly as sealed, for an authorised reader."""
    config, policy = settings(args)
    if policy.access is not None and not policy.access.direct_hand_out:
        return _fail("this site hands recordings out only by fulfilling an approved request: "
                     f"callrec request file / approve / fulfil ({policy.access.listening_clause})", 2)
    try:
        with open_store(config, policy) as store:
            copy = hand_out(store, args.id, args.output, actor=actor(), reason=args.reason,
                            reason_required=policy.listening.reason_required)
    except (RequestRefused, RecordUnavailable) as exc:
        return _refused(exc)
    print(f"{args.output}: {args.id}, SHA-256 {copy.sha256} (as sealed)"
          + "".join(f"\n{p}: the RTP packets as on the wire" for p in copy.files[1:]))
    return 0


def cmd_hold(args: argparse.Namespace) -> int:
    """Legal hold (matsumoto 第7条5): kept past every rule until released."""
    config, policy = settings(args)
    adding = args.hold_command == "add"
    try:
        with open_store(config, policy) as store:
            who, role = acting(args, policy, store, Action.HOLD)
            set_hold(store, args.id, adding, actor=who, reason=args.reason, approved_by=args.approved_by, role=role)
    except (RequestRefused, RecordUnavailable) as exc:
        return _refused(exc)
    print(f"{args.id}: {'held' if adding else 'released'}")
    return 0


def cmd_hold_list(args: argparse.Namespace) -> int:
    config, policy = settings(args)
    with open_store(config, policy, read_only=True) as store:
        acting(args, policy, store, Action.HOLD)
        held = held_rows(store)
    for row in held:
        print(f"{row.id:27} since {row.held_since}  {row.hold_reason}")
    return 0


def cmd_ledger_list(args: argparse.Namespace) -> int:
    config, policy = settings(args)
    with open_store(config, policy, read_only=True) as store:
        acting(args, policy, store, Action.READ_LEDGER)
        entries = list(store.ledger.entries())
    if args.json:
        json.dump([e.as_json() for e in entries], sys.stdout, ensure_ascii=False, indent=2)
        sys.stdout.write("\n")
        return 0
    for e in entries:
        details = " ".join(f"{k}={json.dumps(v, ensure_ascii=False)}" for k, v in e.details.items())
        extra = "".join(f" {label}={json.dumps(v, ensure_ascii=False)}"
                        for label, v in (("reason", e.reason), ("approved_by", e.approved_by)) if v)
        print(f"{e.seq:6} {e.at} {e.event:22} {e.actor}{extra} {details}")
    return 0


def cmd_ledger_verify(args: argparse.Namespace) -> int:
    config, policy = settings(args)
    with open_store(config, policy, read_only=True) as store:
        acting(args, policy, store, Action.READ_LEDGER)
        problems = ledger_findings(store)
        count = 0 if problems else sum(1 for _ in store.ledger.entries())
        seals = 0 if problems else sum(1 for _ in store.seals.entries())
    for problem in problems:
        print(problem)
    if problems:
        return 1
    print(f"ledger: {count} entries, chain intact; seal ledger: {seals} entries, chain intact; "
          "neither behind its anchor")
    return 0


def cmd_ledger_anchor(args: argparse.Namespace) -> int:
    """A signed statement of both ledgers' heads, to keep off this machine
    (README: the ledger's anchor); `callrec verify --anchor FILE` checks it."""
    config, policy = settings(args)
    if args.output is not None and args.output.exists():
        return _fail(f"{args.output} exists; callrec never overwrites a file", 2)
    with open_store(config, policy, read_only=True) as store:
        acting(args, policy, store, Action.READ_LEDGER)
        export = export_anchor(store, store.now())
    text = json.dumps(export, ensure_ascii=False, sort_keys=True) + "\n"
    if args.output is None:
        sys.stdout.write(text)
    else:
        with args.output.open("x", encoding="utf-8") as out:
            out.write(text)
        print(f"{args.output}: ledger seq {(export['ledger'] or {}).get('seq', 0)}, seal ledger seq "
              f"{(export['seals'] or {}).get('seq', 0)}, signed by {export['fingerprint']}")
    return 0


def _anchors(paths: list[Path]) -> list[tuple[Path, object]]:
    loaded = []
    for path in paths:
        try:
            loaded.append((path, json.loads(path.read_text(encoding="utf-8"))))
        except (OSError, ValueError) as exc:
            raise LedgerError(f"{path}: not a readable anchor export ({exc})") from None
    return loaded


def cmd_verify(args: argparse.Namespace) -> int:
    """Exit 1 naming every recording or ledger entry that does not match; exit 3 when all that
    could be checked matches but recordings on an archive medium that is not mounted could not
    be checked (an auditor must not read that as "ok").  It reads the store read-only where it
    must (a full disk); the ledger entry that records the verification is then left out, and
    said so."""
    config, policy = settings(args)
    anchors = _anchors(args.anchor)
    with open_store(config, policy, read_only=True) as store:
        who, role = acting(args, policy, store, Action.VERIFY)
        report = verify_store(store)
        for path, export in anchors:
            report.findings.extend(Finding(f"anchor {path}", problem) for problem in check_anchor(store, export))
        result = "mismatch" if not report.ok else "incomplete" if report.unchecked else "ok"
        try:
            store.ledger.append(Event.VERIFICATION, who, store.now(), result=result,
                                recordings=report.recordings, findings=len(report.findings), **role,
                                **({"archived": report.archived, "unchecked": len(report.unchecked)}
                                   if report.archived else {}))
        except LedgerError as exc:
            print(f"ledger: this verification could not be recorded: {exc}")
        except OSError as exc:
            print(f"ledger: this verification could not be recorded: {exc.strerror or exc}", file=sys.stderr)
    for finding in report.findings:
        print(finding)
    for item in report.unchecked:
        print(item)
    for note in report.notes:
        print(f"note: {note}")
    archived = (f" ({report.archived} on the archive medium, {len(report.unchecked)} of them not checked)"
                if report.archived else "")
    print(f"{result.upper() if result != 'ok' else 'ok'}: {report.recordings} recordings checked{archived}, "
          f"{report.erased} erased, {report.in_progress} being recorded, {len(report.findings)} problem(s)")
    return {"ok": 0, "mismatch": 1, "incomplete": 3}[result]


def cmd_wipe(args: argparse.Namespace) -> int:
    config, policy = settings(args)
    if not args.all:
        return _fail("say what to wipe: `callrec wipe --all` erases every recording and key", 2)
    if not args.yes:
        print(f"This erases EVERY recording in {config.data_dir} and the master key, so that nothing can be "
              "restored (decommissioning). The ledger stays. Type WIPE to go on: ", end="", file=sys.stderr)
        if sys.stdin.readline().strip() != "WIPE":
            return _fail("nothing was erased", 1)
    with DataDirLock(config.data_dir):
        with open_store(config, policy) as store:
            result = wipe_all(store, actor(), args.reason)
    key_file = config.key_file or default_key_file(config.data_dir)
    key_gone = destroy_key_file(key_file)
    print(f"wiped: {result.files} files shredded, {result.rows} recordings erased, ledger entry {result.ledger_seq}")
    if config.archive_dir is not None:
        print(f"archive medium: {result.archive_files} files shredded" if result.archive_files is not None else
              f"the archive medium is not mounted at {config.archive_dir}: its files stay, unreadable once the master "
              "key is gone; mount it and shred them too")
    print(f"master key file {key_file} shredded" if key_gone else
          "the master key is a systemd credential: remove it too (rm /etc/credstore.encrypted/callrec-master-key)")
    return 0


def _instant(text: str | None, tz: ZoneInfo) -> float:
    """--now as ISO 8601; without an offset it is the policy's local time."""
    if text is None:
        return time.time()
    moment = datetime.fromisoformat(text)
    return (moment if moment.tzinfo else moment.replace(tzinfo=tz)).timestamp()


def cmd_retention_run(args: argparse.Namespace) -> int:
    """One sweep now, or what it would do (--dry-run), as of --now."""
    config, policy = settings(args)
    tz = ZoneInfo(policy.timezone)
    try:
        now = _instant(args.now, tz)
    except ValueError:
        return _fail(f"--now {args.now!r} is not an ISO 8601 date and time (e.g. 2027-04-01T00:00:00+09:00)", 2)
    with open_store(config, policy) as store:
        result = sweep(store, policy.retention, now, actor(), dry_run=args.dry_run)
    plan, staged = result.plan, result.archive
    if args.json:
        json.dump({"as_of": datetime.fromtimestamp(now, tz).isoformat(), "dry_run": args.dry_run,
                   "erase": [{"id": e.id, "reason": e.reason, "recorded_at": datetime.fromtimestamp(
                       e.recorded_at, tz).isoformat(), "breaches_minimum": e.breaches_minimum} for e in plan.erase],
                   "archive": {"move": staged.moved, "erase": staged.erased},
                   "stop_recording": plan.stop_recording,
                   "warnings": [{"code": w.code, "message": w.message} for w in plan.warnings]},
                  sys.stdout, ensure_ascii=False, indent=2)
        sys.stdout.write("\n")
        return 0
    verb = "would erase" if args.dry_run else "erased"
    print(f"as of {datetime.fromtimestamp(now, tz).isoformat(timespec='seconds')}: {verb} {len(plan.erase)} "
          f"recording(s) ({len(plan.ids('retention'))} past their period, {len(plan.ids('capacity'))} for capacity)")
    for e in plan.erase:
        print(f"  {e.id}  recorded {datetime.fromtimestamp(e.recorded_at, tz).isoformat(timespec='seconds')}  "
              f"{e.reason}{'  (inside its minimum period)' if e.breaches_minimum else ''}")
    if staged.moved or staged.erased:
        print(f"archive: {'would move' if args.dry_run else 'moved'} {len(staged.moved)} recording(s) to the archive "
              f"medium, {'would erase' if args.dry_run else 'erased'} {len(staged.erased)} from it")
        for record_id in staged.moved:
            print(f"  {record_id}  to the archive")
        for record_id in staged.erased:
            print(f"  {record_id}  erased from the archive")
    for w in plan.warnings:
        print(f"warning {w.code}: {w.message}")
    if plan.stop_recording:
        print("new calls are NOT recorded until space is freed")
    return 0


def cmd_archive_init(args: argparse.Namespace) -> int:
    """Prepare the second medium mounted at archive_dir (once, after mounting it)."""
    config, policy = settings(args)
    try:
        with open_store(config, policy) as store:
            medium = init_medium(store, actor())
    except ArchiveError as exc:
        return _fail(str(exc))
    print(f"{medium.root}: archive medium {medium.id}")
    return 0


def cmd_archive_status(args: argparse.Namespace) -> int:
    """Which medium is mounted and what each medium holds; exit 1 when the medium the
    recordings are on (or the archive stage needs) is not mounted."""
    config, policy = settings(args)
    with open_store(config, policy) as store:
        totals = store.index.archived_totals()
        try:
            medium = mounted(store)
            problem = None
        except MediumUnavailable as exc:
            medium, problem = None, str(exc)
    if args.json:
        json.dump({"archive_dir": str(config.archive_dir) if config.archive_dir else None,
                   "mounted": medium.id if medium else None, "problem": problem,
                   "media": [{"medium": m, "recordings": n, "bytes": b} for m, n, b in totals]},
                  sys.stdout, ensure_ascii=False, indent=2)
        sys.stdout.write("\n")
    else:
        print(f"archive medium {medium.id} mounted at {medium.root}" if medium else f"not mounted: {problem}")
        for name, count, size in totals:
            print(f"  medium {name}: {count} recording(s), {size} bytes")
    needed = bool(totals) or policy.retention.archive is not None
    return 1 if needed and medium is None else 0


def add_parsers(sub: argparse._SubParsersAction, calls: argparse._SubParsersAction,  # type: ignore[type-arg]
                common: Callable[..., None]) -> None:
    def command(group: argparse._SubParsersAction, name: str, text: str,  # type: ignore[type-arg]
                func: Callable[[argparse.Namespace], int], *, json_output: bool = False) -> argparse.ArgumentParser:
        p = group.add_parser(name, help=text)
        if json_output:
            p.add_argument("--json", action="store_true")
        common(p, policy=True)
        p.add_argument("--user", help="who acts, where the policy has access rules (the password is asked for)")
        p.set_defaults(func=func)
        return p

    p = command(calls, "audio", "write one recording exactly as sealed (recorded in the ledger)", cmd_calls_audio)
    p.add_argument("id")
    p.add_argument("-o", "--output", type=Path, required=True, help="new WAV file to write")
    p.add_argument("--reason", help="why it is needed (required where the policy restricts listening)")

    hold = sub.add_parser("hold", help="legal hold: keep a recording past its period").add_subparsers(
        dest="hold_command", required=True)
    for name, text in (("add", "keep this recording until released"), ("release", "end a hold")):
        p = command(hold, name, text, cmd_hold)
        p.add_argument("id")
        p.add_argument("--reason", required=True)
        p.add_argument("--approved-by", help="who approved it (管理責任者)")
    command(hold, "list", "recordings under hold", cmd_hold_list)

    ledger = sub.add_parser("ledger", help="通話記録管理簿: what happened to the records").add_subparsers(
        dest="ledger_command", required=True)
    command(ledger, "list", "every entry", cmd_ledger_list, json_output=True)
    command(ledger, "verify", "check the keyed hash chain", cmd_ledger_verify)
    p = command(ledger, "book", "the ledger as the 通話記録管理簿: CSV or PDF (by the file's suffix)", cmd_ledger_book)
    p.add_argument("-o", "--output", type=Path, required=True, help="new .csv or .pdf file")

    retention = sub.add_parser("retention", help="the retention rule").add_subparsers(
        dest="retention_command", required=True)
    p = command(retention, "run", "sweep now: erase what the policy says must go", cmd_retention_run,
                json_output=True)
    p.add_argument("--now", help="act as of this ISO 8601 time (auditors, tests); default: now")
    p.add_argument("--dry-run", action="store_true", help="only say what would be erased")

    p = command(ledger, "anchor", "a signed statement of the ledgers' heads, to keep off this machine",
                cmd_ledger_anchor)
    p.add_argument("-o", "--output", type=Path, help="new file to write (default: standard output)")

    p = command(sub, "verify", "check every recording against its seal, and the ledger (exit 1 on mismatch)",
                cmd_verify)
    p.add_argument("--anchor", type=Path, action="append", default=[], metavar="FILE",
                   help="an export of `callrec ledger anchor` kept off the machine: the ledgers must still hold it")

    archive = sub.add_parser("archive", help="the second medium recordings move to after the device period")
    archive = archive.add_subparsers(dest="archive_command", required=True)
    command(archive, "init", "prepare the medium mounted at archive_dir (once)", cmd_archive_init)
    command(archive, "status", "which medium is mounted and what each holds (exit 1 when one is needed and "
            "not mounted)", cmd_archive_status, json_output=True)

    p = command(sub, "wipe", "decommissioning: erase every recording and the key", cmd_wipe)
    p.add_argument("--all", action="store_true", help="everything (required)")
    p.add_argument("--yes", action="store_true", help="do not ask for confirmation (scripts)")
    p.add_argument("--reason", help="e.g. lease return")

"""`callrec user ...`, `callrec request ...`, `callrec copies list|dispose`: people and the use of records.

Thin: each command signs the person in (`--user NAME`, the password from the terminal, or the
first line of standard input when it is not a terminal, for scripts) and calls the access
service, which applies the policy's rules and writes the ledger.  The console calls the same
service.
"""
from __future__ import annotations

import argparse
import getpass
import json
import sys
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

from access.errors import AccessError
from access.requests import Request
from access.rules import Actor
from access.service import AccessService
from policy.access import Action, Wanted
from policy.schema import Policy
from storage.store import Store
from storage.store import actor as shell_user

from . import cmd_copies
from .context import open_store, settings

__all__ = ["acting", "add_parsers", "cmd_ledger_book", "may_search", "signed_in"]


def _password(prompt: str) -> str:
    if sys.stdin.isatty():
        return getpass.getpass(prompt)
    return sys.stdin.readline().rstrip("\n")


def signed_in(service: AccessService, args: argparse.Namespace) -> Actor:
    """The person named by --user, signed in with the password they type (or pipe)."""
    if not args.user:
        raise AccessError("say who acts: --user NAME (the password is asked for)")
    return service.sign_in(args.user, _password(f"password for {args.user}: "))


def acting(args: argparse.Namespace, policy: Policy, store: Store, action: Action) -> tuple[str, dict[str, str]]:
    """Who acts, for the ledger: where the policy has access rules, the person signed in with
    --user, in a role that may do this (else Forbidden, ledgered); otherwise (the embedded
    default, one administrator at a root shell) the shell's user."""
    if policy.access is None:
        return shell_user(), {}
    with AccessService(store, policy) as service:
        grant = service.authorise(signed_in(service, args), action)
    return grant.actor, grant.ledger_details()


def may_search(args: argparse.Namespace) -> None:
    """Call metadata (numbers, times) is shown only to a person whose role may search, where
    the policy has access rules (山形市 第5条3: the fewest people)."""
    config, policy = settings(args)
    if policy.access is not None:
        with open_store(config, policy) as store:
            acting(args, policy, store, Action.SEARCH)


def _service(args: argparse.Namespace, command: Callable[[AccessService], int]) -> int:
    opener = getattr(args, "open_service", None)
    if opener is not None:  # the same command at the centre (callrec/cmd_centre_access.py)
        with opener(args) as service:
            return command(service)
    config, policy = settings(args)
    with open_store(config, policy) as store, AccessService(store, policy) as service:
        return command(service)


def _print_json(value: object) -> None:
    json.dump(value, sys.stdout, ensure_ascii=False, indent=2, default=str)
    sys.stdout.write("\n")


# ---- users ---------------------------------------------------------------------------
def cmd_user_add(args: argparse.Namespace) -> int:
    def run(service: AccessService) -> int:
        by = signed_in(service, args) if service.users() else None
        password = _password(f"new password for {args.name}: ")
        account = service.add_user(by, args.name, args.role, password, args.deputy_of)
        print(f"{account.name}: {account.role}" + (f", deputy of {account.deputy_of}" if account.deputy_of else ""))
        return 0
    return _service(args, run)


def cmd_user_list(args: argparse.Namespace) -> int:
    def run(service: AccessService) -> int:
        signed_in(service, args)
        for a in service.users():
            flags = [f for f, on in (("disabled", a.disabled), ("absent", a.absent),
                                     (f"locked until {a.locked_until}", bool(a.locked_until))) if on]
            deputy = f" (deputy of {a.deputy_of})" if a.deputy_of else ""
            print(f"{a.name:20} {a.role:12}{deputy} {' '.join(flags)}")
        return 0
    return _service(args, run)


def cmd_user_disable(args: argparse.Namespace) -> int:
    def run(service: AccessService) -> int:
        service.disable_user(signed_in(service, args), args.name, args.reason)
        print(f"{args.name}: disabled")
        return 0
    return _service(args, run)


def cmd_user_passwd(args: argparse.Namespace) -> int:
    def run(service: AccessService) -> int:
        by = signed_in(service, args)
        service.change_password(by, args.name or by.name, _password("new password: "))
        print(f"{args.name or by.name}: password changed")
        return 0
    return _service(args, run)


def cmd_user_absent(args: argparse.Namespace) -> int:
    def run(service: AccessService) -> int:
        by = signed_in(service, args)
        name = args.name or by.name
        service.set_absent(by, name, args.absent_command == "absent")
        print(f"{name}: {'absent (their deputy acts for them)' if args.absent_command == 'absent' else 'present'}")
        return 0
    return _service(args, run)


# ---- requests ------------------------------------------------------------------------
def _show_request(request: Request, as_json: bool) -> None:
    values = asdict(request)
    if as_json:
        _print_json(values)
        return
    for key, value in values.items():
        if value not in (None, "", ()):
            print(f"{key:16} {', '.join(value) if isinstance(value, tuple) else value}")


def cmd_request_file(args: argparse.Namespace) -> int:
    def run(service: AccessService) -> int:
        request = service.file(signed_in(service, args), department=args.department, purpose=args.purpose,
                               wanted=Wanted(args.wanted), call_ids=tuple(args.call), details=args.details or "")
        print(f"{request.number}: filed ({request.purpose}, {request.wanted}, {len(request.call_ids)} call(s))")
        return 0
    return _service(args, run)


def cmd_request_decide(args: argparse.Namespace) -> int:
    def run(service: AccessService) -> int:
        by = signed_in(service, args)
        if args.request_command == "approve":
            request = service.approve(by, args.number, args.reason or "")
        elif args.request_command == "refuse":
            request = service.refuse(by, args.number, args.reason or "")
        else:
            request = service.close_request(by, args.number, args.reason or "")
        print(f"{request.number}: {request.state}")
        return 0
    return _service(args, run)


def cmd_request_instruct(args: argparse.Namespace) -> int:
    def run(service: AccessService) -> int:
        request = service.instruct(signed_in(service, args), args.number, args.to)
        print(f"{request.number}: instructed to {request.instructed_to}")
        return 0
    return _service(args, run)


def cmd_request_fulfil(args: argparse.Namespace) -> int:
    def run(service: AccessService) -> int:
        done = service.fulfil(signed_in(service, args), args.number, holder=args.holder, out_dir=args.out)
        for copy in done.copies:
            print(f"{copy.number}: {copy.package} (SHA-256 {copy.sha256}, dispose by {copy.deadline or '目的達成時'})")
        for path in done.files:
            print(f"{path}: to listen to (as sealed)")
        for call_id, extension in done.extensions:
            print(f"{call_id}: extension {extension or '- (not an outbound call)'}")
        for call_id, withheld in done.numbers:
            print(f"{call_id}: withheld caller's number {withheld} (disclosed for {done.request.number}, ledgered)")
        print(f"{done.request.number}: {done.request.state}")
        return 0
    return _service(args, run)


def cmd_request_list(args: argparse.Namespace) -> int:
    def run(service: AccessService) -> int:
        signed_in(service, args)
        requests = service.requests()
        if args.json:
            _print_json([asdict(r) for r in requests])
            return 0
        for r in requests:
            print(f"{r.number:12} {r.state:10} {r.filed_at:25} {r.requester:16} {r.purpose:16} {r.wanted}")
        return 0
    return _service(args, run)


def cmd_request_show(args: argparse.Namespace) -> int:
    def run(service: AccessService) -> int:
        signed_in(service, args)
        _show_request(service.request(args.number), args.json)
        return 0
    return _service(args, run)


def cmd_request_print(args: argparse.Namespace) -> int:
    """The request's form or its answer as PDF, written to a new file."""
    if args.output.exists():
        raise AccessError(f"{args.output} exists; callrec never overwrites a file")

    def run(service: AccessService) -> int:
        by = signed_in(service, args)
        pdf = (service.request_form if args.request_command == "form" else service.answer_form)(by, args.number)
        with args.output.open("xb") as out:
            out.write(pdf)
        print(f"{args.output}: {args.request_command} of {args.number}")
        return 0
    return _service(args, run)


def cmd_ledger_book(args: argparse.Namespace) -> int:
    """The ledger as the 通話記録管理簿, CSV or PDF by the file's suffix."""
    if args.output.exists():
        raise AccessError(f"{args.output} exists; callrec never overwrites a file")
    if args.output.suffix.lower() not in (".csv", ".pdf"):
        raise AccessError("the book is written as .csv or .pdf")

    def run(service: AccessService) -> int:
        book = service.ledger_book(signed_in(service, args), pdf=args.output.suffix.lower() == ".pdf")
        with args.output.open("xb") as out:
            out.write(book)
        print(f"{args.output}: 通話記録管理簿")
        return 0
    return _service(args, run)


# ---- copies --------------------------------------------------------------------------
def cmd_copies_list(args: argparse.Namespace) -> int:
    def run(service: AccessService) -> int:
        signed_in(service, args)
        copies = service.copies()
        late = {c.number for c in service.overdue_copies()}
        if args.json:
            _print_json([{**asdict(c), "overdue": c.number in late} for c in copies])
            return 0
        for c in copies:
            state = f"disposed {c.disposed_at}" if c.disposed else ("OVERDUE" if c.number in late else "held")
            print(f"{c.number:12} {c.request:12} {c.holder:20} dispose by {c.deadline or '目的達成時':12} {state}")
        return 0
    return _service(args, run)


def cmd_copies_dispose(args: argparse.Namespace) -> int:
    def run(service: AccessService) -> int:
        copy = service.dispose(signed_in(service, args), args.number, how=args.how, witness=args.witness)
        print(f"{copy.number}: disposed {copy.disposed_at} ({copy.disposed_how})")
        return 0
    return _service(args, run)


def add_parsers(sub: argparse._SubParsersAction, common: Callable[..., None]) -> None:  # type: ignore[type-arg]
    def command(group: argparse._SubParsersAction, name: str, text: str,  # type: ignore[type-arg]
                func: Callable[[argparse.Namespace], int], *, json_output: bool = False) -> argparse.ArgumentParser:
        p = group.add_parser(name, help=text)
        common(p, policy=True)
        p.add_argument("--user", help="who acts (the password is asked for)")
        if json_output:
            p.add_argument("--json", action="store_true")
        p.set_defaults(func=func)
        return p

    users = sub.add_parser("user", help="people who may operate the device").add_subparsers(
        dest="user_command", required=True)
    p = command(users, "add", "add an account (the first one: the 管理責任者, from the admin shell)", cmd_user_add)
    p.add_argument("name")
    p.add_argument("--role", required=True, help="a role of the policy's access.roles")
    p.add_argument("--deputy-of", help="for a deputy: the account they stand in for")
    command(users, "list", "every account", cmd_user_list)
    p = command(users, "disable", "disable an account (it stays in the ledger)", cmd_user_disable)
    p.add_argument("name")
    p.add_argument("--reason", required=True)
    p = command(users, "passwd", "change a password (one's own, or anyone's by a manager)", cmd_user_passwd)
    p.add_argument("name", nargs="?")
    for name, text in (("absent", "mark absent: the deputy acts meanwhile"), ("present", "mark back")):
        p = command(users, name, text, cmd_user_absent)
        p.add_argument("name", nargs="?")
        p.set_defaults(absent_command=name)

    requests = sub.add_parser("request", help="requests for recordings (依頼・申請)").add_subparsers(
        dest="request_command", required=True)
    p = command(requests, "file", "file a request", cmd_request_file)
    p.add_argument("--department", required=True, help="requesting department (主管課)")
    p.add_argument("--purpose", required=True, help="a purpose key of the policy")
    p.add_argument("--wanted", required=True, choices=[w.value for w in Wanted])
    p.add_argument("--call", action="append", required=True, help="call id (repeat for several)")
    p.add_argument("--details", help="what the form says (approximate time, numbers...)")
    for name, text in (("approve", "approve a request"), ("refuse", "refuse a request (with --reason)"),
                       ("close", "close a fulfilled request")):
        p = command(requests, name, text, cmd_request_decide)
        p.add_argument("number")
        p.add_argument("--reason")
    p = command(requests, "instruct", "instruct a contractor to fulfil an approved request", cmd_request_instruct)
    p.add_argument("number")
    p.add_argument("--to", required=True, help="the contractor's account")
    p = command(requests, "fulfil", "carry out an approved request: copies, listening or extensions",
                cmd_request_fulfil)
    p.add_argument("number")
    p.add_argument("--holder", required=True, help="who receives the copy (its holder until disposal)")
    p.add_argument("--out", type=Path, help="folder for the copies (inside the policy's export folder)")
    command(requests, "list", "every request", cmd_request_list, json_output=True)
    p = command(requests, "show", "one request", cmd_request_show, json_output=True)
    p.add_argument("number")
    for name, text in (("form", "print the request on the organisation's form (PDF)"),
                       ("answer", "print the answer on the organisation's form (PDF)")):
        p = command(requests, name, text, cmd_request_print)
        p.add_argument("number")
        p.add_argument("-o", "--output", type=Path, required=True, help="new PDF file")

    copies = sub.add_parser("copies", help="the copy register (複製データ・出力データ)").add_subparsers(
        dest="copies_command", required=True)
    command(copies, "list", "every copy, its holder and deadline", cmd_copies_list, json_output=True)
    cmd_copies.add_parser(copies)
    p = command(copies, "dispose", "record that a copy was destroyed", cmd_copies_dispose)
    p.add_argument("number")
    p.add_argument("--how", required=True, help="e.g. 'DVD-R shredded'")
    p.add_argument("--witness", help="who saw it done")

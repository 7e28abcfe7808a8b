"""`callrec centre ...` and `callrec site ...`: the CA, enrolment, revocation, grants, hold
orders, and the fetch of a recording from the site that keeps it (README: several sites)."""
from __future__ import annotations

import argparse
import asyncio
import getpass
import json
import os
import signal
import sys
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cryptography import x509

from access.errors import AccessError
from access.site_desk import REFUSAL_WINDOW, REFUSALS_LEDGERED, RefusalCap, SiteEvent, apply_hold_order
from access.site_grants import Allowed, check_confirmation, issue_grant, issue_hold_order, unverified_fields
from access.site_identity import crl_number, install_site, load_site, update_revocations, write_private
from storage.store import actor

from . import cmd_centre_access, logs
from .config import DSN_ENV
from .context import open_store, settings
from .pki import CentreCA, certificate_fingerprint, enrol_site, init_ca, load_ca, open_bundle, revoke_site
from .site_client import fetch
from .site_server import SiteFetchServer

if TYPE_CHECKING:
    from storage.central_link import Centre

__all__ = ["DEFAULT_CENTRE_DIR", "add_parsers", "order_state", "split_address"]

DEFAULT_CENTRE_DIR = Path(os.environ.get("CALLREC_CENTRE_DIR", "callrec-centre"))


def _now() -> datetime:
    return datetime.now().astimezone()


def _new_file(path: Path, data: bytes) -> None:
    if path.exists():
        raise AccessError(f"{path} exists; callrec never overwrites a file")
    write_private(path, data)


def split_address(text: str) -> tuple[str, int]:
    """HOST:PORT or [IPv6]:PORT."""
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not host:
        raise AccessError(f"{text!r} is not HOST:PORT")
    return host.strip("[]"), int(port)


# --- centre ----------------------------------------------------------------------------------

def cmd_ca_init(args: argparse.Namespace) -> int:
    ca = init_ca(args.centre_dir, _now(), args.organisation)
    print(f"{args.centre_dir}: centre CA {certificate_fingerprint(ca.certificate)}")
    print("keep ca.key and grant.key off every other machine; back the folder up offline")
    return 0


def cmd_enrol(args: argparse.Namespace) -> int:
    ca = load_ca(args.centre_dir)
    bundle, code = enrol_site(ca, args.site, _now())
    _new_file(args.out, bundle)
    print(f"{args.out}: enrolment bundle for site {args.site}")
    print(f"enrolment code (give it to the site's administrator by phone or in person, not with the file): {code}")
    return 0


def cmd_revoke(args: argparse.Namespace) -> int:
    crl = revoke_site(load_ca(args.centre_dir), args.site, _now())
    print(f"site {args.site} revoked; revocation list number {crl_number(crl)} in {args.centre_dir / 'revoked.crl'}")
    print("give it to every site: callrec site revocations FILE (the sync carries it where it runs)")
    return 0


def cmd_grant(args: argparse.Namespace) -> int:
    ca = load_ca(args.centre_dir)
    copy = json.loads(args.copy_manifest.read_text(encoding="utf-8")) if args.copy_manifest else None
    token = issue_grant(ca.grant_key, site=args.site, call_id=args.call_id, request=args.request,
                        allow=Allowed(args.allow), now=_now(), approved_by=args.approved_by,
                        lifetime=timedelta(minutes=args.minutes), copy=copy)
    if args.output is None:
        print(token)
    else:
        _new_file(args.output, token.encode() + b"\n")
    return 0


def cmd_fetch(args: argparse.Namespace) -> int:
    ca = load_ca(args.centre_dir)
    host, port = split_address(args.address)
    fetched = fetch(ca, host, port, args.grant.read_text(encoding="ascii"), args.output)
    print(f"{fetched.path}: {fetched.size} bytes, SHA-256 {fetched.sha256} ({fetched.media_type}); "
          f"the site's ledger entry {fetched.site_ledger_seq}")
    return 0


def cmd_hold_order(args: argparse.Namespace) -> int:
    ca = load_ca(args.centre_dir)
    token = issue_hold_order(ca.grant_key, site=args.site, call_id=args.call_id, hold=not args.release,
                             reason=args.reason, ordered_by=args.ordered_by or actor(),
                             approved_by=args.approved_by, now=_now())
    _new_file(args.output, token.encode() + b"\n")
    print(f"{args.output}: order {unverified_fields(token)['order_id']}; the hold shows as pending until the "
          "site's confirmation is checked (callrec centre hold-confirmation)")
    return 0


def _centre_db(args: argparse.Namespace) -> Centre:
    import psycopg  # only the commands that talk to a centre load it

    from storage.central_link import Centre, connect

    dsn = args.dsn or os.environ.get(DSN_ENV)
    if not dsn:
        raise AccessError(f"no centre database named: give --dsn or set {DSN_ENV}")
    try:
        return Centre(connect(dsn))
    except psycopg.Error as exc:
        raise AccessError(f"cannot reach the centre: {str(exc).strip()}") from None


def cmd_hold(args: argparse.Namespace) -> int:
    """Place a signed hold order in the centre's database: the site's sync picks it up, applies
    it and carries its signed answer back."""
    ca = load_ca(args.centre_dir)
    token = issue_hold_order(ca.grant_key, site=args.site, call_id=args.call_id, hold=not args.release,
                             reason=args.reason, ordered_by=args.ordered_by or actor(),
                             approved_by=args.approved_by, now=_now())
    fields = unverified_fields(token)
    centre = _centre_db(args)
    try:
        centre.place_order(args.site, fields, token)
    finally:
        centre.close()
    print(f"order {fields['order_id']}: {'release' if args.release else 'hold'} {args.call_id} at {args.site}, "
          "pending until the site confirms it (callrec centre holds)")
    return 0


def order_state(ca: CentreCA, order: dict[str, Any]) -> tuple[str, str]:
    """The order's state as the centre may show it: a confirmation is believed only once the
    site's certificate verifies it (a row edited in the database shows as such)."""
    if order["confirmation"] is None:
        return str(order["state"]), ""
    try:
        answer = check_confirmation(order["confirmation"],
                                    ca.site_certificate(order["site"]).public_key(),  # type: ignore[arg-type]
                                    site=order["site"], order_id=order["order_id"])
    except AccessError as exc:
        return "unverified", str(exc)
    if answer.state != order["outcome"] or answer.call_id != order["call_id"]:
        return "unverified", "the row's outcome is not what the site signed"
    return ("refused" if answer.state == "refused" else "confirmed"), answer.detail


def cmd_holds(args: argparse.Namespace) -> int:
    """The centre's hold orders with their state, each confirmation checked against the site's
    certificate; exit 1 when one is refused or does not verify."""
    ca = load_ca(args.centre_dir)
    centre = _centre_db(args)
    try:
        orders = centre.orders(args.site)
    finally:
        centre.close()
    shown = []
    for order in orders:
        state, detail = order_state(ca, order)
        shown.append({"site": order["site"], "order_id": order["order_id"], "call_id": order["call_id"],
                      "hold": order["hold"], "reason": order["reason"], "ordered_by": order["ordered_by"],
                      "placed_at": order["placed_at"].isoformat(), "state": state, "outcome": order["outcome"],
                      "detail": detail, "site_ledger_seq": order["site_ledger_seq"],
                      "answered_at": order["answered_at"].isoformat() if order["answered_at"] else None})
    if args.json:
        print(json.dumps(shown, ensure_ascii=False, indent=2))
    for item in shown if not args.json else ():
        print(f"{item['placed_at']} {item['site']} {item['call_id']} {'hold' if item['hold'] else 'release'}: "
              f"{item['state']}" + (f" ({item['detail']})" if item["detail"] else "")
              + (f", the site's ledger entry {item['site_ledger_seq']}" if item["site_ledger_seq"] else ""))
    return 1 if any(item["state"] in ("refused", "unverified") for item in shown) else 0


def cmd_hold_confirmation(args: argparse.Namespace) -> int:
    ca = load_ca(args.centre_dir)
    order = unverified_fields(args.order.read_text(encoding="ascii"))
    site = str(order.get("site"))
    confirmation = check_confirmation(args.confirmation.read_text(encoding="ascii"),
                                      ca.site_certificate(site).public_key(),  # type: ignore[arg-type]
                                      site=site, order_id=str(order.get("order_id")))
    print(f"site {site}, call {confirmation.call_id}: {confirmation.state}"
          + (f" ({confirmation.detail})" if confirmation.detail else "")
          + f", the site's ledger entry {confirmation.ledger_seq}, at {confirmation.at.isoformat()}")
    return 0 if confirmation.state != "refused" else 1


# --- site ------------------------------------------------------------------------------------

def _code(args: argparse.Namespace) -> str:
    if args.code_file is not None:
        return args.code_file.read_text(encoding="ascii").strip()
    if sys.stdin.isatty():
        return getpass.getpass("enrolment code: ")
    return sys.stdin.readline().strip()


def cmd_site_enrol(args: argparse.Namespace) -> int:
    config, policy = settings(args)
    parts = open_bundle(args.bundle.read_bytes(), _code(args))
    with open_store(config, policy) as store:
        identity = install_site(config.data_dir, site=parts.site, key=parts.key, certificate=parts.certificate,
                                ca=parts.ca, grant_key=parts.grant_key, crl=parts.crl,
                                enrolled_at=store.now().isoformat(timespec="seconds"))
        store.ledger.append(SiteEvent.ENROLLED, actor(), store.now(), site=identity.name,
                            serial=f"{identity.certificate.serial_number:x}",
                            ca=certificate_fingerprint(identity.ca),
                            not_after=identity.certificate.not_valid_after_utc.isoformat())
    print(f"{config.data_dir}: enrolled as site {identity.name}, certificate {identity.certificate.serial_number:x} "
          f"valid until {identity.certificate.not_valid_after_utc:%Y-%m-%d}; centre CA "
          f"{certificate_fingerprint(identity.ca)} (compare it with the one `callrec centre ca init` printed)")
    return 0


def cmd_site_show(args: argparse.Namespace) -> int:
    config, _ = settings(args)
    identity = load_site(config.data_dir)
    print(f"site {identity.name}\ncertificate {identity.certificate.serial_number:x} valid until "
          f"{identity.certificate.not_valid_after_utc:%Y-%m-%d}"
          f"{'  REVOKED' if identity.revoked(identity.certificate.serial_number) else ''}\n"
          f"centre CA {certificate_fingerprint(identity.ca)}\nrevocation list number {crl_number(identity.crl)}, "
          f"{len(list(identity.crl))} revoked")
    return 0


def cmd_site_revocations(args: argparse.Namespace) -> int:
    config, policy = settings(args)
    crl = x509.load_pem_x509_crl(args.crl.read_bytes())
    with open_store(config, policy) as store:
        old, new = update_revocations(config.data_dir, crl)
        store.ledger.append(SiteEvent.REVOCATIONS_UPDATED, actor(), store.now(), number=new, previous=old,
                            revoked=[f"{r.serial_number:x}" for r in crl])
    print(f"revocation list number {new} (was {old}): {len(list(crl))} revoked; the fetch server uses it from the "
          "next connection")
    return 0


def cmd_site_hold_order(args: argparse.Namespace) -> int:
    config, policy = settings(args)
    with open_store(config, policy) as store:
        confirmation = apply_hold_order(store, args.order.read_text(encoding="ascii"))
    _new_file(args.output, confirmation.encode() + b"\n")
    fields = unverified_fields(confirmation)
    print(f"{args.output}: call {fields['call_id']} {fields['state']}"
          + (f" ({fields['detail']})" if fields["detail"] else "") + "; send it back to the centre")
    return 0


def cmd_site_serve(args: argparse.Namespace) -> int:
    """The fetch server in the foreground, for a site whose daemon does not run it (tests, a
    separate unit); the daemon runs it itself when the config has `site_fetch:`."""
    config, policy = settings(args)
    logs.configure(config.log_level)
    host, port = split_address(args.listen)

    async def serve() -> None:
        with open_store(config, policy) as store:
            cap = RefusalCap(args.refusals_ledgered, timedelta(minutes=args.refusal_window_minutes))
            server = SiteFetchServer(store, host, port, cap)
            await server.start()
            print(f"listening on {host}:{server.port}", flush=True)
            stop = asyncio.Event()
            for sig in (signal.SIGTERM, signal.SIGINT):
                asyncio.get_running_loop().add_signal_handler(sig, stop.set)
            try:
                await stop.wait()
            finally:
                await server.close()

    try:
        asyncio.run(serve())
    except KeyboardInterrupt:
        return 0
    return 0


def _order_arguments(p: argparse.ArgumentParser) -> None:
    """What a hold (or release) order names, signed to a file or placed in the centre's database."""
    p.add_argument("site")
    p.add_argument("call_id")
    p.add_argument("--reason", required=True)
    p.add_argument("--release", action="store_true", help="end the hold instead")
    p.add_argument("--approved-by")
    p.add_argument("--ordered-by", help="who orders it (default: the login)")


def add_parsers(sub: argparse._SubParsersAction, common: Callable[..., None]) -> None:  # type: ignore[type-arg]
    centre = sub.add_parser("centre", help="the centre of several sites: CA, enrolment, grants, fetches")
    centre_sub = centre.add_subparsers(dest="centre_command", required=True)

    def centre_command(group: argparse._SubParsersAction, name: str, text: str,  # type: ignore[type-arg]
                       func: Callable[[argparse.Namespace], int]) -> argparse.ArgumentParser:
        p = group.add_parser(name, help=text)
        p.add_argument("--centre-dir", type=Path, default=DEFAULT_CENTRE_DIR,
                       help="the centre's folder (default $CALLREC_CENTRE_DIR or ./callrec-centre)")
        p.set_defaults(func=func)
        return p

    ca = centre_sub.add_parser("ca", help="the centre's CA").add_subparsers(dest="ca_command", required=True)
    p = centre_command(ca, "init", "make the CA, the grant key and the centre's client certificate (once)",
                       cmd_ca_init)
    p.add_argument("--organisation", help="the organisation's name in the certificates, e.g. 松本市")
    p = centre_command(centre_sub, "enrol", "certificate and bundle for a new site (prints its enrolment code)",
                       cmd_enrol)
    p.add_argument("site", help="the site's name: lower-case letters, digits, hyphens (e.g. higashi)")
    p.add_argument("--out", type=Path, required=True, help="new bundle file to give the site")
    p = centre_command(centre_sub, "revoke", "revoke a site's certificate (a new revocation list)", cmd_revoke)
    p.add_argument("site")
    p = centre_command(centre_sub, "grant", "sign a grant to fetch one call for one approved request", cmd_grant)
    p.add_argument("site")
    p.add_argument("call_id")
    p.add_argument("--request", required=True, help="the approved request's number")
    p.add_argument("--allow", choices=[a.value for a in Allowed], required=True)
    p.add_argument("--approved-by", help="who approved the request (the site's ledger names them)")
    p.add_argument("--minutes", type=float, default=10.0, help="how long the grant lives (default 10, at most 1440)")
    p.add_argument("--copy-manifest", type=Path, help="copy grants: JSON of the copy's manifest fields")
    p.add_argument("-o", "--output", type=Path, help="new file (default: standard output)")
    p = centre_command(centre_sub, "fetch", "fetch what a grant allows from the site that keeps it", cmd_fetch)
    p.add_argument("--grant", type=Path, required=True, help="file holding the grant")
    p.add_argument("--address", required=True, help="the site's fetch server, HOST:PORT")
    p.add_argument("-o", "--output", type=Path, required=True, help="new file to write")
    p = centre_command(centre_sub, "hold-order", "sign an order to hold (or release) a call at its site",
                       cmd_hold_order)
    _order_arguments(p)
    p.add_argument("-o", "--output", type=Path, required=True)
    p = centre_command(centre_sub, "hold", "place a hold (or release) order for a call at its site in the centre's "
                       "database; the site's sync applies it and confirms", cmd_hold)
    _order_arguments(p)
    p.add_argument("--dsn", help=f"the centre's PostgreSQL (default: ${DSN_ENV})")
    p = centre_command(centre_sub, "holds", "the hold orders and their state, each confirmation checked (exit 1: "
                       "one refused or not verified)", cmd_holds)
    p.add_argument("--site")
    p.add_argument("--json", action="store_true")
    p.add_argument("--dsn", help=f"the centre's PostgreSQL (default: ${DSN_ENV})")
    p = centre_command(centre_sub, "hold-confirmation", "check a site's confirmation of a hold order (exit 1: "
                       "refused by the site)", cmd_hold_confirmation)
    p.add_argument("confirmation", type=Path)
    p.add_argument("--order", type=Path, required=True, help="the order it answers")
    cmd_centre_access.add_parsers(centre_sub, DEFAULT_CENTRE_DIR)

    site = sub.add_parser("site", help="this appliance as a site of a centre").add_subparsers(
        dest="site_command", required=True)
    p = site.add_parser("enrol", help="import the centre's enrolment bundle (asks for the enrolment code)")
    common(p, policy=True)
    p.add_argument("bundle", type=Path)
    p.add_argument("--code-file", type=Path, help="read the enrolment code from a file (scripts)")
    p.set_defaults(func=cmd_site_enrol)
    p = site.add_parser("show", help="this site's name, certificate and revocation list")
    common(p)
    p.set_defaults(func=cmd_site_show)
    p = site.add_parser("revocations", help="take the centre's newer revocation list")
    common(p, policy=True)
    p.add_argument("crl", type=Path)
    p.set_defaults(func=cmd_site_revocations)
    p = site.add_parser("hold-order", help="apply a hold order of the centre; writes the signed confirmation")
    common(p, policy=True)
    p.add_argument("order", type=Path)
    p.add_argument("-o", "--output", type=Path, required=True, help="new confirmation file")
    p.set_defaults(func=cmd_site_hold_order)
    p = site.add_parser("serve", help="the fetch server in the foreground (the daemon runs it with site_fetch:)")
    common(p, policy=True)
    p.add_argument("--listen", default="0.0.0.0:7443", help="HOST:PORT (default 0.0.0.0:7443)")
    p.add_argument("--refusals-ledgered", type=int, default=REFUSALS_LEDGERED,
                   help=f"refused connections ledgered one by one per address and window (default {REFUSALS_LEDGERED}; "
                   "the rest are summed up in one entry, every one is in the journal)")
    p.add_argument("--refusal-window-minutes", type=float, default=REFUSAL_WINDOW.total_seconds() / 60,
                   help=f"that window (default {REFUSAL_WINDOW.total_seconds() / 60:.0f})")
    p.set_defaults(func=cmd_site_serve)

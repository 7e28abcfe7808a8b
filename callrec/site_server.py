"""The site's fetch server: the one way a recording leaves a site for the centre.

A thin asyncio adapter around access/site_desk.py.  It takes the TCP connection itself and runs
the TLS handshake in its own code (rather than letting the server do it unseen), so that every
client turned away — no certificate, a certificate from another CA, a revoked one — is written
into the site's ledger with its address and OpenSSL's reason.  Then it checks the certificate is
the centre's, reads one small HTTP/1.1 request and answers it, then closes:

    GET /v1/listen/CALL_ID?request=NUMBER HTTP/1.1      (or /v1/copy/...)
    Callrec-Grant: TOKEN

    200: Content-Type audio/wav or application/zip, Callrec-Sha256 (the seal, or the package's),
         the body to the end of the connection (TLS close_notify marks a complete answer)
    400 / 403 / 404: text/plain "REFUSAL: message"

Plain HTTP so that any client (curl, `openssl s_client`) can be used to check it by hand.
"""
from __future__ import annotations

import asyncio
import contextlib
import ssl
from urllib.parse import parse_qs, unquote, urlsplit

import structlog

from access.site_desk import Peer, RefusalCap, Served, SiteDesk
from access.site_grants import Allowed, GrantRefused, Refusal
from access.site_identity import load_site
from storage.store import Store
from wire.errors import CallrecError, RemoteInputError

from .pki import peer_is_centre, server_context

__all__ = ["HANDSHAKE_SECONDS", "REQUEST_SECONDS", "SiteFetchServer"]

log = structlog.get_logger("callrec.site_server")

HANDSHAKE_SECONDS = 20.0
REQUEST_SECONDS = 30.0
_MAX_HEAD = 16 * 1024
_STATUS = {400: "Bad Request", 403: "Forbidden", 404: "Not Found", 200: "OK"}
_NOT_FOUND = (Refusal.UNAVAILABLE,)


class _BadRequest(RemoteInputError):
    """Not a request this server answers (answered 400, never leaves this module)."""


def _subject(cert: dict) -> str | None:  # type: ignore[type-arg]
    for rdn in cert.get("subject", ()):
        for name, value in rdn:
            if name == "commonName":
                return str(value)
    return None


class SiteFetchServer:
    """Serves grants over mutual TLS on one address; its own connection to the index file."""

    def __init__(self, store: Store, host: str, port: int, cap: RefusalCap | None = None) -> None:
        self.desk = SiteDesk.of(store, cap)
        self.host = host
        self.port = port
        self._server: asyncio.Server | None = None
        self._summaries: asyncio.Task[None] | None = None
        self._context: ssl.SSLContext | None = None
        self._crl_stamp: tuple[int, int] | None = None

    async def start(self) -> None:
        self.desk.clear_outgoing()
        self._server = await asyncio.start_server(self._handle, self.host, self.port)
        self.port = self._server.sockets[0].getsockname()[1]
        self._summaries = asyncio.create_task(self._summarise())
        log.info("site_fetch.listening", site=self.desk.identity.name, host=self.host, port=self.port)

    async def close(self) -> None:
        if self._summaries is not None:
            self._summaries.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._summaries
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
        self.desk.summarise_refusals()
        self.desk.close()

    async def _summarise(self) -> None:
        """The summaries of refusal windows that ended while no refusal came to write them."""
        pause = max(1.0, min(60.0, self.desk.cap.window.total_seconds() / 4))
        while True:
            await asyncio.sleep(pause)
            try:
                self.desk.summarise_refusals(self.desk.store.now())
            except CallrecError as exc:
                log.error("site_fetch.summary_failed", reason=str(exc))

    def _tls(self) -> ssl.SSLContext:
        """The context, made again when the revocation list was replaced (`callrec site revocations`)."""
        stat = self.desk.identity.files.crl.stat()
        stamp = (stat.st_mtime_ns, stat.st_ino)
        if self._context is None or stamp != self._crl_stamp:
            self.desk.identity = load_site(self.desk.store.data_dir)
            self._context, self._crl_stamp = server_context(self.desk.identity), stamp
        return self._context

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        address = writer.get_extra_info("peername")
        peer = Peer(f"[{address[0]}]:{address[1]}" if ":" in address[0] else f"{address[0]}:{address[1]}")
        try:
            await self._serve(reader, writer, peer)
        except (OSError, asyncio.IncompleteReadError, TimeoutError) as exc:
            log.warning("site_fetch.connection_lost", peer=peer.address, reason=str(exc) or type(exc).__name__)
        except CallrecError as exc:
            log.error("site_fetch.failed", peer=peer.address, reason=str(exc))
        finally:
            writer.close()
            with contextlib.suppress(OSError, ssl.SSLError, TimeoutError):
                await asyncio.wait_for(writer.wait_closed(), 5)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, peer: Peer) -> None:
        try:
            await writer.start_tls(self._tls(), ssl_handshake_timeout=HANDSHAKE_SECONDS)
        except ssl.SSLError as exc:
            reason = getattr(exc, "verify_message", None) or exc.reason or str(exc)
            refusal = Refusal.REVOKED if "revoked" in str(reason).lower() else Refusal.TLS
            self.desk.refuse_connection(peer, refusal, f"TLS handshake refused: {reason}")
            return
        cert = writer.get_extra_info("peercert") or {}
        serial = str(cert.get("serialNumber", "")).lower().lstrip("0") or None
        peer = Peer(peer.address, _subject(cert), serial)
        if not peer_is_centre(cert):
            self.desk.refuse_connection(peer, Refusal.NOT_CENTRE, "the client certificate is not the centre's")
            await _answer(writer, 403, f"{Refusal.NOT_CENTRE}: only the centre fetches recordings")
            return
        if serial is not None and self.desk.identity.revoked(int(serial, 16)):
            self.desk.refuse_connection(peer, Refusal.REVOKED, "the client certificate is revoked")
            await _answer(writer, 403, f"{Refusal.REVOKED}: the certificate is revoked")
            return
        try:
            allow, call_id, request, token = await asyncio.wait_for(_read_request(reader), REQUEST_SECONDS)
        except _BadRequest as exc:
            self.desk.refuse_connection(peer, Refusal.MALFORMED, f"not a fetch request: {exc}")
            await _answer(writer, 400, f"{Refusal.MALFORMED}: {exc}")
            return
        try:
            served = self.desk.open(token, call_id=call_id, request=request, allow=allow, peer=peer)
        except GrantRefused as exc:
            log.warning("site_fetch.refused", peer=peer.address, refusal=str(exc.reason), call_id=call_id)
            await _answer(writer, 404 if exc.reason in _NOT_FOUND else 403, f"{exc.reason}: {exc}")
            return
        try:
            await self._stream(writer, served, peer)
        finally:
            served.close()

    async def _stream(self, writer: asyncio.StreamWriter, served: Served, peer: Peer) -> None:
        head = ["HTTP/1.1 200 OK", f"Content-Type: {served.media_type}", f"Callrec-Sha256: {served.sha256}",
                f"Callrec-Ledger-Seq: {served.ledger_seq}", "Connection: close"]
        if served.size is not None:
            head.append(f"Content-Length: {served.size}")
        sent = 0
        try:
            writer.write(("\r\n".join(head) + "\r\n\r\n").encode("ascii"))
            while (chunk := await asyncio.to_thread(next, served.chunks, None)) is not None:
                writer.write(chunk)
                sent += len(chunk)
                await writer.drain()
            if writer.can_write_eof():
                writer.write_eof()
        except BaseException as exc:
            self.desk.cut_short(served, peer, sent, str(exc) or type(exc).__name__)
            raise
        log.info("site_fetch.served", peer=peer.address, call_id=served.grant.call_id,
                 request=served.grant.request, bytes=sent)


async def _read_request(reader: asyncio.StreamReader) -> tuple[Allowed, str, str, str]:
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except asyncio.LimitOverrunError:
        raise _BadRequest("request head too long") from None
    except asyncio.IncompleteReadError:
        raise _BadRequest("the request ended before its head did") from None
    if len(head) > _MAX_HEAD:
        raise _BadRequest("request head too long")
    try:
        lines = head.decode("ascii").split("\r\n")
    except UnicodeDecodeError:
        raise _BadRequest("request head is not ASCII") from None
    method, _, rest = lines[0].partition(" ")
    target, _, version = rest.partition(" ")
    if method != "GET" or not version.startswith("HTTP/1."):
        raise _BadRequest("only GET over HTTP/1.x")
    url = urlsplit(target)
    parts = url.path.split("/")
    if len(parts) != 4 or parts[:2] != ["", "v1"] or parts[2] not in {a.value for a in Allowed}:
        raise _BadRequest("the path is /v1/listen/CALL or /v1/copy/CALL")
    request = parse_qs(url.query).get("request", [""])[0]
    headers = {}
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if sep:
            headers[name.strip().lower()] = value.strip()
    token = headers.get("callrec-grant", "")
    if not request or not token:
        raise _BadRequest("the request number (?request=) and the grant (Callrec-Grant:) are both needed")
    return Allowed(parts[2]), unquote(parts[3]), request, token


async def _answer(writer: asyncio.StreamWriter, status: int, text: str) -> None:
    body = (text + "\n").encode()
    writer.write(f"HTTP/1.1 {status} {_STATUS[status]}\r\nContent-Type: text/plain; charset=utf-8\r\n"
                 f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode() + body)
    await writer.drain()

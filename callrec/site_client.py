"""The centre's side of a fetch: call the site that keeps a recording, show the centre's client
certificate and the grant, and keep what comes back only if it is whole and matches its seal.

The answer is written under a temporary name beside the output, hashed as it arrives, and renamed
to the output only when the connection ended cleanly (TLS close_notify) and the SHA-256 is the
one the site announced, which for a recording is the seal made when the call ended; otherwise
nothing is left.  (The centre's index holds the same seal from the sync and may compare too.)
"""
from __future__ import annotations

import asyncio
import hashlib
import os
import ssl
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

from access.site_grants import Allowed, unverified_fields
from wire.errors import CallrecError

from .pki import CentreCA, centre_context

__all__ = ["FetchFailed", "Fetched", "fetch", "fetch_async"]

_CHUNK = 1 << 16
_HEAD_LIMIT = 16 * 1024


class FetchFailed(CallrecError):
    """The site refused the fetch (`status`, and the site's refusal text) or the answer was not
    whole; nothing was written."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class Fetched:
    path: Path
    sha256: str
    size: int
    media_type: str
    site_ledger_seq: int | None


async def fetch_async(ca: CentreCA, host: str, port: int, token: str, output: Path, *, site: str | None = None,
                      call_id: str | None = None, request: str | None = None, allow: Allowed | None = None,
                      context: ssl.SSLContext | None = None, timeout: float = 60.0) -> Fetched:
    """Fetch what `token` grants from the site at host:port into the new file `output`.  The site,
    call, request and use default to the grant's own (read unverified: the site verifies it)."""
    fields = unverified_fields(token)
    site = site or str(fields.get("site"))
    call_id = call_id or str(fields.get("call_id"))
    request = request or str(fields.get("request"))
    allow = allow or Allowed(str(fields.get("allow")))
    if output.exists():
        raise FetchFailed(f"{output} exists; callrec never overwrites a file")
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_connection(
            host, port, ssl=context or centre_context(ca), server_hostname=site), timeout)
    except ssl.SSLError as exc:
        raise FetchFailed(f"{site} at {host}:{port}: TLS refused: {getattr(exc, 'verify_message', None) or exc}")
    except OSError as exc:
        raise FetchFailed(f"{site} at {host}:{port}: {exc.strerror or exc}") from None
    try:
        writer.write((f"GET /v1/{allow}/{quote(call_id, safe='')}?request={quote(request, safe='')} HTTP/1.1\r\n"
                      f"Host: {site}\r\nCallrec-Grant: {token.strip()}\r\nConnection: close\r\n\r\n").encode())
        await writer.drain()
        status, headers = await asyncio.wait_for(_head(reader), timeout)
        if status != 200:
            text = (await asyncio.wait_for(reader.read(_HEAD_LIMIT), timeout)).decode(errors="replace").strip()
            raise FetchFailed(f"{site} refused ({status}): {text}", status)
        return await _keep(reader, headers, output, timeout)
    except ssl.SSLError as exc:
        raise FetchFailed(f"{site}: the connection failed: {exc.reason or exc}") from None
    except (asyncio.IncompleteReadError, ConnectionError) as exc:
        raise FetchFailed(f"{site}: the connection ended early ({type(exc).__name__})") from None
    finally:
        writer.close()
        try:
            await asyncio.wait_for(writer.wait_closed(), 5)
        except (OSError, ssl.SSLError, TimeoutError):
            pass


def fetch(ca: CentreCA, host: str, port: int, token: str, output: Path, **options: object) -> Fetched:
    return asyncio.run(fetch_async(ca, host, port, token, output, **options))  # type: ignore[arg-type]


async def _head(reader: asyncio.StreamReader) -> tuple[int, dict[str, str]]:
    raw = await reader.readuntil(b"\r\n\r\n")
    if len(raw) > _HEAD_LIMIT:
        raise FetchFailed("the site's answer head is too long")
    lines = raw.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ", 2)
    if len(parts) < 2 or not parts[0].startswith("HTTP/1.") or not parts[1].isdigit():
        raise FetchFailed(f"not an HTTP answer: {lines[0][:80]!r}")
    headers = {}
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if sep:
            headers[name.strip().lower()] = value.strip()
    return int(parts[1]), headers


async def _keep(reader: asyncio.StreamReader, headers: dict[str, str], output: Path, timeout: float) -> Fetched:
    announced = headers.get("callrec-sha256", "")
    tmp = output.with_name(f".{output.name}.part")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    digest, size = hashlib.sha256(), 0
    try:
        with os.fdopen(fd, "wb") as out:
            while chunk := await asyncio.wait_for(reader.read(_CHUNK), timeout):
                out.write(chunk)
                digest.update(chunk)
                size += len(chunk)
            out.flush()
            os.fsync(out.fileno())
        if digest.hexdigest() != announced:
            raise FetchFailed(f"the answer's SHA-256 {digest.hexdigest()} is not the one announced ({announced}); "
                              "nothing was kept")
        os.link(tmp, output)
    finally:
        tmp.unlink(missing_ok=True)
    seq = headers.get("callrec-ledger-seq", "")
    return Fetched(output, announced, size, headers.get("content-type", ""), int(seq) if seq.isdigit() else None)

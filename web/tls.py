"""The console's TLS: the administrator's certificate, or a self-signed one made on first start.

A city's admin network rarely has an internal CA; a self-signed certificate (ECDSA P-256, ten
years, the host's name and address as subject alternative names) still encrypts the session and
lets the browser pin it on first visit.  The private key is written 0600 in the data folder and
never leaves it.
"""
from __future__ import annotations

import datetime as dt
import ipaddress
import os
import socket
import ssl
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from .config import WebConfig

__all__ = ["server_context"]


def _self_signed(cert_path: Path, key_path: Path, address: str) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"callrec console {socket.gethostname()}")])
    names: list[x509.GeneralName] = [x509.DNSName(socket.gethostname()), x509.DNSName("localhost")]
    try:
        names.append(x509.IPAddress(ipaddress.ip_address(address)))
    except ValueError:
        names.append(x509.DNSName(address))
    now = dt.datetime.now(dt.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=3650))
            .add_extension(x509.SubjectAlternativeName(names), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                    serialization.NoEncryption()))
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))


def server_context(config: WebConfig, folder: Path) -> ssl.SSLContext | None:
    """The TLS context to serve with, or None for plain HTTP (loopback only)."""
    if config.plain_http:
        if not config.loopback:
            raise ValueError(f"plain HTTP is refused on {config.listen}: only a loopback address may serve it")
        return None
    cert, key = config.certificate, config.private_key
    if cert is None or key is None:
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        cert, key = folder / "console.crt", folder / "console.key"
        if not cert.exists() or not key.exists():
            _self_signed(cert, key, config.listen)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(cert, key)
    return context

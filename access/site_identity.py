"""A site's enrolment as it is kept in its data folder: its name, its key and certificate, the
centre's CA certificate, the centre's grant key, and the centre's list of revoked certificates.

Everything sits in one folder of fixed file names (`DATA/site/`), private to the daemon's user,
each file written whole (temporary name, fsync, rename) so a crash never leaves half a key.  No
name from the bundle or the network ever becomes part of a path.  Loading checks that the pieces
belong together (the certificate names the site, is issued by the CA and matches the key; the
revocation list is signed by the CA), so a folder patched by hand is refused at start, not when
the centre first calls.
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from cryptography.x509.oid import ExtensionOID

from storage.durable import fsync_dir

from .errors import AccessError
from .site_grants import check_site_name

__all__ = ["CENTRE_URI", "SITE_FOLDER", "SiteError", "SiteFiles", "SiteIdentity", "crl_number", "install_site", "load_site",
           "site_uri", "update_revocations", "write_private"]

SITE_FOLDER = "site"
CENTRE_URI = "urn:callrec:centre"
"""The subject alternative name only the centre's client certificate carries: a site's own
certificate, though issued by the same CA, is not the centre and cannot fetch from another site."""


def site_uri(site: str) -> str:
    return f"urn:callrec:site:{site}"


class SiteError(AccessError):
    """The site's enrolment is missing, incomplete, or its pieces do not belong together."""


@dataclass(frozen=True)
class SiteFiles:
    """The fixed names in DATA/site/."""

    folder: Path

    @classmethod
    def in_data_dir(cls, data_dir: Path) -> SiteFiles:
        return cls(data_dir / SITE_FOLDER)

    @property
    def info(self) -> Path:
        return self.folder / "site.json"

    @property
    def key(self) -> Path:
        return self.folder / "site.key"

    @property
    def certificate(self) -> Path:
        return self.folder / "site.crt"

    @property
    def ca(self) -> Path:
        return self.folder / "centre-ca.crt"

    @property
    def grant_key(self) -> Path:
        return self.folder / "centre-grant.pub"

    @property
    def crl(self) -> Path:
        return self.folder / "revoked.crl"

    @property
    def outgoing(self) -> Path:
        """Where a copy package is made before it is streamed, and removed after."""
        return self.folder / "outgoing"


@dataclass(frozen=True)
class SiteIdentity:
    """A loaded, consistent enrolment."""

    name: str
    files: SiteFiles
    certificate: x509.Certificate
    key: ec.EllipticCurvePrivateKey
    ca: x509.Certificate
    grant_key: Ed25519PublicKey
    crl: x509.CertificateRevocationList

    def revoked(self, serial: int) -> bool:
        return self.crl.get_revoked_certificate_by_serial_number(serial) is not None


def write_private(path: Path, data: bytes, *, replace: bool = False) -> None:
    """Write a file whole, owner-only, under a temporary name then renamed; never over an existing
    file unless `replace` (the revocation list, which only moves forward)."""
    if path.exists() and not replace:
        raise AccessError(f"{path} exists; callrec never overwrites a key or certificate")
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".part")
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        if replace:
            os.replace(tmp, path)
        else:
            os.link(tmp, path)
            os.unlink(tmp)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def crl_number(crl: x509.CertificateRevocationList) -> int:
    try:
        return int(crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number)
    except x509.ExtensionNotFound:
        return 0


def _names(certificate: x509.Certificate) -> tuple[list[str], list[str]]:
    try:
        san = certificate.extensions.get_extension_for_oid(ExtensionOID.SUBJECT_ALTERNATIVE_NAME).value
    except x509.ExtensionNotFound:
        return [], []
    return san.get_values_for_type(x509.DNSName), san.get_values_for_type(x509.UniformResourceIdentifier)


def _check(site: str, certificate: x509.Certificate, key: ec.EllipticCurvePrivateKey, ca: x509.Certificate,
           crl: x509.CertificateRevocationList) -> None:
    dns, uris = _names(certificate)
    if site not in dns or site_uri(site) not in uris:
        raise SiteError(f"the certificate does not name site {site}")
    try:
        certificate.verify_directly_issued_by(ca)
    except (ValueError, TypeError, InvalidSignature):
        raise SiteError("the site certificate is not issued by the centre's CA") from None
    if certificate.public_key().public_numbers() != key.public_key().public_numbers():
        raise SiteError("the site key does not match its certificate")
    if not crl.is_signature_valid(ca.public_key()):  # type: ignore[arg-type]
        raise SiteError("the revocation list is not signed by the centre's CA")


def install_site(data_dir: Path, *, site: str, key: ec.EllipticCurvePrivateKey, certificate: x509.Certificate,
                 ca: x509.Certificate, grant_key: Ed25519PublicKey, crl: x509.CertificateRevocationList,
                 enrolled_at: str) -> SiteIdentity:
    """Keep an enrolment, whole or not at all (its files are written in a folder of their own that
    is renamed into place); refused if this data folder is enrolled already (a site is enrolled
    once: a new certificate is a new enrolment by the centre, and the old one is revoked there)."""
    check_site_name(site)
    _check(site, certificate, key, ca, crl)
    files = SiteFiles.in_data_dir(data_dir)
    if files.info.exists():
        raise SiteError(f"{data_dir} is enrolled already as site {load_site(data_dir).name}")
    staged = SiteFiles(Path(tempfile.mkdtemp(dir=data_dir, prefix=".site-")))
    pem = serialization.Encoding.PEM
    try:
        write_private(staged.key, key.private_bytes(pem, serialization.PrivateFormat.PKCS8,
                                                    serialization.NoEncryption()))
        write_private(staged.certificate, certificate.public_bytes(pem))
        write_private(staged.ca, ca.public_bytes(pem))
        write_private(staged.grant_key, grant_key.public_bytes(pem, serialization.PublicFormat.SubjectPublicKeyInfo))
        write_private(staged.crl, crl.public_bytes(pem))
        info = {"site": site, "enrolled_at": enrolled_at, "serial": format(certificate.serial_number, "x")}
        write_private(staged.info, json.dumps(info, ensure_ascii=False, indent=2).encode() + b"\n")
        os.rename(staged.folder, files.folder)
    except OSError as exc:
        shutil.rmtree(staged.folder, ignore_errors=True)
        raise SiteError(f"{files.folder}: the enrolment cannot be kept there ({exc.strerror or exc})") from None
    fsync_dir(data_dir)
    return load_site(data_dir)


def load_site(data_dir: Path) -> SiteIdentity:
    files = SiteFiles.in_data_dir(data_dir)
    if not files.info.exists():
        raise SiteError(f"{data_dir} is not enrolled as a site: run `callrec site enrol BUNDLE`")
    try:
        info = json.loads(files.info.read_text(encoding="utf-8"))
        site = check_site_name(str(info["site"]))
        key = serialization.load_pem_private_key(files.key.read_bytes(), None)
        certificate = x509.load_pem_x509_certificate(files.certificate.read_bytes())
        ca = x509.load_pem_x509_certificate(files.ca.read_bytes())
        grant_key = serialization.load_pem_public_key(files.grant_key.read_bytes())
        crl = x509.load_pem_x509_crl(files.crl.read_bytes())
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise SiteError(f"{files.folder}: the enrolment cannot be read ({exc})") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey) or not isinstance(grant_key, Ed25519PublicKey):
        raise SiteError(f"{files.folder}: the site key or the centre's grant key is of the wrong kind")
    _check(site, certificate, key, ca, crl)
    return SiteIdentity(site, files, certificate, key, ca, grant_key, crl)


def update_revocations(data_dir: Path, crl: x509.CertificateRevocationList) -> tuple[int, int]:
    """Take the centre's newer revocation list: it must be signed by the CA and not older than the
    one kept (an old list put back would unrevoke a site).  Returns (old number, new number)."""
    identity = load_site(data_dir)
    if not crl.is_signature_valid(identity.ca.public_key()):  # type: ignore[arg-type]
        raise SiteError("the revocation list is not signed by the centre's CA")
    old, new = crl_number(identity.crl), crl_number(crl)
    if new < old:
        raise SiteError(f"the revocation list is number {new}, older than the one kept (number {old})")
    write_private(identity.files.crl, crl.public_bytes(serialization.Encoding.PEM), replace=True)
    return old, new

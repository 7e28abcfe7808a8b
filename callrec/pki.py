"""The centre's small CA, site enrolment bundles, revocation, and the TLS contexts both ends use.

One CA per centre (ECDSA P-256, ten years), kept in the centre's folder with the Ed25519 key that
signs grants and hold orders, and the centre's own client certificate (the only one that may
fetch from a site: its subject alternative name is `urn:callrec:centre`).  Enrolling a site makes
it a key and a certificate naming it (DNS name = the site's name, URI urn:callrec:site:NAME), and
writes a bundle the site imports: the site's key encrypted under a one-time enrolment code the
centre prints (so the bundle carried on a stick is useless alone), the certificates, the grant
key and the current revocation list.  Issued certificates are filed by serial number, never by a
name: no string the operator or a peer typed becomes a path.

Both ends speak TLS 1.3 only and check the other against the CA and the revocation list (the leaf
certificate), the centre also that the site certificate names the site it meant to call.
"""
from __future__ import annotations

import datetime as dt
import json
import secrets
import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from access.errors import AccessError
from access.site_grants import check_site_name
from access.site_identity import CENTRE_URI, SiteFiles, SiteIdentity, site_uri, write_private
from storage.layout import ensure_private_dir

__all__ = ["BUNDLE_FORMAT", "CentreCA", "SiteBundle", "centre_context", "certificate_fingerprint", "enrol_site",
           "init_ca", "load_ca", "open_bundle", "peer_is_centre", "revoke_site", "server_context"]

BUNDLE_FORMAT = "callrec site enrolment"
CA_YEARS = 10
SITE_YEARS = 5
CRL_YEARS = 10
"""A revocation list never expires in practice; what keeps it current is that a site takes only a
newer one (access/site_identity.py), and the centre sends each new one at once."""
_CODE_ALPHABET = "ABCDEFGHJKLMNPQRSTUVWXYZ23456789"


def _pem(obj: Any) -> bytes:
    return obj.public_bytes(serialization.Encoding.PEM)


def _private_pem(key: Any) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def _years(now: dt.datetime, years: int) -> dt.datetime:
    return now + dt.timedelta(days=365 * years + years // 4)


@dataclass(frozen=True)
class CentreCA:
    """The centre's folder, loaded."""

    folder: Path
    key: ec.EllipticCurvePrivateKey
    certificate: x509.Certificate
    grant_key: Ed25519PrivateKey
    client_key: ec.EllipticCurvePrivateKey
    client_certificate: x509.Certificate

    @property
    def registry_path(self) -> Path:
        return self.folder / "sites.json"

    @property
    def crl_path(self) -> Path:
        return self.folder / "revoked.crl"

    @property
    def issued(self) -> Path:
        return self.folder / "issued"

    def registry(self) -> dict[str, Any]:
        return json.loads(self.registry_path.read_text(encoding="utf-8"))

    def save_registry(self, registry: dict[str, Any]) -> None:
        write_private(self.registry_path, json.dumps(registry, ensure_ascii=False, indent=2).encode() + b"\n",
                      replace=True)

    def crl(self) -> x509.CertificateRevocationList:
        return x509.load_pem_x509_crl(self.crl_path.read_bytes())

    def site_certificate(self, site: str) -> x509.Certificate:
        """The site's current certificate, to check its hold confirmations against."""
        entry = self.registry()["sites"].get(check_site_name(site))
        if entry is None:
            raise AccessError(f"site {site} is not enrolled at this centre")
        return x509.load_pem_x509_certificate((self.issued / f"{int(entry['serial'], 16):x}.crt").read_bytes())


def _name(common: str, organisation: str | None) -> x509.Name:
    parts = [x509.NameAttribute(NameOID.COMMON_NAME, common)]
    if organisation:
        parts.append(x509.NameAttribute(NameOID.ORGANIZATION_NAME, organisation))
    return x509.Name(parts)


def _leaf(ca_key: ec.EllipticCurvePrivateKey, ca: x509.Certificate, subject: x509.Name, key: ec.EllipticCurvePrivateKey,
          names: list[x509.GeneralName], usages: list[x509.ObjectIdentifier], now: dt.datetime) -> x509.Certificate:
    return (x509.CertificateBuilder().subject_name(subject).issuer_name(ca.subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(min(_years(now, SITE_YEARS), ca.not_valid_after_utc))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=False,
                                         data_encipherment=False, key_agreement=False, key_cert_sign=False,
                                         crl_sign=False, encipher_only=False, decipher_only=False), critical=True)
            .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
            .add_extension(x509.SubjectAlternativeName(names), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
            .sign(ca_key, hashes.SHA256()))


def _make_crl(ca: CentreCA, revoked: list[tuple[int, dt.datetime]], number: int,
              now: dt.datetime) -> x509.CertificateRevocationList:
    builder = (x509.CertificateRevocationListBuilder().issuer_name(ca.certificate.subject)
               .last_update(now - dt.timedelta(minutes=5)).next_update(_years(now, CRL_YEARS))
               .add_extension(x509.CRLNumber(number), critical=False)
               .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca.key.public_key()), critical=False))
    for serial, when in revoked:
        builder = builder.add_revoked_certificate(
            x509.RevokedCertificateBuilder().serial_number(serial).revocation_date(when).build())
    return builder.sign(ca.key, hashes.SHA256())


def init_ca(folder: Path, now: dt.datetime, organisation: str | None = None) -> CentreCA:
    """A new CA, grant key and centre client certificate in an empty or new folder."""
    ensure_private_dir(folder)
    if (folder / "ca.key").exists():
        raise AccessError(f"{folder} holds a CA already; callrec never replaces one (every site trusts it)")
    key = ec.generate_private_key(ec.SECP256R1())
    subject = _name("callrec centre CA", organisation)
    certificate = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject).public_key(key.public_key())
                   .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(minutes=5))
                   .not_valid_after(_years(now, CA_YEARS))
                   .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
                   .add_extension(x509.KeyUsage(digital_signature=False, content_commitment=False,
                                                key_encipherment=False, data_encipherment=False, key_agreement=False,
                                                key_cert_sign=True, crl_sign=True, encipher_only=False,
                                                decipher_only=False), critical=True)
                   .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
                   .sign(key, hashes.SHA256()))
    client_key = ec.generate_private_key(ec.SECP256R1())
    client = _leaf(key, certificate, _name("callrec centre", organisation), client_key,
                   [x509.UniformResourceIdentifier(CENTRE_URI)], [ExtendedKeyUsageOID.CLIENT_AUTH], now)
    grant_key = Ed25519PrivateKey.generate()
    write_private(folder / "ca.key", _private_pem(key))
    write_private(folder / "grant.key", _private_pem(grant_key))
    write_private(folder / "client.key", _private_pem(client_key))
    write_private(folder / "ca.crt", _pem(certificate))
    write_private(folder / "client.crt", _pem(client))
    ensure_private_dir(folder / "issued")
    ca = load_ca(folder, check=False)
    write_private(ca.crl_path, _pem(_make_crl(ca, [], 1, now)))
    write_private(ca.registry_path, json.dumps({"sites": {}, "revoked": [], "crl_number": 1}).encode() + b"\n")
    return ca


def load_ca(folder: Path, *, check: bool = True) -> CentreCA:
    try:
        key = serialization.load_pem_private_key((folder / "ca.key").read_bytes(), None)
        grant_key = serialization.load_pem_private_key((folder / "grant.key").read_bytes(), None)
        client_key = serialization.load_pem_private_key((folder / "client.key").read_bytes(), None)
        certificate = x509.load_pem_x509_certificate((folder / "ca.crt").read_bytes())
        client = x509.load_pem_x509_certificate((folder / "client.crt").read_bytes())
    except FileNotFoundError:
        raise AccessError(f"{folder} holds no centre CA: run `callrec centre ca init`") from None
    except (OSError, ValueError) as exc:
        raise AccessError(f"{folder}: the centre CA cannot be read ({exc})") from None
    if not (isinstance(key, ec.EllipticCurvePrivateKey) and isinstance(client_key, ec.EllipticCurvePrivateKey)
            and isinstance(grant_key, Ed25519PrivateKey)):
        raise AccessError(f"{folder}: a key is of the wrong kind")
    ca = CentreCA(folder, key, certificate, grant_key, client_key, client)
    if check and not ca.registry_path.exists():
        raise AccessError(f"{folder}: sites.json is missing")
    return ca


def _code() -> str:
    raw = "".join(secrets.choice(_CODE_ALPHABET) for _ in range(20))
    return "-".join(raw[i:i + 5] for i in range(0, 20, 5))


def enrol_site(ca: CentreCA, site: str, now: dt.datetime) -> tuple[bytes, str]:
    """A new key and certificate for `site`, filed by serial, as a bundle for the site and the
    one-time code that opens its key (to give the site's administrator by another way)."""
    check_site_name(site)
    registry = ca.registry()
    if site in registry["sites"]:
        raise AccessError(f"site {site} is enrolled already; revoke it first (`callrec centre revoke {site}`) to "
                          "enrol it anew")
    key = ec.generate_private_key(ec.SECP256R1())
    certificate = _leaf(ca.key, ca.certificate, _name(site, "callrec site"), key,
                        [x509.DNSName(site), x509.UniformResourceIdentifier(site_uri(site))],
                        [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH], now)
    write_private(ca.issued / f"{certificate.serial_number:x}.crt", _pem(certificate))
    registry["sites"][site] = {"serial": f"{certificate.serial_number:x}",
                               "enrolled_at": now.isoformat(timespec="seconds")}
    ca.save_registry(registry)
    code = _code()
    encrypted = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                  serialization.BestAvailableEncryption(code.encode()))
    bundle = {"format": BUNDLE_FORMAT, "version": 1, "site": site, "key": encrypted.decode(),
              "certificate": _pem(certificate).decode(), "ca": _pem(ca.certificate).decode(),
              "grant_key": ca.grant_key.public_key().public_bytes(
                  serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode(),
              "crl": ca.crl_path.read_text(encoding="ascii")}
    return json.dumps(bundle, indent=2).encode() + b"\n", code


def revoke_site(ca: CentreCA, site: str, now: dt.datetime) -> x509.CertificateRevocationList:
    """Revoke the site's certificate: a new revocation list, numbered one up, for every site and
    the centre's own fetches; the site leaves the registry and may be enrolled anew."""
    registry = ca.registry()
    entry = registry["sites"].pop(check_site_name(site), None)
    if entry is None:
        raise AccessError(f"site {site} is not enrolled at this centre")
    registry["revoked"].append({"site": site, "serial": entry["serial"], "at": now.isoformat(timespec="seconds")})
    registry["crl_number"] += 1
    crl = _make_crl(ca, [(int(r["serial"], 16), dt.datetime.fromisoformat(r["at"])) for r in registry["revoked"]],
                    registry["crl_number"], now)
    write_private(ca.crl_path, _pem(crl), replace=True)
    ca.save_registry(registry)
    return crl


@dataclass(frozen=True)
class SiteBundle:
    site: str
    key: ec.EllipticCurvePrivateKey
    certificate: x509.Certificate
    ca: x509.Certificate
    grant_key: Any
    crl: x509.CertificateRevocationList


def open_bundle(data: bytes, code: str) -> SiteBundle:
    """The bundle's parts, its key opened with the enrolment code."""
    try:
        bundle = json.loads(data)
        if bundle.get("format") != BUNDLE_FORMAT or bundle.get("version") != 1:
            raise ValueError("not a callrec site enrolment bundle")
        key = serialization.load_pem_private_key(bundle["key"].encode(), code.strip().upper().encode())
        parts = SiteBundle(check_site_name(str(bundle["site"])), key,  # type: ignore[arg-type]
                           x509.load_pem_x509_certificate(bundle["certificate"].encode()),
                           x509.load_pem_x509_certificate(bundle["ca"].encode()),
                           serialization.load_pem_public_key(bundle["grant_key"].encode()),
                           x509.load_pem_x509_crl(bundle["crl"].encode()))
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise AccessError(f"the enrolment bundle cannot be opened: {exc} (a wrong enrolment code says "
                          "'Bad decrypt')") from None
    return parts


# --- TLS -----------------------------------------------------------------------------------------

def _tls13(purpose: ssl.Purpose) -> ssl.SSLContext:
    context = ssl.create_default_context(purpose)
    context.minimum_version = ssl.TLSVersion.TLSv1_3
    context.verify_mode = ssl.CERT_REQUIRED
    context.verify_flags |= ssl.VERIFY_CRL_CHECK_LEAF | ssl.VERIFY_X509_STRICT
    return context


def server_context(identity: SiteIdentity) -> ssl.SSLContext:
    """The site's fetch server: its own certificate; a client certificate required, issued by the
    centre's CA and not revoked (the centre's identity is checked after, by peer_is_centre)."""
    files: SiteFiles = identity.files
    context = _tls13(ssl.Purpose.CLIENT_AUTH)
    context.load_verify_locations(cafile=files.ca)
    context.load_verify_locations(cafile=files.crl)
    context.load_cert_chain(files.certificate, files.key)
    return context


def centre_context(ca: CentreCA) -> ssl.SSLContext:
    """The centre calling a site: its client certificate; the site's certificate must be issued by
    the CA, not revoked, and name the site called (server_hostname = the site's name)."""
    context = _tls13(ssl.Purpose.SERVER_AUTH)
    context.check_hostname = True
    context.load_verify_locations(cafile=ca.folder / "ca.crt")
    context.load_verify_locations(cafile=ca.crl_path)
    context.load_cert_chain(ca.folder / "client.crt", ca.folder / "client.key")
    return context


def peer_is_centre(peer: dict[str, Any]) -> bool:
    """Whether a verified client certificate (ssl getpeercert()) is the centre's: a site's own
    certificate, though from the same CA, may not fetch from another site."""
    return ("URI", CENTRE_URI) in peer.get("subjectAltName", ())


def certificate_fingerprint(certificate: x509.Certificate) -> str:
    """SHA-256 of the certificate, as `openssl x509 -fingerprint -sha256` prints it."""
    return certificate.fingerprint(hashes.SHA256()).hex(":").upper()

"""The copy package: one numbered copy of a recording (複製データ / 出力データ), as handed to its
recipient and as an auditor checks it later.

A copy must be the recording exactly as recorded (記録された状態で, REQUIREMENTS R5, U3) and must
be traceable to the approval that let it out (U5, 松本市 第8条2).  So the package is a plain ZIP
that any tool opens, its files stored uncompressed (the WAV inside is byte for byte the sealed
WAV), with a manifest that names the copy, its purpose, approver, conditions and disposal
deadline and every file's size and SHA-256, signed with an Ed25519 key derived from the device's
master key.  Checking it needs only the package: the public key is in the manifest, and the
recipient compares its short fingerprint with the one on the form the copy came with.

The bytes are deterministic (fixed member order, times and modes; Ed25519 signatures are
deterministic too), so the same copy written twice is the same file.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import struct
import tempfile
import zipfile
import zlib
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import IO, Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from storage.durable import fsync_dir
from storage.keys import MasterKey
from storage.records import SealedFile

from .errors import PackageError

__all__ = ["FORMAT", "FORMAT_VERSION", "MANIFEST", "README", "SIGNATURE", "SIGNING_LABEL", "FileEntry",
           "PackageInfo", "PackageReport", "Problem", "ProblemKind", "fingerprint", "normalize_fingerprint",
           "signing_fingerprint", "signing_key", "verify_package", "write_package"]

FORMAT = "callrec copy package"
FORMAT_VERSION = 1
SIGNING_LABEL = "callrec copy signing v1"
MANIFEST = "manifest.json"
SIGNATURE = "manifest.sig"
README = "README.txt"

_RESERVED = frozenset({"format", "format_version", "files", "signer"})
"""Manifest keys the package adds; a caller's manifest may not set them."""
_COPY_NUMBER = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
_FINGERPRINT_BYTES = 16
_ZIP_TIME = (1980, 1, 1, 0, 0, 0)
"""The earliest time a ZIP can hold: a fixed time keeps the package's bytes deterministic."""
_ZIP_MODE = 0o100600
"""Regular file, owner only: a copy holds personal information, even once unpacked."""
_UNIX = 3
_CHUNK = 1 << 20
_LOCAL_HEADER = struct.Struct("<4s5H3L2H")


class ProblemKind(StrEnum):
    """What is wrong with a package, one kind per check."""

    NOT_ZIP = "not_zip"
    MISSING = "missing"
    EXTRA = "extra"
    DUPLICATE = "duplicate"
    UNREADABLE = "unreadable"
    SIZE = "size"
    SHA256 = "sha256"
    CRC = "crc"
    MANIFEST = "manifest"
    SIGNATURE = "signature"
    FINGERPRINT = "fingerprint"


@dataclass(frozen=True, slots=True)
class Problem:
    kind: ProblemKind
    member: str | None
    message: str

    def __str__(self) -> str:
        return f"{self.member}: {self.message}" if self.member else self.message

    def as_json(self) -> dict[str, Any]:
        return {"kind": str(self.kind), "member": self.member, "message": self.message}


@dataclass(frozen=True, slots=True)
class FileEntry:
    """One file of the package as the manifest lists it."""

    name: str
    size: int
    sha256: str

    def as_json(self) -> dict[str, Any]:
        return {"name": self.name, "size": self.size, "sha256": self.sha256}


@dataclass(frozen=True, slots=True)
class PackageInfo:
    """A package written: where, the copy's number, the signer's fingerprint (for the form), the
    files it lists and the SHA-256 of the package file itself (for the copy register)."""

    path: Path
    copy_number: str
    fingerprint: str
    files: tuple[FileEntry, ...]
    sha256: str
    size: int


@dataclass(frozen=True, slots=True)
class PackageReport:
    """The result of checking a package: every problem found, and what the manifest says (when it
    could be read) so the checker can see which copy and which signer it is about."""

    path: Path
    problems: tuple[Problem, ...]
    manifest: dict[str, Any] | None = None
    fingerprint: str | None = None
    files: tuple[FileEntry, ...] = ()

    @property
    def ok(self) -> bool:
        return not self.problems

    @property
    def copy_number(self) -> str | None:
        value = (self.manifest or {}).get("copy_number")
        return value if isinstance(value, str) else None

    def as_json(self) -> dict[str, Any]:
        return {"path": str(self.path), "ok": self.ok, "copy_number": self.copy_number,
                "fingerprint": self.fingerprint, "files": [f.as_json() for f in self.files],
                "problems": [p.as_json() for p in self.problems], "manifest": self.manifest}


# The signing key.

def signing_key(master: MasterKey) -> Ed25519PrivateKey:
    """Derived, never stored: the device signs with the same key for as long as it keeps its
    master key, and no second secret has to be kept, backed up or erased."""
    return Ed25519PrivateKey.from_private_bytes(master.derive(SIGNING_LABEL))


def fingerprint(public_key: bytes) -> str:
    """The first 16 bytes of SHA-256 of the raw 32-byte public key, as 8 groups of 4 hex digits:
    short enough to print on a form and read over the phone, long enough that no other key has it."""
    digits = hashlib.sha256(public_key).digest()[:_FINGERPRINT_BYTES].hex().upper()
    return "-".join(digits[i:i + 4] for i in range(0, len(digits), 4))


def signing_fingerprint(master: MasterKey) -> str:
    return fingerprint(_raw_public(signing_key(master).public_key()))


def normalize_fingerprint(text: str) -> str:
    """A fingerprint as a person may type it (any case, spaces, dashes or colons) in the printed form."""
    digits = re.sub(r"[\s:-]", "", text).upper()
    if not re.fullmatch(r"[0-9A-F]{32}", digits):
        raise PackageError(f"{text!r} is not a signing-key fingerprint (32 hex digits, e.g. "
                           "3F2A-91BC-0D4E-77A1-5C66-08E2-B9D0-1F47)")
    return "-".join(digits[i:i + 4] for i in range(0, len(digits), 4))


def _raw_public(key: Ed25519PublicKey) -> bytes:
    return key.public_bytes(Encoding.Raw, PublicFormat.Raw)


def _signer(key: Ed25519PublicKey) -> dict[str, str]:
    """The key as the manifest carries it: raw (hex) for any Ed25519 tool, PEM for OpenSSL."""
    return {"algorithm": "Ed25519", "public_key": _raw_public(key).hex(),
            "public_key_pem": key.public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo).decode("ascii"),
            "fingerprint": fingerprint(_raw_public(key))}


# Writing.

def write_package(path: Path, files: Sequence[SealedFile], manifest: Mapping[str, Any],
                  master: MasterKey) -> PackageInfo:
    """Write the package for one copy to a new file at `path`.

    `files` are the recording's sealed files (storage.records.sealed_files), the WAV first;
    `manifest` is the caller's record of the copy and must hold its `copy_number`, which names the
    files inside.  Each file is hashed as it is written and must match its seal; on any mismatch
    or failure nothing is left at `path` (the package is written under a temporary name beside it
    and renamed when complete), and an existing `path` is never replaced."""
    copy_number = _copy_number(manifest)
    _check_caller_manifest(manifest)
    names = _member_names(copy_number, files)
    if os.path.lexists(path):
        raise PackageError(f"{path} exists; callrec never overwrites a file")
    key = signing_key(master)
    try:
        fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".part")
    except OSError as exc:
        raise PackageError(f"{path}: cannot write there: {exc.strerror}") from None
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "w+b") as out:
            entries = _write_zip(out, _readme(path.name, copy_number, names, key), files, names, manifest, key)
            out.flush()
            os.fsync(out.fileno())
            out.seek(0)
            digest = hashlib.file_digest(out, "sha256").hexdigest()
            size = out.tell()
        _publish(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise PackageError(f"{path}: not written: {exc.strerror or exc}") from None
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return PackageInfo(path, copy_number, fingerprint(_raw_public(key.public_key())), entries, digest, size)


def _copy_number(manifest: Mapping[str, Any]) -> str:
    number = manifest.get("copy_number")
    if not isinstance(number, str) or not _COPY_NUMBER.fullmatch(number):
        raise PackageError(f"the manifest's copy_number {number!r} cannot name the files of a copy "
                           "(letters, digits, '.', '_', '-'; e.g. C2026-0001)")
    return number


def _check_caller_manifest(manifest: Mapping[str, Any]) -> None:
    """Refused before any audio is read: keys the package sets itself, or values JSON cannot hold."""
    taken = sorted(_RESERVED & set(manifest))
    if taken:
        raise PackageError(f"the manifest may not set {', '.join(taken)}: the package writes them")
    try:
        json.dumps(manifest, ensure_ascii=False, sort_keys=True, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise PackageError(f"the manifest cannot be written as JSON: {exc}") from None


def _member_names(copy_number: str, files: Sequence[SealedFile]) -> list[str]:
    names = [f"{copy_number}.wav{sealed.suffix}" for sealed in files]
    if not names:
        raise PackageError("a copy needs at least the recording's WAV")
    if len(set(names)) != len(names) or {README, MANIFEST, SIGNATURE} & set(names):
        raise PackageError(f"the files of a copy must have distinct names: {', '.join(names)}")
    return names


def _zip_info(name: str) -> zipfile.ZipInfo:
    info = zipfile.ZipInfo(name, date_time=_ZIP_TIME)
    info.create_system = _UNIX
    info.external_attr = _ZIP_MODE << 16
    info.compress_type = zipfile.ZIP_STORED
    return info


def _write_zip(out: IO[bytes], readme: bytes, files: Sequence[SealedFile], names: list[str],
               manifest: Mapping[str, Any], key: Ed25519PrivateKey) -> tuple[FileEntry, ...]:
    """README, the recording's files, then the manifest that lists them all and its signature."""
    with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_STORED) as zf:
        zf.writestr(_zip_info(README), readme)
        entries = [FileEntry(README, len(readme), hashlib.sha256(readme).hexdigest())]
        entries.extend(_write_sealed(zf, name, sealed) for name, sealed in zip(names, files, strict=True))
        document = _manifest_bytes(manifest, entries, key.public_key())
        zf.writestr(_zip_info(MANIFEST), document)
        zf.writestr(_zip_info(SIGNATURE), key.sign(document))
    return tuple(entries)


def _write_sealed(zf: zipfile.ZipFile, name: str, sealed: SealedFile) -> FileEntry:
    """One file streamed into the package, hashed on the way: the package holds exactly the bytes
    whose SHA-256 was sealed when the call ended, or it is not made."""
    digest = hashlib.sha256()
    size = 0
    with zf.open(_zip_info(name), "w") as member:
        for chunk in sealed.chunks:
            size += len(chunk)
            if size > zipfile.ZIP64_LIMIT:
                raise PackageError(f"{name} is larger than 2 GiB, more than a copy package holds")
            digest.update(chunk)
            member.write(chunk)
    if digest.hexdigest() != sealed.sha256:
        raise PackageError(f"{name} does not match its sealed SHA-256 ({digest.hexdigest()} != {sealed.sha256}); "
                           "no copy was made — run `callrec verify`")
    return FileEntry(name, size, sealed.sha256)


def _manifest_bytes(manifest: Mapping[str, Any], entries: list[FileEntry], public: Ed25519PublicKey) -> bytes:
    document = {**manifest, "format": FORMAT, "format_version": FORMAT_VERSION,
                "files": [e.as_json() for e in entries], "signer": _signer(public)}
    return (json.dumps(document, ensure_ascii=False, sort_keys=True, indent=2) + "\n").encode("utf-8")


def _publish(tmp: Path, path: Path) -> None:
    """Give the complete, synced package its name, refusing one that appeared meanwhile: a hard
    link fails rather than replace.  FAT and exFAT media (USB sticks) have no hard links; there
    the name is checked and the file renamed."""
    try:
        os.link(tmp, path)
    except FileExistsError:
        raise PackageError(f"{path} exists; callrec never overwrites a file") from None
    except OSError:
        if os.path.lexists(path):
            raise PackageError(f"{path} exists; callrec never overwrites a file") from None
        os.rename(tmp, path)
    else:
        os.unlink(tmp)
    fsync_dir(path.parent)


def _readme(package_name: str, copy_number: str, names: list[str], key: Ed25519PrivateKey) -> bytes:
    """What the recipient reads first, in Japanese and English.  UTF-8 with a byte-order mark and
    CRLF line ends, so Windows Notepad shows it right too."""
    fp = fingerprint(_raw_public(key.public_key()))
    ja = [f"  {name:34} {_describe(name, ja=True)}" for name in names]
    en = [f"  {name:34} {_describe(name, ja=False)}" for name in names]
    lines = [
        f"通話録音の複製データ {copy_number}",
        "",
        "この ZIP ファイルは、通話録音装置 callrec が記録した通話の複製です。録音は記録された状態のまま",
        "複製しており、加工していません。",
        "",
        *ja,
        f"  {MANIFEST:34} 複製番号、通話の情報、利用目的、承認者、利用の条件、廃棄期限、各ファイルの大きさと SHA-256、署名の公開鍵",
        f"  {SIGNATURE:34} manifest.json の電子署名 (Ed25519)",
        f"  {README:34} この説明",
        "",
        "manifest.json に書かれた利用目的と条件の範囲でのみ利用し、廃棄期限までに廃棄してください。",
        "",
        "確認の方法:",
        f"  callrec がある環境では: callrec copies verify {package_name} --fingerprint 交付書のフィンガープリント",
        "  手作業では:",
        "    1. 展開した各ファイルの SHA-256 (sha256sum ファイル名) を manifest.json の \"files\" と比べる。",
        "    2. manifest.sig が manifest.json の署名であることを Ed25519 に対応したツールで確かめる。",
        "       公開鍵は manifest.json の \"signer\" にあります。OpenSSL 3 の例:",
        "         jq -r .signer.public_key_pem manifest.json > key.pem",
        "         openssl pkeyutl -verify -pubin -inkey key.pem -rawin -in manifest.json -sigfile manifest.sig",
        "    3. 署名した鍵のフィンガープリントが、この複製とともに受け取った交付書に記載されたものと一致する",
        f"       ことを確かめる。この複製に署名した鍵: {fp}",
        "",
        f"Copy {copy_number} of a call recording",
        "",
        "This ZIP file is a copy of a call recorded by the callrec call-recording appliance, exactly as",
        "recorded: nothing in it was altered.",
        "",
        *en,
        f"  {MANIFEST:34} copy number, call details, purpose, approver, conditions of use, disposal deadline,",
        f"  {'':34} each file's size and SHA-256, the signer's public key",
        f"  {SIGNATURE:34} Ed25519 signature of manifest.json",
        f"  {README:34} this text",
        "",
        "Use it only for the purpose and under the conditions in manifest.json, and dispose of it by the",
        "deadline given there.",
        "",
        "To check it:",
        f"  where callrec is installed: callrec copies verify {package_name} --fingerprint FINGERPRINT-ON-THE-FORM",
        "  by hand:",
        "    1. compare each unpacked file's SHA-256 (sha256sum FILE) with \"files\" in manifest.json;",
        "    2. check that manifest.sig is the signature of manifest.json with any Ed25519 tool; the public",
        "       key is under \"signer\" in manifest.json.  With OpenSSL 3:",
        "         jq -r .signer.public_key_pem manifest.json > key.pem",
        "         openssl pkeyutl -verify -pubin -inkey key.pem -rawin -in manifest.json -sigfile manifest.sig",
        "    3. check that the signing key's fingerprint is the one on the form this copy came with.",
        f"       This copy was signed by key {fp}",
    ]
    return "\ufeff".encode() + "".join(f"{line}\r\n" for line in lines).encode("utf-8")


def _describe(name: str, *, ja: bool) -> str:
    side = re.search(r"\.wav\.ch(\d+)\.rtp\.pcap$", name)
    if side is None:
        return ("通話の録音 (WAV、ステレオ 8 kHz または 16 kHz。左: 職員側、右: 相手方)" if ja
                else "the call (WAV, stereo 8 kHz or 16 kHz; left: staff, right: the other party)")
    channel = "職員側" if side.group(1) == "0" else "相手方"
    return (f"G.711 以外の符号化方式の音声の RTP パケット、回線上のまま ({channel}。Wireshark で開けます)" if ja
            else f"the RTP packets of audio in a codec other than G.711, as on the wire "
                 f"({'staff' if side.group(1) == '0' else 'other party'}; Wireshark opens them)")


# Verifying.

def verify_package(path: Path, expected_fingerprint: str | None = None) -> PackageReport:
    """Check a package anywhere, with no key and no data folder: every member the manifest lists
    is there with its size and SHA-256, nothing else is, the manifest is signed by the key it
    names, and (when the fingerprint from the form is given) that key is the device's."""
    expected = normalize_fingerprint(expected_fingerprint) if expected_fingerprint is not None else None
    try:
        with zipfile.ZipFile(path) as zf, open(path, "rb") as raw:
            return _verify_open(path, zf, raw, expected)
    except (zipfile.BadZipFile, OSError, EOFError) as exc:
        return PackageReport(path, (Problem(ProblemKind.NOT_ZIP, None,
                                            f"not a readable ZIP file ({exc}): cut short, damaged, or not a copy "
                                            "package"),))


def _verify_open(path: Path, zf: zipfile.ZipFile, raw: IO[bytes], expected: str | None) -> PackageReport:
    problems: list[Problem] = []
    infos = zf.infolist()
    members = {info.filename: info for info in infos}
    problems.extend(Problem(ProblemKind.DUPLICATE, name, f"is in the ZIP {count} times")
                    for name, count in sorted(Counter(i.filename for i in infos).items()) if count > 1)
    document = _small_member(zf, raw, members, MANIFEST, problems)
    signature = _small_member(zf, raw, members, SIGNATURE, problems)
    manifest = _parse_manifest(document, problems) if document is not None else None
    if document is None or manifest is None:
        return PackageReport(path, tuple(problems))
    signer_fp = _check_signature(manifest, document, signature, expected, problems)
    entries = _file_entries(manifest, problems)
    listed = {e.name for e in entries} | {MANIFEST, SIGNATURE}
    problems.extend(Problem(ProblemKind.EXTRA, name, "is in the ZIP but not in manifest.json")
                    for name in sorted(set(members) - listed))
    for entry in entries:
        if entry.name not in members:
            problems.append(Problem(ProblemKind.MISSING, entry.name, "is listed in manifest.json but not in the ZIP"))
        else:
            problems.extend(_check_member(zf, raw, members[entry.name], entry))
    return PackageReport(path, tuple(problems), manifest, signer_fp, tuple(entries))


def _small_member(zf: zipfile.ZipFile, raw: IO[bytes], members: Mapping[str, zipfile.ZipInfo], name: str,
                  problems: list[Problem]) -> bytes | None:
    if name not in members:
        problems.append(Problem(ProblemKind.MISSING, name, "is not in the ZIP"))
        return None
    try:
        return b"".join(_member_chunks(zf, raw, members[name]))
    except (zipfile.BadZipFile, zlib.error, EOFError, OSError) as exc:
        problems.append(Problem(ProblemKind.UNREADABLE, name, f"cannot be read: {exc}"))
        return None


def _member_chunks(zf: zipfile.ZipFile, raw: IO[bytes], info: zipfile.ZipInfo) -> Iterator[bytes]:
    """A member's bytes.  Stored members (all of a package's) are read straight from the file, not
    through zipfile, whose CRC check would stop at the last chunk and hide which bytes changed: the
    SHA-256 against the manifest is the check that counts, the CRC is reported beside it."""
    if info.compress_type != zipfile.ZIP_STORED:
        with zf.open(info) as member:
            while chunk := member.read(_CHUNK):
                yield chunk
        return
    raw.seek(info.header_offset)
    header = raw.read(_LOCAL_HEADER.size)
    if len(header) != _LOCAL_HEADER.size or header[:4] != b"PK\x03\x04":
        raise zipfile.BadZipFile("its local header is missing")
    name_length, extra_length = _LOCAL_HEADER.unpack(header)[-2:]
    if raw.read(name_length) != info.orig_filename.encode("utf-8" if info.flag_bits & 0x800 else "cp437"):
        raise zipfile.BadZipFile("its local header names another file")
    raw.seek(extra_length, os.SEEK_CUR)
    left = info.compress_size
    while left:
        chunk = raw.read(min(left, _CHUNK))
        if not chunk:
            raise EOFError(f"the ZIP ends {left} bytes before the member does")
        left -= len(chunk)
        yield chunk


def _parse_manifest(document: bytes, problems: list[Problem]) -> dict[str, Any] | None:
    try:
        manifest = json.loads(document.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        problems.append(Problem(ProblemKind.MANIFEST, MANIFEST, f"is not UTF-8 JSON: {exc}"))
        return None
    if not isinstance(manifest, dict):
        problems.append(Problem(ProblemKind.MANIFEST, MANIFEST, "is not a JSON object"))
        return None
    if (manifest.get("format"), manifest.get("format_version")) != (FORMAT, FORMAT_VERSION):
        problems.append(Problem(ProblemKind.MANIFEST, MANIFEST,
                                f"is not a {FORMAT} version {FORMAT_VERSION} (format {manifest.get('format')!r}, "
                                f"version {manifest.get('format_version')!r})"))
    return manifest


def _check_signature(manifest: dict[str, Any], document: bytes, signature: bytes | None, expected: str | None,
                     problems: list[Problem]) -> str | None:
    """The fingerprint of the key the manifest names, after checking the signature with it."""
    public = _manifest_key(manifest, problems)
    if public is None:
        return None
    signer_fp = fingerprint(_raw_public(public))
    if signature is not None:
        try:
            public.verify(signature, document)
        except InvalidSignature:
            problems.append(Problem(ProblemKind.SIGNATURE, MANIFEST,
                                    "does not match manifest.sig: the manifest was changed after it was signed, "
                                    "or the signature is not its own"))
    if expected is not None and signer_fp != expected:
        problems.append(Problem(ProblemKind.FINGERPRINT, SIGNATURE,
                                f"was made with key {signer_fp}, not the expected {expected}: "
                                "not signed by the device named on the form"))
    return signer_fp


def _manifest_key(manifest: dict[str, Any], problems: list[Problem]) -> Ed25519PublicKey | None:
    """The signer's key, and the manifest's other forms of it (PEM, fingerprint) agreeing with it,
    so a person checking by hand with either form checks the same key."""
    signer = manifest.get("signer")
    raw_key = signer.get("public_key") if isinstance(signer, dict) else None
    try:
        public = Ed25519PublicKey.from_public_bytes(bytes.fromhex(raw_key)) if isinstance(raw_key, str) else None
    except ValueError:
        public = None
    if public is None:
        problems.append(Problem(ProblemKind.MANIFEST, MANIFEST, "has no Ed25519 public key under signer.public_key"))
        return None
    if _signer(public) != signer:
        problems.append(Problem(ProblemKind.MANIFEST, MANIFEST,
                                "signer's PEM, fingerprint or algorithm do not agree with its public key"))
    return public


def _file_entries(manifest: dict[str, Any], problems: list[Problem]) -> list[FileEntry]:
    files = manifest.get("files")
    if not isinstance(files, list):
        problems.append(Problem(ProblemKind.MANIFEST, MANIFEST, "has no list of files"))
        return []
    entries = []
    for item in files:
        entry = _file_entry(item)
        if entry is None:
            problems.append(Problem(ProblemKind.MANIFEST, MANIFEST,
                                    f"has a file entry that is not a name, size and sha256: {item!r}"))
        else:
            entries.append(entry)
    return entries


def _file_entry(item: object) -> FileEntry | None:
    if not isinstance(item, dict):
        return None
    name, size, sha256 = item.get("name"), item.get("size"), item.get("sha256")
    if isinstance(name, str) and isinstance(size, int) and isinstance(sha256, str):
        return FileEntry(name, size, sha256)
    return None


def _check_member(zf: zipfile.ZipFile, raw: IO[bytes], info: zipfile.ZipInfo, entry: FileEntry) -> list[Problem]:
    digest = hashlib.sha256()
    size = crc = 0
    try:
        for chunk in _member_chunks(zf, raw, info):
            digest.update(chunk)
            size += len(chunk)
            crc = zlib.crc32(chunk, crc)
    except (zipfile.BadZipFile, zlib.error, EOFError, OSError) as exc:
        return [Problem(ProblemKind.UNREADABLE, entry.name, f"cannot be read: {exc}")]
    problems = []
    if size != entry.size:
        problems.append(Problem(ProblemKind.SIZE, entry.name, f"is {size} bytes, the manifest says {entry.size}"))
    if digest.hexdigest() != entry.sha256:
        problems.append(Problem(ProblemKind.SHA256, entry.name, f"has SHA-256 {digest.hexdigest()}, the manifest "
                                                                f"says {entry.sha256}: not the copy as made"))
    if crc != info.CRC:
        problems.append(Problem(ProblemKind.CRC, entry.name, "does not match the CRC-32 in the ZIP directory"))
    return problems

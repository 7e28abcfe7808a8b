"""The copy package (複製データ) as its recipient and an auditor meet it, made from recordings
replayed from the public captures: the WAV inside is the sealed WAV byte for byte, any ZIP tool
reads it, OpenSSL checks its signature without our code, and every kind of tampering is caught
and named, by the function and by `callrec copies verify`."""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
import shutil
import struct
import subprocess
import sys
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from access.errors import PackageError
from access.package import (
    MANIFEST,
    README,
    SIGNATURE,
    PackageInfo,
    ProblemKind,
    fingerprint,
    normalize_fingerprint,
    signing_fingerprint,
    verify_package,
    write_package,
)
from callrec.cli import build_parser
from storage.index import CallRow
from storage.keys import MasterKey
from storage.records import sealed_files
from storage.store import Store
from tests.interop import capture, run_cli, side_file_bytes

TOKYO = ZoneInfo("Asia/Tokyo")
NUMBER = "C2026-0001"
WAV = f"{NUMBER}.wav"
SIDE = f"{NUMBER}.wav.ch0.rtp.pcap"


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Three sealed recordings: two G.711 calls (WAV only), one G.722 call (WAV and a side file)."""
    folder = tmp_path_factory.mktemp("package") / "data"
    for name in ("sip-rtp-g711.pcap", "sip-rtp-g722.pcap"):
        run_cli("replay", capture(name), "--data-dir", folder)
    return folder


@pytest.fixture
def store(data: Path) -> Iterator[Store]:
    with Store.open(data, TOKYO) as opened:
        yield opened


def _row(store: Store, *, side_files: bool) -> CallRow:
    return next(r for r in store.index.kept() if bool(r.side_files) == side_files)


def manifest_for(row: CallRow, number: str = NUMBER) -> dict:
    return {
        "copy_number": number,
        "call": {"id": row.id, "started_at": row.started_at, "duration": row.duration,
                 "remote_number": row.remote_number, "sha256": row.sha256},
        "purpose": "本人からの開示請求 (個人情報の保護に関する法律 第76条)",
        "approved_by": "管理責任者 総務課長",
        "recipient": {"name": "請求者", "conditions": ["目的外に利用しないこと", "第三者に提供しないこと",
                                                     "期限までに廃棄し、その旨を報告すること"]},
        "disposal_deadline": "2027-03-31",
    }


def make(folder: Path, store: Store, row: CallRow, name: str = f"{NUMBER}.zip") -> tuple[Path, PackageInfo]:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    return path, write_package(path, sealed_files(store, row), manifest_for(row), store.master)


@pytest.fixture
def g722(tmp_path: Path, store: Store) -> tuple[Path, PackageInfo]:
    """A package with a side file, the fullest kind."""
    return make(tmp_path / "made", store, _row(store, side_files=True))


def members(path: Path) -> dict[str, bytes]:
    with zipfile.ZipFile(path) as zf:
        return {info.filename: zf.read(info) for info in zf.infolist()}


def rezip(path: Path, content: dict[str, bytes]) -> Path:
    out = path.with_name("tampered.zip")
    with zipfile.ZipFile(out, "w") as zf:
        for name, blob in content.items():
            zf.writestr(name, blob)
    return out


def copies_cli(*argv: str | Path) -> int:
    """`callrec copies ...` as the main parser runs it."""
    args = build_parser().parse_args(["copies", *map(str, argv)])
    return int(args.func(args))


def test_the_wav_inside_is_the_sealed_wav_as_calls_audio_hands_it_out(tmp_path: Path, store: Store,
                                                                       g722: tuple[Path, PackageInfo]) -> None:
    path, info = g722
    row = _row(store, side_files=True)
    handed = tmp_path / "handed.wav"
    run_cli("calls", "audio", row.id, "-o", handed, "--reason", "複製データとの照合", "--data-dir", store.data_dir)
    inside = members(path)
    assert inside[WAV] == handed.read_bytes()
    assert hashlib.sha256(inside[WAV]).hexdigest() == row.sha256 == info.files[1].sha256
    side = row.side_files[0]
    assert inside[SIDE] == side_file_bytes(store.data_dir, row.as_dict())
    assert hashlib.sha256(inside[SIDE]).hexdigest() == side.sha256
    assert info.sha256 == hashlib.sha256(path.read_bytes()).hexdigest() and info.size == path.stat().st_size
    assert info.copy_number == NUMBER and info.fingerprint == signing_fingerprint(store.master)


def test_the_format_is_a_plain_stored_zip_with_a_signed_sorted_manifest(store: Store,
                                                                        g722: tuple[Path, PackageInfo]) -> None:
    path, info = g722
    with zipfile.ZipFile(path) as zf:
        assert zf.testzip() is None
        infos = zf.infolist()
    assert [i.filename for i in infos] == [README, WAV, SIDE, MANIFEST, SIGNATURE]
    assert {(i.compress_type, i.date_time, i.external_attr >> 16) for i in infos} == {
        (zipfile.ZIP_STORED, (1980, 1, 1, 0, 0, 0), 0o100600)}
    inside = members(path)
    manifest = json.loads(inside[MANIFEST])
    assert inside[MANIFEST] == (json.dumps(manifest, ensure_ascii=False, sort_keys=True, indent=2) + "\n").encode()
    row = _row(store, side_files=True)
    assert {k: manifest[k] for k in manifest_for(row)} == manifest_for(row)
    assert (manifest["format"], manifest["format_version"]) == ("callrec copy package", 1)
    assert manifest["files"] == [{"name": n, "size": len(inside[n]), "sha256": hashlib.sha256(inside[n]).hexdigest()}
                                 for n in (README, WAV, SIDE)]
    signer = manifest["signer"]
    assert signer["algorithm"] == "Ed25519" and signer["fingerprint"] == info.fingerprint
    assert fingerprint(bytes.fromhex(signer["public_key"])) == info.fingerprint
    assert len(inside[SIGNATURE]) == 64
    readme = inside[README].decode("utf-8-sig")
    assert "copies verify C2026-0001.zip" in readme and "sha256sum" in readme and info.fingerprint in readme
    assert "複製" in readme and "openssl pkeyutl -verify" in readme
    report = verify_package(path, info.fingerprint)
    assert report.ok and report.problems == () and report.copy_number == NUMBER


def test_a_package_without_side_files_holds_the_wav_alone(tmp_path: Path, store: Store) -> None:
    path, info = make(tmp_path, store, _row(store, side_files=False))
    assert [f.name for f in info.files] == [README, WAV]
    assert list(members(path)) == [README, WAV, MANIFEST, SIGNATURE]
    assert verify_package(path).ok


def test_the_same_copy_written_twice_is_the_same_file(tmp_path: Path, store: Store) -> None:
    row = _row(store, side_files=True)
    first, _ = make(tmp_path / "a", store, row)
    second, _ = make(tmp_path / "b", store, row)
    assert first.read_bytes() == second.read_bytes()


def test_unzip_reads_it_and_sha256sum_agrees_with_the_manifest(tmp_path: Path,
                                                               g722: tuple[Path, PackageInfo]) -> None:
    assert shutil.which("unzip"), "unzip is missing: install Debian's unzip (.ci/run does)"
    path, _ = g722
    tested = subprocess.run(["unzip", "-t", path], capture_output=True, text=True, check=False)
    assert tested.returncode == 0 and "No errors detected" in tested.stdout
    out = tmp_path / "unpacked"
    subprocess.run(["unzip", "-q", path, "-d", out], check=True)
    manifest = json.loads((out / MANIFEST).read_bytes())
    listing = "".join(f"{f['sha256']}  {f['name']}\n" for f in manifest["files"])
    checked = subprocess.run(["sha256sum", "-c", "-"], cwd=out, input=listing, capture_output=True, text=True,
                             check=False)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert checked.stdout.count(": OK") == 3


def test_openssl_verifies_the_signature_with_the_manifests_key(tmp_path: Path,
                                                               g722: tuple[Path, PackageInfo]) -> None:
    """The format checked by a tool that is not ours, as the README tells the recipient to; and the
    same tool refuses a manifest edited by one character, so its "verified" means something."""
    assert shutil.which("openssl"), "openssl is missing: install Debian's openssl (.ci/run does)"
    path, _ = g722
    inside = members(path)
    for name in (MANIFEST, SIGNATURE):
        (tmp_path / name).write_bytes(inside[name])
    (tmp_path / "key.pem").write_text(json.loads(inside[MANIFEST])["signer"]["public_key_pem"])
    argv = ["openssl", "pkeyutl", "-verify", "-pubin", "-inkey", "key.pem", "-rawin", "-in", MANIFEST,
            "-sigfile", SIGNATURE]
    good = subprocess.run(argv, cwd=tmp_path, capture_output=True, text=True, check=False)
    assert good.returncode == 0 and "Signature Verified Successfully" in good.stdout
    (tmp_path / MANIFEST).write_bytes(inside[MANIFEST].replace(b"2027-03-31", b"2037-03-31"))
    bad = subprocess.run(argv, cwd=tmp_path, capture_output=True, text=True, check=False)
    assert bad.returncode != 0 and "Signature Verification Failure" in bad.stdout


def _flip_wav_byte(path: Path) -> Path:
    with zipfile.ZipFile(path) as zf:
        info = zf.getinfo(WAV)
    raw = bytearray(path.read_bytes())
    name_length, extra_length = struct.unpack_from("<HH", raw, info.header_offset + 26)
    raw[info.header_offset + 30 + name_length + extra_length + info.file_size // 2] ^= 0x01
    path.write_bytes(bytes(raw))
    return path


def _add_member(path: Path) -> Path:
    with zipfile.ZipFile(path, "a") as zf:
        zf.writestr("note.txt", "added later")
    return path


def _remove_side_file(path: Path) -> Path:
    return rezip(path, {n: b for n, b in members(path).items() if n != SIDE})


def _remove_signature(path: Path) -> Path:
    return rezip(path, {n: b for n, b in members(path).items() if n != SIGNATURE})


def _edit_manifest(path: Path) -> Path:
    content = members(path)
    content[MANIFEST] = content[MANIFEST].replace("2027-03-31".encode(), "2037-03-31".encode())
    return rezip(path, content)


def _replace_wav_and_its_hash(path: Path) -> Path:
    """The edit a forger would make: new audio, its hash put in the manifest, the old signature."""
    content = members(path)
    old = hashlib.sha256(content[WAV]).hexdigest()
    content[WAV] = content[WAV][:-1] + bytes([content[WAV][-1] ^ 0xFF])
    content[MANIFEST] = content[MANIFEST].replace(old.encode(), hashlib.sha256(content[WAV]).hexdigest().encode())
    return rezip(path, content)


def _resign_with_another_key(path: Path) -> Path:
    content = members(path)
    manifest = json.loads(content[MANIFEST])
    other = Ed25519PrivateKey.generate()
    public = other.public_key()
    raw = public.public_bytes(Encoding.Raw, PublicFormat.Raw)
    manifest["signer"] = {"algorithm": "Ed25519", "public_key": raw.hex(), "fingerprint": fingerprint(raw),
                          "public_key_pem": public.public_bytes(Encoding.PEM,
                                                                PublicFormat.SubjectPublicKeyInfo).decode()}
    manifest["disposal_deadline"] = "2037-03-31"
    content[MANIFEST] = (json.dumps(manifest, ensure_ascii=False, sort_keys=True, indent=2) + "\n").encode()
    content[SIGNATURE] = other.sign(content[MANIFEST])
    return rezip(path, content)


def _truncate(path: Path) -> Path:
    path.write_bytes(path.read_bytes()[:-200])
    return path


def _not_a_zip(path: Path) -> Path:
    path.write_bytes(b"RIFF" + bytes(100))
    return path


TAMPERING: dict[str, tuple[Callable[[Path], Path], set[tuple[ProblemKind, str | None]]]] = {
    "a flipped byte in the WAV": (_flip_wav_byte, {(ProblemKind.SHA256, WAV), (ProblemKind.CRC, WAV)}),
    "a member added": (_add_member, {(ProblemKind.EXTRA, "note.txt")}),
    "a member removed": (_remove_side_file, {(ProblemKind.MISSING, SIDE)}),
    "the signature removed": (_remove_signature, {(ProblemKind.MISSING, SIGNATURE)}),
    "manifest.json edited": (_edit_manifest, {(ProblemKind.SIGNATURE, MANIFEST)}),
    "the WAV replaced and its hash edited": (_replace_wav_and_its_hash, {(ProblemKind.SIGNATURE, MANIFEST)}),
    "re-signed with another key": (_resign_with_another_key, {(ProblemKind.FINGERPRINT, SIGNATURE)}),
    "a truncated ZIP": (_truncate, {(ProblemKind.NOT_ZIP, None)}),
    "not a ZIP at all": (_not_a_zip, {(ProblemKind.NOT_ZIP, None)}),
}


@pytest.mark.parametrize("case", list(TAMPERING))
def test_each_tampering_is_caught_and_named(case: str, g722: tuple[Path, PackageInfo],
                                            capsys: pytest.CaptureFixture[str]) -> None:
    made, info = g722
    tamper, expected = TAMPERING[case]
    path = tamper(made)
    report = verify_package(path, info.fingerprint)
    assert {(p.kind, p.member) for p in report.problems} == expected
    assert not report.ok
    assert copies_cli("verify", path, "--fingerprint", info.fingerprint.lower().replace("-", " ")) == 1
    out = capsys.readouterr().out.splitlines()
    assert out == [f"{path}: {p}" for p in report.problems] + [f"{path}: NOT OK: {len(expected)} problem(s)"]
    assert copies_cli("verify", path, "--fingerprint", info.fingerprint, "--json") == 1
    as_json = json.loads(capsys.readouterr().out)
    assert as_json["ok"] is False
    assert {(p["kind"], p["member"]) for p in as_json["problems"]} == {(str(k), m) for k, m in expected}


def test_a_package_re_signed_by_another_key_passes_only_without_the_forms_fingerprint(
        g722: tuple[Path, PackageInfo]) -> None:
    """Why the form carries the fingerprint: a manifest re-signed with any key is self-consistent."""
    made, info = g722
    path = _resign_with_another_key(made)
    alone = verify_package(path)
    assert alone.ok and alone.fingerprint != info.fingerprint
    assert not verify_package(path, info.fingerprint).ok


def test_the_cli_says_ok_and_which_key_signed(g722: tuple[Path, PackageInfo],
                                             capsys: pytest.CaptureFixture[str]) -> None:
    path, info = g722
    assert copies_cli("verify", path, "--fingerprint", info.fingerprint) == 0
    out = capsys.readouterr().out
    assert f"{path}: ok: copy {NUMBER}, 3 files" in out and info.fingerprint in out
    assert copies_cli("verify", path, "--json") == 0
    report = json.loads(capsys.readouterr().out)
    assert report["ok"] is True and report["fingerprint"] == info.fingerprint and report["problems"] == []
    assert copies_cli("verify", path, "--fingerprint", "not-a-fingerprint") == 2
    assert "not a signing-key fingerprint" in capsys.readouterr().err


def test_a_file_not_matching_its_seal_is_refused_and_leaves_nothing(tmp_path: Path, store: Store) -> None:
    row = _row(store, side_files=True)
    for broken in (0, 1):
        files = sealed_files(store, row)
        files[broken] = dataclasses.replace(files[broken], sha256="0" * 64)
        with pytest.raises(PackageError, match="does not match its sealed SHA-256"):
            write_package(tmp_path / "C2026-0002.zip", files, manifest_for(row, "C2026-0002"), store.master)
        assert list(tmp_path.iterdir()) == []


def test_an_existing_path_is_never_replaced(tmp_path: Path, store: Store) -> None:
    row = _row(store, side_files=False)
    existing = tmp_path / f"{NUMBER}.zip"
    existing.write_bytes(b"someone else's file")
    (tmp_path / "dangling.zip").symlink_to(tmp_path / "nowhere")
    for path in (existing, tmp_path / "dangling.zip"):
        with pytest.raises(PackageError, match="never overwrites"):
            write_package(path, sealed_files(store, row), manifest_for(row), store.master)
    assert existing.read_bytes() == b"someone else's file"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["C2026-0001.zip", "dangling.zip"]


@pytest.mark.parametrize("change, message", [
    ({"copy_number": "../C2026-0001"}, "copy_number"),
    ({"copy_number": None}, "copy_number"),
    ({"files": []}, "may not set files"),
    ({"signer": "me"}, "may not set signer"),
    ({"made_at": object()}, "cannot be written as JSON"),
])
def test_a_manifest_the_package_cannot_hold_is_refused_before_writing(tmp_path: Path, store: Store, change: dict,
                                                                      message: str) -> None:
    row = _row(store, side_files=False)
    with pytest.raises(PackageError, match=message):
        write_package(tmp_path / "x.zip", sealed_files(store, row), {**manifest_for(row), **change}, store.master)
    assert list(tmp_path.iterdir()) == []


def test_the_signing_key_follows_the_master_key(data: Path, store: Store) -> None:
    with Store.open(data, TOKYO) as again:
        assert signing_fingerprint(again.master) == signing_fingerprint(store.master)
    other = signing_fingerprint(MasterKey(os.urandom(32)))
    assert other != signing_fingerprint(store.master)
    assert re.fullmatch(r"[0-9A-F]{4}(-[0-9A-F]{4}){7}", other)
    assert normalize_fingerprint(other.lower().replace("-", " ")) == other


def test_verifying_needs_only_the_package(tmp_path: Path, g722: tuple[Path, PackageInfo]) -> None:
    """A recipient has no data folder and no key: a fresh interpreter elsewhere checks the copy."""
    path, info = g722
    code = ("import sys; from pathlib import Path; from access.package import verify_package; "
            "r = verify_package(Path(sys.argv[1]), sys.argv[2]); print(r.ok, r.copy_number)")
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    done = subprocess.run([sys.executable, "-c", code, path, info.fingerprint], cwd=tmp_path, env=env,
                          capture_output=True, text=True, check=True)
    assert done.stdout.split() == ["True", NUMBER]

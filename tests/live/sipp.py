"""SIPp batches across the switch: one callee (UAS) and one or more callers
(UAC) per batch, each batch in a folder of its own with its own audio, so
that audio of one batch can never be mistaken for another's."""
from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from tests.sipp.captures import CALLER, EXTENSION, HERE as SCENARIOS, MEDIA_PORT, SIP_PORT
from tests.sipp.netns import Lab, LabError
from tests.sipp.rtpfiles import PAYLOAD_TYPES, sweep, talk, write_rtp_pcap

from .span import UAC_ADDRESS, UAS_ADDRESS, Span

CODEC = "PCMU"
SIPP_TIMEOUT_SECONDS = 60
# The caller hangs up this long after its audio has been sent, so no RTP
# of SIPp's pcap player is still under way when the BYE goes out.
BYE_AFTER_AUDIO = 0.3


@dataclass(frozen=True, slots=True)
class Caller:
    """One SIPp UAC process of a batch."""

    calls: int
    limit: int
    rate: float = 4.0
    callee: str = EXTENSION
    sip_port: int = SIP_PORT + 1


def _audio(run_dir: Path, seconds: float, seed: int) -> None:
    """Both parties' RTP for play_pcap_audio: distinct sweeps per party and
    per batch (seed), sequence numbers and timestamps starting anywhere."""
    for party, (name, low, high, ssrc, seq, ts) in enumerate((
            ("uac_audio.pcap", 300, 2600, 0x5EED0001, 1000, 160000),
            ("uas_audio.pcap", 2400, 500, 0x5EED0002, 64000, 4294960000))):
        audio = sweep(seconds, low + 10 * seed, high + 10 * seed, seed * 2 + party)
        write_rtp_pcap(run_dir / name, talk(CODEC, audio, ssrc=ssrc + seed * 16, seq=seq, timestamp=ts))


def _tail(path: Path, lines: int = 15) -> str:
    text = path.read_text(errors="replace").splitlines() if path.exists() else [f"({path.name} not written)"]
    return "\n".join(text[-lines:])


class Batch:
    """Calls of one batch under way; `wait()` says how many SIPp counts as
    successful.

    SIPp gives each call media ports counting up from -mp; every batch and
    every caller starts from ports of its own, so that the SDP of one call
    never names an endpoint another call used (tshark's reading of the wire
    groups RTP into calls by those endpoints)."""

    def __init__(self, span: Span, run_dir: Path, callers: tuple[Caller, ...], audio_seconds: float,
                 seed: int) -> None:
        self.lab: Lab = span.lab
        self.run_dir = run_dir
        run_dir.mkdir(parents=True)
        _audio(run_dir, audio_seconds, seed)
        pause_ms = int((audio_seconds + BYE_AFTER_AUDIO) * 1000)
        total = sum(c.calls for c in callers)
        self._logs: list[IO[bytes]] = []
        self.uas = self.lab.start(span.uas, self._sipp("uas", "uas_answer.xml", UAS_ADDRESS, "-p", str(SIP_PORT),
                                                       "-mp", str(self.media_port(seed, 0)), "-m", str(total)),
                                  cwd=run_dir, stdout=self._log("uas.log"), stderr=subprocess.STDOUT)
        self.lab.wait_for_udp_port(span.uas, SIP_PORT, 10)
        self.uacs: list[subprocess.Popen[bytes]] = []
        for i, c in enumerate(callers):
            argv = self._sipp(f"uac{i}", "uac_call.xml", UAC_ADDRESS, "-p", str(c.sip_port),
                              "-mp", str(self.media_port(seed, i + 1)), "-key", "caller", CALLER,
                              "-s", c.callee, "-m", str(c.calls), "-l", str(c.limit), "-r", str(c.rate),
                              "-d", str(pause_ms),
                              "-trace_stat", "-stf", str(run_dir / f"uac{i}_stat.csv"),
                              f"{UAS_ADDRESS}:{SIP_PORT}")
            self.uacs.append(self.lab.start(span.uac, argv, cwd=run_dir, stdout=self._log(f"uac{i}.log"),
                                            stderr=subprocess.STDOUT))

    @staticmethod
    def media_port(seed: int, party: int) -> int:
        """Room for 250 calls (4 ports each) per party and batch."""
        return MEDIA_PORT + seed * 4000 + party * 1000

    def _log(self, name: str) -> IO[bytes]:
        handle = (self.run_dir / name).open("wb")
        self._logs.append(handle)
        return handle

    def _sipp(self, role: str, scenario: str, address: str, *extra: str) -> list[str]:
        return ["sipp", "-sf", str(SCENARIOS / scenario), "-i", address, "-mi", address,
                "-key", "pt", str(PAYLOAD_TYPES[CODEC]), "-key", "codec", CODEC, "-nostdin",
                "-timeout", f"{SIPP_TIMEOUT_SECONDS}s", "-timeout_error",
                "-trace_err", "-error_file", str(self.run_dir / f"{role}_errors.log"), *extra]

    def successful(self, index: int) -> int:
        """SuccessfulCall(C) of one caller's final statistics line."""
        lines = (self.run_dir / f"uac{index}_stat.csv").read_text().splitlines()
        header, last = lines[0].split(";"), lines[-1].split(";")
        return int(dict(zip(header, last))["SuccessfulCall(C)"])

    def wait(self, timeout: float = SIPP_TIMEOUT_SECONDS + 30) -> int:
        """Every SIPp of the batch ended well; the callers' successful calls."""
        failures = []
        try:
            for i, proc in enumerate(self.uacs):
                code = self.lab.finish(proc, timeout)
                if code != 0:
                    failures.append(f"UAC {i} exited {code}:\n{_tail(self.run_dir / f'uac{i}.log')}\n"
                                    f"{_tail(self.run_dir / f'uac{i}_errors.log')}")
            code = self.lab.stop(self.uas) if failures else self.lab.finish(self.uas, timeout)
            if code != 0 and not failures:
                failures.append(f"UAS exited {code}:\n{_tail(self.run_dir / 'uas.log')}\n"
                                f"{_tail(self.run_dir / 'uas_errors.log')}")
        finally:
            for handle in self._logs:
                handle.close()
        if failures:
            raise LabError(f"SIPp batch {self.run_dir.name}: " + "\n".join(failures))
        return sum(self.successful(i) for i in range(len(self.uacs)))

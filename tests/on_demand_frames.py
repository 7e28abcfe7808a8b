"""Calls on an on-demand line as the mirror port shows them: the staff side's RTP with RFC 4733
digits keyed into it (same SSRC and sequence space, as phones send them), and the policy the
on-demand tests share (call_frames' inbound call goes to 0263111111, made an on-demand line)."""
from __future__ import annotations

import random

from tests.builders import PBX, TRUNK, rtp, udp_frame
from tests.call_frames import T0, bye, media, signalling

AUTOMATIC = "network: {trunk: [203.0.113.0/28]}\n"
LINE = "0263111111"
CALLER_NUMBER = "0312345678"
START, STOP = "*1", "#9"


def on_demand_policy(first_minutes: float = 5, last_minutes: float = 15) -> str:
    return AUTOMATIC + (
        "on_demand:\n"
        "  clause: 品川区 第2条(2)\n"
        f"  start_code: '{START}'\n"
        f"  stop_code: '{STOP}'\n"
        f"  keep_first_minutes: {first_minutes}\n"
        f"  keep_last_minutes: {last_minutes}\n"
        f"  lines: [{{number: '{LINE}', label: 相談窓口}}]\n")


EVENT_CODES = {**{str(n): n for n in range(10)}, "*": 10, "#": 11}


def staff_side(t: float, seconds: float, keyed: dict[float, str], *, src: tuple[str, int] = (PBX, 40000),
               dst: tuple[str, int] = (TRUNK, 20000), ssrc: int = 2, seed: int = 2) -> list[tuple[float, bytes]]:
    """One side's 20 ms packets from t for `seconds`; at each offset in `keyed` its digits are sent
    as RFC 4733 events in place of the audio, 200 ms each, 300 ms apart."""
    rng = random.Random(seed)
    digit_at: dict[int, tuple[int, int]] = {}
    for offset, digits in keyed.items():
        for k, digit in enumerate(digits):
            first = round((offset + 0.3 * k) / 0.02)
            for n in range(first, first + 10):
                digit_at[n] = (EVENT_CODES[digit], first)
    frames = []
    for n in range(int(seconds * 50)):
        audio = bytes(rng.randrange(256) for _ in range(160))
        if n in digit_at:
            code, first = digit_at[n]
            units = (n - first + 1) * 160
            end = n == first + 9
            body = bytes([code, (0x80 if end else 0) | 10]) + units.to_bytes(2, "big")
            payload = rtp(n, first * 160, ssrc, body, pt=101, marker=n == first)
        else:
            payload = rtp(n, n * 160, ssrc, audio)
        frames.append((t + n * 0.02, udp_frame(*src, *dst, payload, ident=n)))
    return frames


def call(seconds: float, keyed: dict[float, str] | None = None, remote_keyed: dict[float, str] | None = None,
         call_id: str = "c1@x", *, caller: str = CALLER_NUMBER, callee: str = LINE, start: float = T0,
         tport: int = 20000, pport: int = 40000, seed: int = 1) -> list[tuple[float, bytes]]:
    """An inbound call (to the on-demand line by default): INVITE at `start`, answered 1 s later,
    both sides talking for `seconds`, BYE 0.2 s after; `keyed` digits on the staff side,
    `remote_keyed` on the caller's."""
    trunk, pbx = (TRUNK, tport), (PBX, pport)
    staff = staff_side(start + 1.06, seconds, keyed or {}, src=pbx, dst=trunk, ssrc=seed + 1, seed=seed + 1)
    other = (staff_side(start + 1.05, seconds, remote_keyed, src=trunk, dst=pbx, ssrc=seed, seed=seed)
             if remote_keyed else media(start + 1.05, seconds, src=trunk, dst=pbx, ssrc=seed, seed=seed)[0])
    end = start + 1.05 + seconds + 0.2
    frames = signalling(call_id, callee=callee, caller=caller, t=start, tport=tport, pport=pport) + staff + other
    return sorted(frames + bye(end, call_id, callee, caller), key=lambda f: f[0])

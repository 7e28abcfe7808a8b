"""Pictures drawn on the server as SVG: no script, nothing fetched, legible on an office PC.

Pure functions: numbers in, markup out (every label escaped)."""
from __future__ import annotations

from html import escape

import numpy as np
import numpy.typing as npt

__all__ = ["bar_chart", "waveform"]


def bar_chart(values: list[float], labels: list[str], unit: str, width: int = 720, height: int = 180) -> str:
    """One bar per value (calls per hour, bytes per day), labelled below, the largest value on top."""
    top = max(values, default=0) or 1
    n = max(len(values), 1)
    slot = (width - 40) / n
    bars = []
    for i, (value, label) in enumerate(zip(values, labels)):
        h = (height - 40) * value / top
        x = 30 + i * slot
        bars.append(f'<rect x="{x + 1:.1f}" y="{height - 20 - h:.1f}" width="{max(slot - 2, 1):.1f}" '
                    f'height="{h:.1f}" fill="#3b6ea5"><title>{escape(label)}: {value:g} {escape(unit)}</title></rect>')
        if n <= 24 or i % max(n // 12, 1) == 0:
            bars.append(f'<text x="{x + slot / 2:.1f}" y="{height - 6}" font-size="10" '
                        f'text-anchor="middle">{escape(label)}</text>')
    return (f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}" role="img" '
            f'width="100%" height="{height}"><text x="4" y="12" font-size="10">{top:g} {escape(unit)}</text>'
            f'<line x1="30" y1="{height - 20}" x2="{width - 10}" y2="{height - 20}" stroke="#888"/>'
            + "".join(bars) + "</svg>")


def _envelope(samples: npt.NDArray[np.int16], columns: int) -> tuple[npt.NDArray[np.float64], ...]:
    if samples.size == 0:
        return np.zeros(columns), np.zeros(columns)
    edges = np.linspace(0, samples.size, columns + 1).astype(int)
    lows = np.array([samples[a:b].min() if b > a else 0 for a, b in zip(edges[:-1], edges[1:])]) / 32768.0
    highs = np.array([samples[a:b].max() if b > a else 0 for a, b in zip(edges[:-1], edges[1:])]) / 32768.0
    return lows, highs


def waveform(channels: list[npt.NDArray[np.int16]], names: list[str], width: int = 720, lane: int = 70) -> str:
    """Both channels' envelopes (min and max per column), one lane each, staff side first."""
    parts = []
    for index, (samples, name) in enumerate(zip(channels, names)):
        lows, highs = _envelope(samples, width)
        middle = lane * index + lane / 2 + 4
        points = " ".join(f"{x},{middle - hi * lane / 2:.1f} {x},{middle - lo * lane / 2:.1f}"
                          for x, (lo, hi) in enumerate(zip(lows, highs)))
        parts.append(f'<polyline fill="none" stroke="#2b5d8a" stroke-width="1" points="{points}"/>'
                     f'<rect x="2" y="{lane * index + 3}" width="{7 * len(name) + 6}" height="14" fill="#fff" '
                     f'fill-opacity="0.85"/><text x="5" y="{lane * index + 14}" font-size="11" '
                     f'font-family="sans-serif">{escape(name)}</text>')
    return (f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {lane * len(channels) + 8}" '
            f'width="100%" role="img">' + "".join(parts) + "</svg>")

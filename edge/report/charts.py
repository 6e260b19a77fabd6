"""The report's charts as inline SVG written here (the HTML file fetches nothing): images per day as
stacked bars, the total time per image as a histogram, median and p95 per stage."""

from __future__ import annotations

from html import escape
from typing import Dict, List, Sequence

import numpy as np

from edge.report.data import HistBin, StageTiming


def _nice_max(v: float, whole: bool = False) -> float:
    """A round axis maximum >= v; ``whole``: divisible into 4 whole-number ticks (image counts)."""
    if v <= 0:
        return 4.0 if whole else 1.0
    if whole:  # the tick step is a whole round number: 1, 2, 5, 10, 20, 25, 50, ...
        step = max(1.0, v / 4)
        mag = 10 ** int(np.floor(np.log10(step)))
        return 4.0 * next(t for t in (m * mag for m in (1, 2, 2.5, 5, 10)) if t >= step and t == int(t))
    mag = 10 ** int(np.floor(np.log10(v)))
    return next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= v)


def _svg_with_y_grid(
    label: str, width: int, height: int, left: float, top: float, pw: float, ph: float, ymax: float
) -> List[str]:
    """The opening <svg> tag and five labelled horizontal grid lines from 0 to ``ymax``."""
    out = [
        f'<svg role="img" aria-label="{escape(label)}" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}">'
    ]
    for k in range(5):
        y = top + ph - ph * k / 4
        out.append(
            f'<line x1="{left}" x2="{left + pw}" y1="{y:.1f}" y2="{y:.1f}" stroke="#eee"/>'
            f'<text x="{left - 6}" y="{y + 4:.1f}" text-anchor="end">{ymax * k / 4:g}</text>'
        )
    return out


def svg_stacked_bars(
    categories: Sequence[str],
    series: Dict[str, List[int]],
    colours: Dict[str, str],
    width: int = 1000,
    height: int = 260,
    title: str = "",
) -> str:
    """One stacked bar per category (a day), one segment per series (a label)."""
    left, bottom, top, right = 48, 40, 24, 150
    pw, ph = width - left - right, height - top - bottom
    totals = [sum(s[i] for s in series.values()) for i in range(len(categories))]
    ymax = _nice_max(max(totals, default=0), whole=True)
    out = _svg_with_y_grid(title, width, height, left, top, pw, ph, ymax)
    n = max(1, len(categories))
    slot = pw / n
    bw = max(1.0, min(48.0, slot * 0.7))
    label_every = max(1, int(np.ceil(n / max(1, pw // 80))))
    for i, cat in enumerate(categories):
        x = left + slot * i + (slot - bw) / 2
        y = float(top + ph)
        for name, vals in series.items():
            h = ph * vals[i] / ymax
            if h > 0:
                y -= h
                out.append(
                    f'<rect x="{x:.1f}" y="{y:.1f}" width="{bw:.1f}" height="{h:.1f}" '
                    f'fill="{colours[name]}"><title>{escape(cat)} {escape(name)}: {vals[i]}</title></rect>'
                )
        if i % label_every == 0:
            out.append(f'<text x="{x + bw / 2:.1f}" y="{top + ph + 16}" text-anchor="middle">{escape(cat)}</text>')
    for j, name in enumerate(series):
        y = top + 14 * j
        out.append(
            f'<rect x="{left + pw + 16}" y="{y}" width="10" height="10" fill="{colours[name]}"/>'
            f'<text x="{left + pw + 32}" y="{y + 9}">{escape(name)}</text>'
        )
    out.append("</svg>")
    return "".join(out)


def svg_histogram(bins: Sequence[HistBin], width: int = 560, height: int = 220) -> str:
    left, bottom, top, right = 48, 36, 14, 10
    pw, ph = width - left - right, height - top - bottom
    ymax = _nice_max(max((b.count for b in bins), default=0), whole=True)
    bw = pw / max(1, len(bins))
    out = _svg_with_y_grid("total time per image", width, height, left, top, pw, ph, ymax)
    for i, b in enumerate(bins):
        h = ph * b.count / ymax
        rng = f"{b.lo_ms:g}–{b.hi_ms:g} ms" if b.hi_ms is not None else f"≥ {b.lo_ms:g} ms"
        out.append(
            f'<rect x="{left + i * bw + 1:.1f}" y="{top + ph - h:.1f}" width="{max(1.0, bw - 2):.1f}" '
            f'height="{h:.1f}" fill="#1f77b4"><title>{rng}: {b.count}</title></rect>'
        )
        if i % 4 == 0:
            out.append(f'<text x="{left + i * bw:.1f}" y="{top + ph + 14}" text-anchor="middle">{b.lo_ms:g}</text>')
    out.append(f'<text x="{left + pw / 2:.1f}" y="{height - 4}" text-anchor="middle">total ms per image</text></svg>')
    return "".join(out)


def svg_stage_bars(timings: Sequence[StageTiming], width: int = 560, height: int = 220) -> str:
    """Median (dark) over p95 (light) per stage, on one linear axis."""
    rows = [t for t in timings if t.n]
    left, right, top = 80, 60, 10
    pw = width - left - right
    xmax = _nice_max(max((t.p95_ms or 0 for t in rows), default=0))
    rh = (height - top - 20) / max(1, len(rows))
    out = [
        f'<svg role="img" aria-label="per-stage timing" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}">'
    ]
    for i, t in enumerate(rows):
        y = top + i * rh
        w95, w50 = pw * (t.p95_ms or 0) / xmax, pw * (t.median_ms or 0) / xmax
        out.append(
            f'<text x="{left - 6}" y="{y + rh / 2 + 4:.1f}" text-anchor="end">{escape(t.stage)}</text>'
            f'<rect x="{left}" y="{y + 3:.1f}" width="{w95:.1f}" height="{rh - 6:.1f}" fill="#aec7e8">'
            f"<title>{escape(t.stage)} p95 {t.p95_ms:.1f} ms</title></rect>"
            f'<rect x="{left}" y="{y + 3:.1f}" width="{w50:.1f}" height="{rh - 6:.1f}" fill="#1f77b4">'
            f"<title>{escape(t.stage)} median {t.median_ms:.1f} ms</title></rect>"
            f'<text x="{left + w95 + 4:.1f}" y="{y + rh / 2 + 4:.1f}">{t.p95_ms:.1f}</text>'
        )
    out.append(f'<text x="{left}" y="{height - 4}">ms — dark: median, light: p95 (axis to {xmax:g} ms)</text></svg>')
    return "".join(out)

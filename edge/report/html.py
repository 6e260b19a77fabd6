"""The report as ONE self-contained HTML file that opens from a USB stick on any machine.

Nothing is fetched: no scripts, no fonts, no external URLs. Thumbnails and explanation maps are embedded
as ``data:`` URIs, charts are inline SVG written here. Thumbnails come from the original file when it
still exists; a missing or unreadable file is stated in its place. The gallery shows the most urgent
``gallery_limit`` flagged images (every flagged image is still listed in the table), so a window with
thousands of flags stays a file a browser can open.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass
from html import escape
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence

import cv2
import numpy as np
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from edge.imaging.decode import DecodeError, decode_bytes
from edge.imaging.recorded import RecordedFileError, open_recorded
from edge.inference.classifier import Classifier, ModelLoadError
from edge.inference.explain import explain_rgb
from edge.report.query import FlaggedImage, HistBin, ReportData, StageTiming

PALETTE = ["#4c9a2a", "#e6a700", "#d9534f", "#8e44ad", "#1f77b4", "#17becf", "#bcbd22", "#7f7f7f"]
OTHER_COLOUR = "#b0b0b0"
GALLERY_LIMIT = 200

CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,Arial,sans-serif;margin:24px;color:#222;max-width:1200px}
h1{font-size:1.5em;margin-bottom:0} h2{margin-top:1.6em;border-bottom:1px solid #ddd}
.meta{color:#666} .cards{display:flex;gap:12px;flex-wrap:wrap;margin:16px 0}
.card{border:1px solid #ddd;border-radius:6px;padding:10px 16px;min-width:110px}
.card b{display:block;font-size:1.6em} .mal b{color:#c0392b} .rev b{color:#b9770e}
table{border-collapse:collapse;font-size:.9em} th,td{border-bottom:1px solid #eee;padding:3px 8px;text-align:left}
td.n{text-align:right} .path{font-family:monospace;font-size:.85em;word-break:break-all}
.gallery{display:flex;flex-wrap:wrap;gap:14px} .item{border:1px solid #ddd;border-radius:6px;padding:8px;width:430px}
.item img{width:200px;height:200px;object-fit:contain;background:#f4f4f4;margin-right:6px}
.missing{width:200px;height:200px;display:inline-flex;align-items:center;justify-content:center;
background:#fbeaea;color:#a33;font-size:.85em;text-align:center;vertical-align:top;margin-right:6px}
.small{width:120px!important;height:120px!important}
.sample{border-top:1px solid #ddd;margin-top:10px}
.malignant{color:#c0392b;font-weight:bold} .review{color:#b9770e;font-weight:bold} .note{color:#666;font-size:.85em}
svg text{font-size:11px;fill:#333}
"""


@dataclass
class GalleryItem:
    image: FlaggedImage
    thumb_uri: Optional[str]  # None: see ``note``
    map_uri: Optional[str]
    note: Optional[str]  # why there is no thumbnail (file missing, unreadable)
    map_note: Optional[str]  # what the map shows, or why there is none


def _data_uri(rgb: np.ndarray, quality: int = 82) -> str:
    ok, buf = cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise RuntimeError("JPEG encoding failed")
    return "data:image/jpeg;base64," + base64.b64encode(buf.tobytes()).decode("ascii")


def _thumbnail(rgb: np.ndarray, px: int) -> np.ndarray:
    h, w = rgb.shape[:2]
    s = px / max(h, w)
    return cv2.resize(rgb, (max(1, round(w * s)), max(1, round(h * s))), interpolation=cv2.INTER_AREA) if s < 1 else rgb


def gallery_item(
    img: FlaggedImage,
    classifier: Optional[Classifier],
    grid: int = 7,
    thumb_px: int = 200,
    roots: Optional[Sequence[Path]] = None,
) -> GalleryItem:
    """Thumbnail and (with a classifier) explanation map for one flagged image; never raises for a bad file.
    The file is read as :mod:`edge.imaging.recorded` allows (no links, inside ``roots``, the recorded bytes)."""
    try:
        f = open_recorded((img.moved_to, img.path), img.sha256, img.size, roots)
        p, rgb = f.path, decode_bytes(f.data).rgb
    except RecordedFileError as e:
        return GalleryItem(img, None, None, str(e), None)
    except DecodeError as e:
        return GalleryItem(img, None, None, f"file unreadable: {e}", None)
    thumb = _data_uri(_thumbnail(rgb, thumb_px))
    if classifier is None:
        return GalleryItem(img, thumb, None, None, None)
    ex = explain_rgb(rgb, classifier, grid=grid, path=p)
    note = ex.describe()
    if img.model_sha256 and img.model_sha256 != classifier.sha256:
        # A reviewer must know when the map explains a different model than the one that made the call.
        note += (
            f"; map from model {classifier.name} ({classifier.sha256[:12]}), the call was made by "
            f"{img.model_name or '?'} ({img.model_sha256[:12]})"
        )
    return GalleryItem(img, thumb, _data_uri(ex.overlay, 88), None, note)


def build_gallery(
    flagged: Sequence[FlaggedImage],
    classifier: Optional[Classifier] = None,
    grid: int = 7,
    thumb_px: int = 200,
    progress: bool = True,
    console: Optional[Console] = None,
    roots: Optional[Sequence[Path]] = None,
) -> List[GalleryItem]:
    console = console or Console(stderr=True)
    what = "thumbnails and maps" if classifier else "thumbnails"
    items: List[GalleryItem] = []
    with Progress(
        TextColumn(f"[bold]{what}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=console,
        transient=True,
        disable=not progress or not flagged,
    ) as prog:
        task = prog.add_task(what, total=len(flagged))
        for img in flagged:
            items.append(gallery_item(img, classifier, grid=grid, thumb_px=thumb_px, roots=roots))
            prog.advance(task)
    return items


# ---------------------------------------------------------------------------------------------- charts


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


# ----------------------------------------------------------------------------------------------- page


def _table(header: Sequence[str], rows, numeric: Sequence[int] = ()) -> str:
    head = "".join(f"<th>{escape(h)}</th>" for h in header)
    body = "\n".join(
        "<tr>"
        + "".join(
            f'<td class="n">{escape(str(c))}</td>'
            if j in numeric
            else (f'<td class="path">{escape(str(c))}</td>' if header[j] == "path" else f"<td>{escape(str(c))}</td>")
            for j, c in enumerate(r)
        )
        + "</tr>"
        for r in rows
    )
    return f"<table><tr>{head}</tr>\n{body}</table>"


def _fmt_ms(v: Optional[float]) -> str:
    return "-" if v is None else f"{v:,.1f}"


def _gallery_html(items: Sequence[GalleryItem], total: int) -> str:
    out = []
    if total > len(items):
        out.append(
            f'<p class="note">The {len(items)} most urgent of {total} flagged images are shown; '
            "all are in the table above.</p>"
        )
    out.append('<div class="gallery">')
    for it in items:
        f = it.image
        cls = "malignant" if f.verdict == "malignant" else "review"
        tag = "MALIGNANT" if f.verdict == "malignant" else "needs review"
        if f.verdict == "malignant" and f.needs_review:
            tag += " · needs review"
        thumb = (
            f'<img class="thumb" alt="thumbnail" src="{it.thumb_uri}">'
            if it.thumb_uri
            else f'<span class="missing">{escape(it.note or "")}</span>'
        )
        emap = f'<img class="map" alt="explanation map" src="{it.map_uri}">' if it.map_uri else ""
        score = "-" if f.malignant_score is None else f"{f.malignant_score:.3f}"
        out.append(
            f'<div class="item" id="img-{escape(f.image_id)}"><div>{thumb}{emap}</div>'
            f'<div><span class="{cls}">{tag}</span> {escape(f.label or "-")} · score {score}</div>'
            f'<div class="note">{escape(f.time)} · {escape(f.device_id)} · model {escape(f.model_name or "-")}</div>'
            f'<div class="path">{escape(f.path)}</div>'
            + (f'<div class="note">{escape(it.map_note)}</div>' if it.map_note else "")
            + "</div>"
        )
    out.append("</div>")
    return "\n".join(out)


def _thumb_html(f, roots: Optional[Sequence[Path]], thumb_px: int = 120) -> str:
    try:
        rgb = decode_bytes(open_recorded((f.moved_to, f.path), f.sha256, f.size, roots).data).rgb
        return f'<img class="thumb small" alt="thumbnail" src="{_data_uri(_thumbnail(rgb, thumb_px))}">'
    except RecordedFileError as e:
        return f'<span class="missing small">{"file missing" if e.status == 404 else escape(str(e))}</span>'
    except DecodeError:
        return '<span class="missing small">file unreadable</span>'


def _samples_html(blocks, budget: int, roots: Optional[Sequence[Path]] = None) -> str:
    """One block per sample, riskiest first; its fields as a gallery, flagged first, then by score."""
    out = []
    for b in blocks:
        verdict = b.final_verdict or b.verdict or "-"
        head = (
            f'<h3 id="sample-{escape(b.sample_id)}">{escape(b.sample_id)} · {escape(b.status)} · '
            f'<span class="{"malignant" if verdict == "malignant" else ""}">{escape(verdict)}</span>'
            f" · score {'-' if b.score is None else f'{b.score:.3f}'} · {b.readable} readable of {b.fields}"
            + (f" · signed by {escape(b.signed_by)}" if b.signed_by else "")
            + (f' · <span class="review">{b.late_fields} field(s) after the sign-off</span>' if b.late_fields else "")
            + "</h3>"
        )
        reasons = f'<p class="review">needs review: {escape("; ".join(b.reasons))}</p>' if b.needs_review else ""
        cells = []
        for f in b.items:
            if budget > 0:
                thumb, budget = _thumb_html(f, roots), budget - 1
            else:
                thumb = '<span class="missing small">not shown (gallery limit)</span>'
            what = (
                f"{escape(f.label or '-')} · {'-' if f.malignant_score is None else f'{f.malignant_score:.3f}'}"
                if f.status == "classified"
                else f"{escape(f.status)}: {escape(f.reason or '')}"
            )
            tag = ' <span class="review">review</span>' if f.needs_review else ""
            cells.append(
                f'<div class="item">{thumb}<div>{what}{tag}</div>'
                f'<div class="path">{escape(Path(f.path).name)}</div></div>'
            )
        out.append(f'<div class="sample">{head}{reasons}<div class="gallery">{"".join(cells)}</div></div>')
    return "\n".join(out)


def render_html(
    data: ReportData,
    maps: bool = False,
    classifier: Optional[Classifier] = None,
    classifier_factory: Optional[Callable[[], Classifier]] = None,
    grid: int = 7,
    gallery_limit: int = GALLERY_LIMIT,
    thumb_px: int = 200,
    progress: bool = True,
    console: Optional[Console] = None,
    roots: Optional[Sequence[Path]] = None,
) -> str:
    """The whole page as a string. With ``maps``, one classifier (given, or made once by the factory)
    explains every gallery image; a model that cannot be loaded is stated on the page, not raised.
    ``roots``: the folders images may be read from (the config's inbox, done and rejected folders); None:
    any folder, still never through a symbolic link and only the recorded bytes."""
    map_problem = None
    if maps and classifier is None:
        try:
            classifier = (classifier_factory or Classifier)()
        except ModelLoadError as e:
            map_problem = f"explanation maps unavailable: {e}"
    items = build_gallery(
        data.flagged[:gallery_limit],
        classifier if maps else None,
        grid=grid,
        thumb_px=thumb_px,
        progress=progress,
        console=console,
        roots=roots,
    )
    st, verdicts = data.by_status(), data.by_verdict()
    cards = [
        ("images", data.total, ""),
        ("classified", st.get("classified", 0), ""),
        ("malignant", verdicts.get("malignant", 0), "mal"),
        ("needs review", data.needs_review, "rev"),
        ("unreadable", st.get("unreadable", 0), ""),
        ("rejected", st.get("rejected", 0), ""),
        ("duplicate", st.get("duplicate", 0), ""),
    ]
    per_day, labels = data.per("day"), data.labels()
    days = list(per_day)
    series = {lab: [per_day[d].get(lab, 0) for d in days] for lab in labels}
    series["not classified"] = [per_day[d]["images"] - per_day[d].get("classified", 0) for d in days]
    colours = {lab: PALETTE[i % len(PALETTE)] for i, lab in enumerate(labels)}
    colours["not classified"] = OTHER_COLOUR
    per_cols = ["images", *labels, "malignant", "needs_review", "unreadable", "rejected", "duplicate"]
    filters = ", ".join(f"{k}={v}" for k, v in vars(data.filters).items() if v not in (None, ())) or "none"

    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>edge-screen report — {escape(data.window.description)}</title><style>{CSS}</style></head><body>",
        "<h1>edge-screen report</h1>",
        f'<p class="meta">{escape(data.window.description)} · filters: {escape(filters)} · '
        f"{escape(data.database)} · generated {escape(data.generated_at)}</p>",
        '<p class="note">A screening aid: every malignant or needs-review image must be checked by a person.</p>',
        '<div class="cards">'
        + "".join(f'<div class="card {c}"><b>{v:,}</b>{escape(k)}</div>' for k, v, c in cards)
        + "</div>",
        *(
            [
                f"<h2>Samples ({len(data.samples):,})</h2>",
                '<p class="note">One patient smear each; the verdict follows the model card\'s sample rule.</p>',
                _samples_html(data.samples, gallery_limit, roots),
            ]
            if data.samples
            else []
        ),
        f"<h2>Malignant or needs review ({len(data.flagged):,})</h2>",
        _table(
            ["time", "device", "label", "score", "verdict", "review", "model", "path"],
            (
                [
                    f.time,
                    f.device_id,
                    f.label or "-",
                    "-" if f.malignant_score is None else f"{f.malignant_score:.3f}",
                    f.verdict or "-",
                    "yes" if f.needs_review else "",
                    f.model_name or "-",
                    f.path,
                ]
                for f in data.flagged
            ),
            numeric=(3,),
        ),
        "<h2>Gallery</h2>",
        f'<p class="note">{escape(map_problem)}</p>' if map_problem else "",
        _gallery_html(items, len(data.flagged)) if data.flagged else "<p>Nothing flagged in this window.</p>",
        f"<h2>Unreadable or rejected ({len(data.problems):,})</h2>",
        _table(
            ["time", "device", "status", "reason", "path"],
            ([p.time, p.device_id, p.status, p.reason or "-", p.path] for p in data.problems),
        ),
        "<h2>Images per day by label (UTC)</h2>",
        svg_stacked_bars(days, series, colours, title="images per day by label"),
        _table(
            ["day", *per_cols],
            ([d, *(per_day[d].get(c, 0) for c in per_cols)] for d in days),
            numeric=range(1, len(per_cols) + 1),
        ),
    ]
    devices = data.per("device_id")
    if len(devices) > 1:
        parts += [
            "<h2>Per device</h2>",
            _table(
                ["device", *per_cols],
                ([k, *(d.get(c, 0) for c in per_cols)] for k, d in devices.items()),
                numeric=range(1, len(per_cols) + 1),
            ),
        ]
    parts += [
        "<h2>Timing</h2>",
        "<div>",
        svg_histogram(data.total_histogram),
        svg_stage_bars(data.timings),
        "</div>",
        _table(
            ["stage", "n", "median ms", "p95 ms", "max ms"],
            ([t.stage, t.n, _fmt_ms(t.median_ms), _fmt_ms(t.p95_ms), _fmt_ms(t.max_ms)] for t in data.timings),
            numeric=(1, 2, 3, 4),
        ),
        "<h2>Models used</h2>",
        _table(
            ["model", "sha256", "images", "first", "last"],
            ([m.model_name or "-", m.model_sha256 or "-", m.count, m.first_seen, m.last_seen] for m in data.models),
            numeric=(2,),
        ),
        "</body></html>",
    ]
    return "\n".join(parts) + "\n"


def write_html(data: ReportData, out: str | Path, **kw) -> Path:
    """Render and write atomically, so a half-written report never sits on the stick."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".part")
    tmp.write_text(render_html(data, **kw), encoding="utf-8")
    tmp.replace(out)
    return out

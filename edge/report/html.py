"""The report as ONE self-contained HTML file that opens from a USB stick on any machine.

Nothing is fetched: no scripts, no fonts, no external URLs. Thumbnails and explanation maps are embedded
as ``data:`` URIs (:mod:`edge.report.gallery`), charts are inline SVG (:mod:`edge.report.charts`).
Thumbnails come from the original file when it still exists; a missing or unreadable file is stated in its
place. The gallery shows the most urgent ``gallery_limit`` flagged images (every flagged image is still
listed in the table), so a window with thousands of flags stays a file a browser can open.
"""

from __future__ import annotations

from html import escape
from pathlib import Path
from typing import Callable, Optional, Sequence

from rich.console import Console

from edge.inference.classifier import Classifier, ModelLoadError
from edge.report.charts import svg_histogram, svg_stacked_bars, svg_stage_bars
from edge.report.data import ReportData
from edge.report.gallery import build_gallery, gallery_html, thumb_html
from edge.vocabulary import Status

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
                thumb, budget = thumb_html(f, roots), budget - 1
            else:
                thumb = '<span class="missing small">not shown (gallery limit)</span>'
            what = (
                f"{escape(f.label or '-')} · {'-' if f.malignant_score is None else f'{f.malignant_score:.3f}'}"
                if f.status == Status.CLASSIFIED
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
        (Status.CLASSIFIED, st.get(Status.CLASSIFIED, 0), ""),
        ("malignant", verdicts.get("malignant", 0), "mal"),
        ("needs review", data.needs_review, "rev"),
        *((s, st.get(s, 0), "") for s in (Status.UNREADABLE, Status.REJECTED, Status.DUPLICATE)),
    ]
    per_day, labels = data.per("day"), data.labels()
    days = list(per_day)
    series = {lab: [per_day[d].get(lab, 0) for d in days] for lab in labels}
    series["not classified"] = [per_day[d]["images"] - per_day[d].get(Status.CLASSIFIED, 0) for d in days]
    colours = {lab: PALETTE[i % len(PALETTE)] for i, lab in enumerate(labels)}
    colours["not classified"] = OTHER_COLOUR
    per_cols = ["images", *labels, "malignant", "needs_review", Status.UNREADABLE, Status.REJECTED, Status.DUPLICATE]
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
        gallery_html(items, len(data.flagged)) if data.flagged else "<p>Nothing flagged in this window.</p>",
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

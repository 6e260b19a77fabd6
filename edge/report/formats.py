"""Renderers of :class:`edge.report.data.ReportData`: CSV and JSON (stable, documented) and rich tables.

The CSV and JSON names are an interface that spreadsheets and clinic scripts depend on; they are
documented in ``docs/report-format.md``. Add columns and keys at the end; never rename or reorder.
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import fields
from typing import Iterator, Optional, TextIO

from rich import box
from rich.console import Console
from rich.table import Table

from edge.report.data import ReportData
from edge.report.window import fmt_time
from edge.vocabulary import LABELS, Status

JSON_SCHEMA = "edge-screen-report/1"
CSV_COLUMNS = (
    "section",
    "day",
    "device_id",
    "status",
    "label",
    "verdict",
    "needs_review",
    "count",
    "image_id",
    "time",
    "path",
    "malignant_score",
    "model_name",
    "model_sha256",
    "reason",
    "stage",
    "n",
    "median_ms",
    "p95_ms",
    "max_ms",
    "first_seen",
    "last_seen",
    "moved_to",
)
# Rows shown on a terminal before pointing at the complete CSV/HTML; a shift can flag thousands.
TERMINAL_ROWS = 50


def asdict(obj) -> dict:
    """Shallow: the report's row dataclasses are flat, and dataclasses.asdict deep-copies every value
    (a third of the time of a 100,000-row CSV)."""
    return {f.name: getattr(obj, f.name) for f in fields(obj) if f.metadata.get("output", True)}


def csv_rows(data: ReportData) -> Iterator[dict]:
    """Dicts keyed by a subset of :data:`CSV_COLUMNS`: one per count cell, flagged image, problem image,
    stage timing and model."""
    for r in data.counts:
        yield {"section": "count", **asdict(r)}
    for f in data.flagged:
        yield {"section": "flagged", **asdict(f)}
    for p in data.problems:
        yield {"section": "problem", **asdict(p)}
    for t in data.timings:
        yield {"section": "timing", **asdict(t)}
    for m in data.models:
        yield {"section": "model", **asdict(m)}


def write_csv(data: ReportData, out: TextIO) -> None:
    w = csv.DictWriter(out, fieldnames=CSV_COLUMNS, extrasaction="raise", lineterminator="\n")
    w.writeheader()
    for row in csv_rows(data):
        if "needs_review" in row:
            row["needs_review"] = int(row["needs_review"])  # 0/1 reads the same in every spreadsheet
        w.writerow(row)


def dumps_csv(data: ReportData) -> str:
    buf = io.StringIO()
    write_csv(data, buf)
    return buf.getvalue()


def to_json(data: ReportData) -> dict:
    w = data.window
    return {
        "schema": JSON_SCHEMA,
        "generated_at": data.generated_at,
        "database": data.database,
        "window": {
            "since": fmt_time(w.since) or None,
            "until": fmt_time(w.until) or None,
            "description": w.description,
        },
        "filters": {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(data.filters).items()},
        "totals": {
            "images": data.total,
            "by_status": data.by_status(),
            "by_label": data.by_label(),
            "by_verdict": data.by_verdict(),
            "needs_review": data.needs_review,
        },
        "per_day": data.per("day"),
        "per_device": data.per("device_id"),
        "counts": [asdict(r) for r in data.counts],
        "flagged": [asdict(f) for f in data.flagged],
        "problems": [asdict(p) for p in data.problems],
        "timings": [asdict(t) for t in data.timings],
        "total_time_histogram": [asdict(b) for b in data.total_histogram],
        "models": [asdict(m) for m in data.models],
        "samples": [b.to_json() for b in data.samples],
    }


def dumps_json(data: ReportData) -> str:
    return json.dumps(to_json(data), indent=2) + "\n"


# ------------------------------------------------------------------------------------------ terminal


def _ms(v: Optional[float]) -> str:
    return "-" if v is None else f"{v:,.1f}"


def _score(v: Optional[float]) -> str:
    return "-" if v is None else f"{v:.3f}"


# A Pi console is 80 columns: short headings there (the legend is printed under the table).
SHORT = {
    "images": "img",
    Status.CLASSIFIED: "cls",
    "malignant": "mal",
    "needs_review": "rev",
    Status.UNREADABLE: "unr",
    Status.REJECTED: "rej",
    Status.DUPLICATE: "dup",
    "Benign": "Ben",
    "Early Pre-B": "EPreB",
    "Pre-B": "PreB",
    "Pro-B": "ProB",
}
NARROW = 110  # below this many columns the compact layout is used


def _per_table(title: str, key_name: str, per: dict, labels: list, narrow: bool = False) -> Table:
    t = Table(
        title=title,
        box=box.SIMPLE_HEAD,
        title_justify="left",
        pad_edge=not narrow,
        padding=(0, 1) if narrow else (0, 1),
    )
    cols = ["images", *labels, "malignant", "needs_review", Status.UNREADABLE, Status.REJECTED, Status.DUPLICATE]
    t.add_column(key_name, no_wrap=True)
    for c in cols:
        t.add_column(SHORT.get(c, c) if narrow else c.replace("_", " "), justify="right", no_wrap=True)
    for k, d in per.items():
        t.add_row(k, *(str(d.get(c, 0)) for c in cols))
    return t


def render_table(data: ReportData, console: Console, rows: int = TERMINAL_ROWS) -> None:
    """The report as rich tables, most urgent first: flagged images before the statistics."""
    st, verdicts = data.by_status(), data.by_verdict()
    console.print(f"[bold]edge-screen report[/] — {data.window.description} — {data.database}")
    narrow = console.width < NARROW
    summary = Table(box=box.SIMPLE_HEAD, show_header=True)
    for c in (
        "images",
        Status.CLASSIFIED,
        "malignant",
        "needs_review",
        Status.UNREADABLE,
        Status.REJECTED,
        Status.DUPLICATE,
    ):
        summary.add_column(SHORT[c] if narrow else c.replace("_", " "), justify="right", no_wrap=True)
    summary.add_row(
        str(data.total),
        str(st.get(Status.CLASSIFIED, 0)),
        f"[bold red]{verdicts.get('malignant', 0)}[/]",
        f"[bold yellow]{data.needs_review}[/]",
        *(str(st.get(s, 0)) for s in (Status.UNREADABLE, Status.REJECTED, Status.DUPLICATE)),
    )
    console.print(summary)
    late = [b for b in data.samples if b.late_fields]
    if late:  # fields nobody signed: they must not go unseen
        where = ", ".join(f"{b.sample_id} ({b.late_fields})" for b in late)
        console.print(
            f"[bold yellow]{sum(b.late_fields for b in late)} field(s) arrived after sign-off[/] in "
            f"{where}: look at them in the review app"
        )

    if narrow:  # lines, not a table: a file name is never folded (edge.report.narrow)
        from edge.report.narrow import flagged_lines, print_lines

        console.print(f"Malignant or needs review ({len(data.flagged)})", style="italic")
        print_lines(console, flagged_lines(data.flagged[:rows], console.width))
    else:
        fl = Table(title=f"Malignant or needs review ({len(data.flagged)})", box=box.SIMPLE_HEAD, title_justify="left")
        for c in ("time", "device", "label", "score", "verdict", "review", "model", "path"):
            fl.add_column(c, justify="right" if c == "score" else "left", overflow="fold")
        for f in data.flagged[:rows]:
            style = "red" if f.verdict == "malignant" else "yellow"
            fl.add_row(
                f.time,
                f.device_id,
                f.label or "-",
                _score(f.malignant_score),
                f"[{style}]{f.verdict}[/]",
                "yes" if f.needs_review else "",
                f.model_name or "-",
                f.path,
            )
        console.print(fl)
    if len(data.flagged) > rows:
        console.print(f"  … {len(data.flagged) - rows} more; use --format csv or --format html for all")

    if data.problems and narrow:
        from edge.report.narrow import print_lines, problem_lines

        console.print(f"\nUnreadable or rejected ({len(data.problems)})", style="italic")
        print_lines(console, problem_lines(data.problems[:rows], console.width))
    if data.problems:
        if not narrow:
            pr = Table(
                title=f"Unreadable or rejected ({len(data.problems)})", box=box.SIMPLE_HEAD, title_justify="left"
            )
            for c in ("time", "device", "status", "reason", "path"):
                pr.add_column(c, overflow="fold", no_wrap=c in ("time", "status"))
            for p in data.problems[:rows]:
                pr.add_row(p.time, p.device_id, p.status, p.reason or "-", p.path)
            console.print(pr)
        if len(data.problems) > rows:
            console.print(f"  … {len(data.problems) - rows} more; use --format csv or --format html for all")

    labels = data.labels()
    console.print(_per_table("Per day (UTC)", "day", data.per("day"), labels, narrow))
    if len(data.devices()) > 1:
        console.print(_per_table("Per device", "device", data.per("device_id"), labels, narrow))
    if narrow:
        shown = [k for k in SHORT if k not in LABELS or k in labels]
        console.print("  " + ", ".join(f"{SHORT[k]} = {k.replace('_', ' ')}" for k in shown), style="dim")

    tt = Table(title="Timing per stage (ms)", box=box.SIMPLE_HEAD, title_justify="left")
    for c in ("stage", "n", "median", "p95", "max"):
        tt.add_column(c, justify="left" if c == "stage" else "right")
    for t in data.timings:
        tt.add_row(t.stage, str(t.n), _ms(t.median_ms), _ms(t.p95_ms), _ms(t.max_ms))
    console.print(tt)

    mt = Table(title="Models used", box=box.SIMPLE_HEAD, title_justify="left")
    for c in ("model", "sha256", "images", "first", "last"):
        mt.add_column(c, justify="right" if c == "images" else "left")
    for m in data.models:
        mt.add_row(
            m.model_name or "-",
            (m.model_sha256 or "-")[:12],
            str(m.count),
            m.first_seen[:16] if narrow else m.first_seen,
            m.last_seen[:16] if narrow else m.last_seen,
        )
    console.print(mt)

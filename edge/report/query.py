"""What was screened in a time window, and what needs a human: ``edge-screen report``.

:func:`build_report` aggregates the ``images`` table in SQL (one grouped query for all counts, one
window-function sort per timing column for its percentiles) and fetches only the flagged and the
unreadable/rejected rows in full, so a window of 100,000 rows takes about a second
(scripts/bench_report.py). It runs on a device database and on a merged clinic database alike (SQLite or
PostgreSQL), through the table definitions of ``edge/store/schema.py``.

The window and filters are :mod:`edge.report.window`, what comes back :mod:`edge.report.data`.
Renderers: CSV, JSON and rich terminal tables in ``edge/report/formats.py``, the self-contained HTML file
in ``edge/report/html.py``.

Conventions: as :mod:`edge.report.window`; percentiles are nearest-rank (p50 of 4 values is the 2nd
smallest).
"""

from __future__ import annotations

import math
from datetime import datetime, timezone
from pathlib import Path
from typing import List, Optional, Tuple

import sqlalchemy as sa

from edge.daemon.startup import EXIT_STORE
from edge.report.data import CountRow, FlaggedImage, HistBin, ModelUsage, ProblemImage, ReportData, StageTiming
from edge.report.window import Filters, ReportError, Window, fmt_time
from edge.store.engine import open_existing
from edge.store.records import nearest_rank
from edge.store.schema import SchemaError, images
from edge.vocabulary import STAGES, Status

PERCENTILES = (0.5, 0.95)
HIST_BINS = 20


def open_database(db: str | Path | sa.Engine, busy_timeout_ms: int = 5000) -> Tuple[sa.Engine, int]:
    """Engine and schema version of an existing edge-screen database (read only: never created or upgraded)."""
    try:
        return open_existing(db, busy_timeout_ms)
    except SchemaError as e:
        raise ReportError(str(e), code=EXIT_STORE) from None


def _safe_url(engine: sa.Engine) -> str:
    return engine.url.render_as_string(hide_password=True)


def _where(window: Window, filters: Filters) -> list:
    c, w = images.c, []
    if window.since:
        w.append(c.recorded_at >= window.since)
    if window.until:
        w.append(c.recorded_at < window.until)
    if filters.verdict:
        w.append(c.verdict == filters.verdict)
    if filters.labels:
        w.append(c.label.in_(filters.labels))
    if filters.needs_review is not None:
        w.append(c.needs_review == filters.needs_review)
    if filters.statuses:
        w.append(c.status.in_(filters.statuses))
    if filters.devices:
        w.append(c.device_id.in_(filters.devices))
    return w


def _percentiles(conn, col, where: list, n: int) -> List[Optional[float]]:
    """Nearest-rank :data:`PERCENTILES` of ``col`` in one sort (a window function: SQLite >= 3.25 and
    PostgreSQL alike), without fetching the column."""
    if n == 0:
        return [None] * len(PERCENTILES)
    ranks = [nearest_rank(p, n) for p in PERCENTILES]
    sub = (
        sa.select(col.label("v"), sa.func.row_number().over(order_by=col).label("rn"))
        .where(*where, col.is_not(None))
        .subquery()
    )
    got = dict(conn.execute(sa.select(sub.c.rn, sub.c.v).where(sub.c.rn.in_(sorted(set(ranks))))).all())
    return [None if got.get(r) is None else float(got[r]) for r in ranks]


def _histogram(conn, col, where: list, lo: Optional[float], hi: Optional[float]) -> List[HistBin]:
    if lo is None or hi is None:
        return []
    width = _nice(max(hi - lo, 1e-3) / (HIST_BINS - 1))
    start = math.floor(lo / width) * width
    edges = [start + width * (i + 1) for i in range(HIST_BINS - 1)]
    # A CASE ladder bins the same way on SQLite and PostgreSQL (CAST rounds on one, truncates on the other).
    bucket = sa.case(*[(col < e, i) for i, e in enumerate(edges)], else_=HIST_BINS - 1).label("bucket")
    rows = dict(conn.execute(sa.select(bucket, sa.func.count()).where(*where, col.is_not(None)).group_by(bucket)).all())
    return [
        HistBin(
            lo_ms=round(start + width * i, 6),
            hi_ms=round(edges[i], 6) if i < len(edges) else None,
            count=int(rows.get(i, 0)),
        )
        for i in range(HIST_BINS)
    ]


def _nice(x: float) -> float:
    mag = 10 ** math.floor(math.log10(x))
    return next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= x)


def _utc_day(engine: sa.Engine, col):
    if engine.dialect.name == "postgresql":
        # date() of a timestamptz follows the session's TimeZone; the report's days are UTC everywhere.
        return sa.func.to_char(sa.func.timezone("UTC", col), "YYYY-MM-DD")
    return sa.func.date(col)  # SQLite holds naive UTC text


def build_report(
    db: str | sa.Engine, window: Window, filters: Filters = Filters(), now: Optional[datetime] = None
) -> ReportData:
    engine, version = open_database(db)
    try:
        data = _query(engine, window, filters, now, version)
        if version >= 3:  # samples came with schema 3; an older device's copy has none
            from edge.report.samples import sample_blocks

            data.samples = sample_blocks(engine, _where(window, filters))
        return data
    finally:
        if not isinstance(db, sa.Engine):  # ours: release the file now, not at garbage collection
            engine.dispose()


def _query(engine: sa.Engine, window: Window, filters: Filters, now: Optional[datetime], version: int) -> ReportData:
    c, where = images.c, _where(window, filters)
    day = _utc_day(engine, c.recorded_at).label("day")
    with engine.connect() as conn:
        grouped = conn.execute(
            sa.select(day, c.device_id, c.status, c.label, c.verdict, c.needs_review, sa.func.count())
            .where(*where)
            .group_by(day, c.device_id, c.status, c.label, c.verdict, c.needs_review)
        ).all()
        counts = [
            CountRow(
                day=str(r[0]),
                device_id=str(r[1]),
                status=str(r[2]),
                label=r[3],
                verdict=r[4],
                needs_review=bool(r[5]),
                count=int(r[6]),
            )
            for r in grouped
        ]
        urgent = sa.case((c.verdict == "malignant", 0), else_=1)
        flagged = [
            FlaggedImage(
                image_id=str(r.id),
                device_id=str(r.device_id),
                time=fmt_time(r.recorded_at),
                path=str(r.path),
                label=r.label,
                malignant_score=None if r.malignant_score is None else float(r.malignant_score),
                verdict=r.verdict,
                needs_review=bool(r.needs_review),
                model_name=r.model_name,
                model_sha256=r.model_sha256,
                moved_to=r.moved_to,
                sha256=r.sha256,
                size=r.bytes,
            )
            for r in conn.execute(
                sa.select(
                    c.id,
                    c.device_id,
                    c.recorded_at,
                    c.path,
                    c.label,
                    c.malignant_score,
                    c.verdict,
                    c.needs_review,
                    c.model_name,
                    c.model_sha256,
                    c.sha256,
                    c.bytes,
                    c.moved_to if version >= 3 else sa.null().label("moved_to"),
                )
                .where(
                    *where, c.status == Status.CLASSIFIED, sa.or_(c.verdict == "malignant", c.needs_review == sa.true())
                )
                .order_by(urgent, c.malignant_score.desc(), c.recorded_at, c.id)
            )
        ]
        problems = [
            ProblemImage(
                image_id=str(r.id),
                device_id=str(r.device_id),
                time=fmt_time(r.recorded_at),
                path=str(r.path),
                status=str(r.status),
                reason=r.reason,
            )
            for r in conn.execute(
                sa.select(c.id, c.device_id, c.recorded_at, c.path, c.status, c.reason)
                .where(*where, c.status.in_((Status.UNREADABLE, Status.REJECTED)))
                .order_by(c.recorded_at, c.id)
            )
        ]
        cols = [getattr(c, f"t_{s}_ms") for s in STAGES]
        agg = conn.execute(
            sa.select(*[f(col) for col in cols for f in (sa.func.count, sa.func.max)]).where(*where)
        ).one()
        timings = []
        for i, (stage, col) in enumerate(zip(STAGES, cols)):
            n, mx = int(agg[2 * i]), agg[2 * i + 1]
            med, p95 = _percentiles(conn, col, where, n)
            timings.append(
                StageTiming(stage=stage, n=n, median_ms=med, p95_ms=p95, max_ms=None if mx is None else float(mx))
            )
        total = timings[-1]
        # Up to twice the p95, so that one stalled image does not squash the useful range into a bar.
        lo = conn.execute(sa.select(sa.func.min(c.t_total_ms)).where(*where)).scalar()
        hi = None if total.max_ms is None else min(total.max_ms, 2 * (total.p95_ms or 0))
        hist = _histogram(conn, c.t_total_ms, where, None if lo is None else float(lo), hi)
        models = [
            ModelUsage(
                model_name=r[0], model_sha256=r[1], count=int(r[2]), first_seen=fmt_time(r[3]), last_seen=fmt_time(r[4])
            )
            for r in conn.execute(
                sa.select(
                    c.model_name,
                    c.model_sha256,
                    sa.func.count(),
                    sa.func.min(c.recorded_at),
                    sa.func.max(c.recorded_at),
                )
                .where(*where, c.model_sha256.is_not(None))
                .group_by(c.model_name, c.model_sha256)
                .order_by(sa.func.min(c.recorded_at))
            )
        ]
    return ReportData(
        generated_at=fmt_time(now or datetime.now(timezone.utc)),
        database=_safe_url(engine),
        window=window,
        filters=filters,
        counts=counts,
        flagged=flagged,
        problems=problems,
        timings=timings,
        models=models,
        total_histogram=hist,
    )

"""What was screened in a time window, and what needs a human: ``edge-screen report``.

:func:`build_report` aggregates the ``images`` table in SQL (one grouped query for all counts, one
window-function sort per timing column for its percentiles) and fetches only the flagged and the
unreadable/rejected rows in full, so a window of 100,000 rows takes about a second
(scripts/bench_report.py). It runs on a device database and on a merged clinic database alike (SQLite or
PostgreSQL), through the table definitions of ``edge/store/schema.py``.

Renderers: CSV, JSON and rich terminal tables in ``edge/report/formats.py``, the self-contained HTML file
in ``edge/report/html.py``.

Conventions: times are UTC and written ``YYYY-MM-DDTHH:MM:SSZ``; a "day" is a UTC date; the window is
``since <= recorded_at < until``; percentiles are nearest-rank (p50 of 4 values is the 2nd smallest).
"""

from __future__ import annotations

import math
import re
from collections import Counter
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta, timezone, tzinfo
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import sqlalchemy as sa

from edge.daemon.startup import EXIT_CONFIG, EXIT_STORE
from edge.store.engine import open_existing
from edge.store.records import nearest_rank
from edge.store.schema import SchemaError, images
from edge.vocabulary import STAGES, STATUSES, VERDICTS

PERCENTILES = (0.5, 0.95)
HIST_BINS = 20
_REL = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(m|min|h|d|w)\s*$", re.I)
_UNITS = {"m": "minutes", "min": "minutes", "h": "hours", "d": "days", "w": "weeks"}


class ReportError(ValueError):
    """Bad options or a database that cannot be reported on; ``str(err)`` is a one-line reason and ``code``
    the README's exit code: 2 for a bad option (the default), 4 for a database that cannot be read."""

    def __init__(self, message: str, code: int = EXIT_CONFIG):
        super().__init__(message)
        self.code = code


# ------------------------------------------------------------------------------------ window, filters


@dataclass(frozen=True)
class Window:
    since: Optional[datetime]  # aware UTC, inclusive
    until: Optional[datetime]  # aware UTC, exclusive
    description: str


@dataclass(frozen=True)
class Filters:
    verdict: Optional[str] = None
    labels: Tuple[str, ...] = ()
    needs_review: Optional[bool] = None
    statuses: Tuple[str, ...] = ()
    devices: Tuple[str, ...] = ()

    def __post_init__(self):
        if self.verdict is not None and self.verdict not in VERDICTS:
            raise ReportError(f"--verdict: expected one of {', '.join(VERDICTS)}, got {self.verdict!r}")
        bad = [s for s in self.statuses if s not in STATUSES]
        if bad:
            raise ReportError(f"--status: expected one of {', '.join(STATUSES)}, got {bad[0]!r}")


def local_tz() -> tzinfo:
    return datetime.now().astimezone().tzinfo or timezone.utc


def parse_when(text: str, now: datetime, tz: tzinfo, end: bool = False, option: str = "--since") -> datetime:
    """``8h``/``30m``/``7d``/``2w`` before ``now``, ``today``, ``yesterday``, an ISO date or date-time.

    Naive dates and times are the technician's local time. A bare date as an ``end`` means the end of
    that day, so ``--until 2024-05-01`` includes all of 1 May.
    """
    s = text.strip()
    m = _REL.match(s)
    if m:
        return now - timedelta(**{_UNITS[m.group(2).lower()]: float(m.group(1))})
    low = s.lower()
    if low in ("today", "yesterday"):
        d = now.astimezone(tz).date() - timedelta(days=1 if low == "yesterday" else 0)
        return _day_start(d + timedelta(days=1 if end else 0), tz)
    if low == "now":
        return now
    try:
        if re.fullmatch(r"\d{4}-\d{2}-\d{2}", s):
            return _day_start(date.fromisoformat(s) + timedelta(days=1 if end else 0), tz)
        dt = datetime.fromisoformat(s.replace("Z", "+00:00"))
    except ValueError:
        raise ReportError(
            f"{option}: expected a date (2024-05-01), a date-time (2024-05-01T08:00) or a "
            f"relative time (8h, 7d), got {text!r}"
        ) from None
    return (dt if dt.tzinfo else dt.replace(tzinfo=tz)).astimezone(timezone.utc)


def _day_start(d: date, tz: tzinfo) -> datetime:
    return datetime.combine(d, time(0), tzinfo=tz).astimezone(timezone.utc)


def make_window(
    since: Optional[str] = None,
    until: Optional[str] = None,
    all_time: bool = False,
    now: Optional[datetime] = None,
    tz: Optional[tzinfo] = None,
) -> Window:
    """No bounds given means today (local); ``all_time`` means no bounds at all."""
    tz = tz or local_tz()
    now = (now or datetime.now(timezone.utc)).astimezone(timezone.utc)
    if all_time:
        if since or until:
            raise ReportError("--all cannot be combined with --since/--until")
        return Window(None, None, "all time")
    if not since and not until:
        start = parse_when("today", now, tz)
        return Window(start, None, f"today (since {_fmt(start)})")
    s = parse_when(since, now, tz, option="--since") if since else None
    u = parse_when(until, now, tz, end=True, option="--until") if until else None
    if s and u and s >= u:
        raise ReportError(f"--since {since!r} is not before --until {until!r}")
    return Window(s, u, f"{_fmt(s) if s else 'the beginning'} to {_fmt(u) if u else 'now'}")


def _fmt(dt: Optional[datetime]) -> str:
    if dt is None:
        return ""
    if dt.tzinfo is None:  # SQLite hands back the stored naive UTC value
        dt = dt.replace(tzinfo=timezone.utc)
    return dt.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


# ------------------------------------------------------------------------------------------ the data


@dataclass
class CountRow:
    day: str
    device_id: str
    status: str
    label: Optional[str]
    verdict: Optional[str]
    needs_review: bool
    count: int


@dataclass
class FlaggedImage:
    image_id: str
    device_id: str
    time: str
    path: str
    label: Optional[str]
    malignant_score: Optional[float]
    verdict: Optional[str]
    needs_review: bool
    model_name: Optional[str]
    model_sha256: Optional[str]
    moved_to: Optional[str] = None  # where after = "move" put the file
    # What was recorded of the file, so the HTML report embeds it only if it is still that file
    # (edge.imaging.recorded); not a column of the CSV/JSON report.
    sha256: Optional[str] = field(default=None, metadata={"output": False})
    size: Optional[int] = field(default=None, metadata={"output": False})


@dataclass
class ProblemImage:
    image_id: str
    device_id: str
    time: str
    path: str
    status: str
    reason: Optional[str]


@dataclass
class StageTiming:
    stage: str
    n: int
    median_ms: Optional[float]
    p95_ms: Optional[float]
    max_ms: Optional[float]


@dataclass
class ModelUsage:
    model_name: Optional[str]
    model_sha256: Optional[str]
    count: int
    first_seen: str
    last_seen: str


@dataclass
class HistBin:
    lo_ms: float
    hi_ms: Optional[float]  # None: the open last bin
    count: int


@dataclass
class ReportData:
    generated_at: str
    database: str  # URL with any password hidden
    window: Window
    filters: Filters
    counts: List[CountRow]
    flagged: List[FlaggedImage]  # malignant or needs review; malignant first, highest score first
    problems: List[ProblemImage]  # unreadable and rejected, oldest first
    timings: List[StageTiming]
    models: List[ModelUsage]
    total_histogram: List[HistBin] = field(default_factory=list)
    samples: list = field(default_factory=list)  # edge.report.samples.SampleBlock, schema 3 on

    @property
    def total(self) -> int:
        return sum(r.count for r in self.counts)

    def _by(self, key: str, rows: Optional[Sequence[CountRow]] = None) -> Dict[str, int]:
        c: Counter = Counter()
        for r in self.counts if rows is None else rows:
            v = getattr(r, key)
            if v is not None:
                c[str(v)] += r.count
        return dict(sorted(c.items()))

    def by_status(self) -> Dict[str, int]:
        return self._by("status")

    def by_label(self) -> Dict[str, int]:
        return self._by("label", [r for r in self.counts if r.status == "classified"])

    def by_verdict(self) -> Dict[str, int]:
        return self._by("verdict", [r for r in self.counts if r.status == "classified"])

    @property
    def needs_review(self) -> int:
        return sum(r.count for r in self.counts if r.status == "classified" and r.needs_review)

    def days(self) -> List[str]:
        return sorted({r.day for r in self.counts})

    def devices(self) -> List[str]:
        return sorted({r.device_id for r in self.counts})

    def labels(self) -> List[str]:
        return list(self.by_label())

    def per(self, key: str) -> Dict[str, Dict[str, int]]:
        """Per day or per device_id: status counts plus classified label and verdict counts."""
        out: Dict[str, Dict[str, int]] = {}
        for k in sorted({getattr(r, key) for r in self.counts}):
            rows = [r for r in self.counts if getattr(r, key) == k]
            d = {"images": sum(r.count for r in rows)}
            d.update(self._by("status", rows))
            cls = [r for r in rows if r.status == "classified"]
            d.update(self._by("label", cls))
            d.update(self._by("verdict", cls))
            d["needs_review"] = sum(r.count for r in cls if r.needs_review)
            out[k] = d
        return out


# ---------------------------------------------------------------------------------------------- query


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
                time=_fmt(r.recorded_at),
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
                .where(*where, c.status == "classified", sa.or_(c.verdict == "malignant", c.needs_review == sa.true()))
                .order_by(urgent, c.malignant_score.desc(), c.recorded_at, c.id)
            )
        ]
        problems = [
            ProblemImage(
                image_id=str(r.id),
                device_id=str(r.device_id),
                time=_fmt(r.recorded_at),
                path=str(r.path),
                status=str(r.status),
                reason=r.reason,
            )
            for r in conn.execute(
                sa.select(c.id, c.device_id, c.recorded_at, c.path, c.status, c.reason)
                .where(*where, c.status.in_(("unreadable", "rejected")))
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
            ModelUsage(model_name=r[0], model_sha256=r[1], count=int(r[2]), first_seen=_fmt(r[3]), last_seen=_fmt(r[4]))
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
        generated_at=_fmt(now or datetime.now(timezone.utc)),
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

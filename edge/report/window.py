"""The time window and filters of ``edge-screen report``: what the options say, checked and in UTC.

Conventions: times are UTC and written ``YYYY-MM-DDTHH:MM:SSZ``; a "day" is a UTC date; the window is
``since <= recorded_at < until``. The query is :mod:`edge.report.query`, what it returns
:mod:`edge.report.data`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta, timezone, tzinfo
from typing import Optional, Tuple

from edge.daemon.startup import EXIT_CONFIG
from edge.vocabulary import STATUSES, VERDICTS

_REL = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(m|min|h|d|w)\s*$", re.I)
_UNITS = {"m": "minutes", "min": "minutes", "h": "hours", "d": "days", "w": "weeks"}


class ReportError(ValueError):
    """Bad options or a database that cannot be reported on; ``str(err)`` is a one-line reason and ``code``
    the README's exit code: 2 for a bad option (the default), 4 for a database that cannot be read."""

    def __init__(self, message: str, code: int = EXIT_CONFIG):
        super().__init__(message)
        self.code = code


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
        return Window(start, None, f"today (since {fmt_time(start)})")
    s = parse_when(since, now, tz, option="--since") if since else None
    u = parse_when(until, now, tz, end=True, option="--until") if until else None
    if s and u and s >= u:
        raise ReportError(f"--since {since!r} is not before --until {until!r}")
    return Window(s, u, f"{fmt_time(s) if s else 'the beginning'} to {fmt_time(u) if u else 'now'}")


def fmt_time(dt: Optional[datetime]) -> str:
    if dt is None:
        return ""
    if dt.tzinfo is None:  # SQLite hands back the stored naive UTC value
        dt = dt.replace(tzinfo=timezone.utc)
    return dt.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")

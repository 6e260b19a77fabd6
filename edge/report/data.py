"""What a report holds (:class:`ReportData`, built by :func:`edge.report.query.build_report`): counts per
day, device, status, label and verdict, the flagged and the problem images, timings and models. The
renderers (:mod:`edge.report.formats`, :mod:`edge.report.html`, :mod:`edge.report.narrow`) read only this.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence

from edge.report.window import Filters, Window
from edge.vocabulary import Status


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
        return self._by("label", [r for r in self.counts if r.status == Status.CLASSIFIED])

    def by_verdict(self) -> Dict[str, int]:
        return self._by("verdict", [r for r in self.counts if r.status == Status.CLASSIFIED])

    @property
    def needs_review(self) -> int:
        return sum(r.count for r in self.counts if r.status == Status.CLASSIFIED and r.needs_review)

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
            cls = [r for r in rows if r.status == Status.CLASSIFIED]
            d.update(self._by("label", cls))
            d.update(self._by("verdict", cls))
            d["needs_review"] = sum(r.count for r in cls if r.needs_review)
            out[k] = d
        return out

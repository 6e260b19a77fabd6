"""What crosses the store's boundary: one image's result, a daemon run, counts and timing statistics."""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Dict, List, Optional

from edge.vocabulary import STAGES

JSON_FIELDS = ("probabilities", "quality", "segmentation")


@dataclass
class ImageRecord:
    """One image's result, as the pipeline hands it to :meth:`Store.record` and as queries return it.

    ``sha256`` is required even for rejected files (hash the bytes that are there; for a file that was
    not read, e.g. a symlink out of the inbox, hash a description such as ``b"symlink:" + target``), because
    (device_id, path, sha256) is what makes recording exactly-once. ``t_total_ms`` is the pipeline's total
    before storing; ``record`` measures ``t_store_ms`` and adds it to the total.
    """

    path: str
    sha256: str
    status: str  # classified | unreadable | rejected | duplicate
    reason: Optional[str] = None
    bytes: Optional[int] = None
    capture_time: Optional[datetime] = None  # aware UTC (EXIF or mtime)
    label: Optional[str] = None
    probabilities: Optional[Dict[str, float]] = None
    malignant_score: Optional[float] = None
    verdict: Optional[str] = None  # benign | malignant
    needs_review: bool = False
    duplicate_of: Optional[str] = None
    quality: Optional[Dict[str, Any]] = None
    segmentation: Optional[Dict[str, Any]] = None
    t_queue_ms: Optional[float] = None
    t_decode_ms: Optional[float] = None
    t_quality_ms: Optional[float] = None
    t_preprocess_ms: Optional[float] = None
    t_inference_ms: Optional[float] = None
    t_store_ms: Optional[float] = None
    t_total_ms: Optional[float] = None
    model_id: Optional[str] = None
    model_name: Optional[str] = None
    model_sha256: Optional[str] = None
    run_id: Optional[str] = None
    sample_id: Optional[str] = None  # the patient sample (inbox subfolder) the field belongs to
    moved_to: Optional[str] = None  # set after `daemon.after = "move"` moved the file (Store.set_moved_to)
    purged_at: Optional[datetime] = None  # when retention deleted the file (edge.daemon.retention)
    px_per_um: Optional[float] = None  # the scale used for the field (measured from its red cells, or config)
    magnification: Optional[float] = None  # relative to the model's training scale
    domain: Optional[str] = None  # why the field is outside the card's validated range; None inside it
    filename: Optional[str] = None  # default: the last component of path
    id: Optional[str] = None  # default: a new uuid4
    device_id: Optional[str] = None  # default: the store's device id
    recorded_at: Optional[datetime] = None  # default: now (UTC)

    def to_row(self) -> Dict[str, Any]:
        # Shallow: asdict() deep-copies every value, a quarter of a millisecond per image for nothing (the
        # JSON fields are serialised below, the rest are immutable).
        row = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        for k in JSON_FIELDS:
            if row[k] is not None:
                row[k] = json.dumps(row[k], sort_keys=True, separators=(",", ":"))
        return row

    @classmethod
    def from_row(cls, row: Any) -> ImageRecord:
        d = dict(row._mapping) if hasattr(row, "_mapping") else dict(row)
        for k in JSON_FIELDS:
            if d.get(k) is not None:
                d[k] = json.loads(d[k])
        d["needs_review"] = bool(d["needs_review"])
        kwargs: Dict[str, Any] = {f.name: d.get(f.name) for f in dataclasses.fields(cls)}
        return cls(**kwargs)

    def timings(self) -> Dict[str, Optional[float]]:
        return {s: getattr(self, f"t_{s}_ms") for s in STAGES}


@dataclass
class RunInfo:
    id: str
    device_id: str
    started_at: datetime
    stopped_at: Optional[datetime]
    exit_reason: Optional[str]
    version: Optional[str]
    pid: Optional[int]
    hostname: Optional[str]


@dataclass
class Counts:
    total: int = 0
    by_status: Dict[str, int] = field(default_factory=dict)
    by_verdict: Dict[str, int] = field(default_factory=dict)
    needs_review: int = 0


@dataclass
class TimingStats:
    n: int
    median_ms: Optional[float]
    p95_ms: Optional[float]
    max_ms: Optional[float]


def nearest_rank(p: float, n: int) -> int:
    """1-based rank of the ``p`` quantile of ``n`` sorted values, nearest-rank: always a value that was
    actually observed. `status` (here) and `report` (in SQL) both use it, so their medians agree."""
    return max(1, math.ceil(p * n))


def timing_stats(values: List[float]) -> TimingStats:
    if not values:
        return TimingStats(0, None, None, None)
    v = sorted(values)
    return TimingStats(len(v), v[nearest_rank(0.5, len(v)) - 1], v[nearest_rank(0.95, len(v)) - 1], v[-1])


class StoreError(RuntimeError):
    """The store cannot be opened or written; ``str(err)`` is one line."""


class DatabaseGone(StoreError):
    """The SQLite file this store opened was deleted or replaced: SQLite would go on writing into the
    unlinked file, so every result from then on would be in no database."""

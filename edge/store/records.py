"""What crosses the store's boundary: one image's result (the pipeline's and the store's, one type), a daemon
run, counts and timing statistics. No SQLAlchemy here: `classify --no-db` imports it."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Dict, List, Optional

from edge.vocabulary import STAGES


@dataclass
class Timings:
    """Milliseconds per stage of one image (one field per :data:`edge.vocabulary.STAGES` entry, one
    ``t_<stage>_ms`` column each); None: the stage did not run for it."""

    queue: Optional[float] = None  # from the watcher seeing the file to the start of its processing
    decode: Optional[float] = None
    quality: Optional[float] = None
    preprocess: Optional[float] = None
    inference: Optional[float] = None
    store: Optional[float] = None
    total: Optional[float] = None

    def add(self, stage: str, ms: float, accumulate: bool = False) -> None:
        """Set ``stage`` to ``ms`` (rounded to a microsecond), or add ``ms`` to it with ``accumulate``."""
        before = getattr(self, stage) if accumulate else None
        setattr(self, stage, round((before or 0.0) + ms, 3))

    def to_dict(self) -> Dict[str, float]:
        """The stages that ran, stage name -> ms."""
        return {s: v for s in STAGES if (v := getattr(self, s)) is not None}


if tuple(f.name for f in dataclasses.fields(Timings)) != STAGES:  # pragma: no cover - a programming error
    raise AssertionError("Timings must have one field per STAGES entry, in order")


@dataclass
class ImageRecord:
    """One image's result: what the pipeline fills in (edge/pipeline/stages.py), what :meth:`Store.record`
    writes as one ``images`` row and what the store's queries return. The row mapping is
    :mod:`edge.store.rows`, the only one.

    ``sha256`` is required by the store even for rejected files (hash the bytes that are there; for a file
    that was not read, e.g. a symlink out of the inbox, hash a description such as ``b"symlink:" + target``),
    because (device_id, path, sha256) is what makes recording exactly-once. ``timings.total`` is the
    pipeline's total before storing; with ``timings.store`` None the store measures its own time, writes it
    as ``t_store_ms`` and adds it to the total it writes.
    """

    path: str
    status: str  # classified | unreadable | rejected | duplicate (edge.vocabulary.Status)
    sha256: str = ""
    reason: Optional[str] = None  # one line; the store writes an empty reason as NULL
    bytes: Optional[int] = None
    capture_time: Optional[datetime] = None  # aware UTC (EXIF or mtime)
    label: Optional[str] = None
    probabilities: Optional[Dict[str, float]] = None
    malignant_score: Optional[float] = None
    verdict: Optional[str] = None  # benign | malignant
    needs_review: Optional[bool] = None  # None: no answer to review (a row stores False)
    duplicate_of: Optional[str] = None  # id of the first record with the same content
    quality: Optional[Dict[str, Any]] = None
    segmentation: Optional[Dict[str, Any]] = None
    timings: Timings = field(default_factory=Timings)
    model_id: Optional[str] = None
    model_name: Optional[str] = None
    model_sha256: Optional[str] = None
    run_id: Optional[str] = None
    sample_id: Optional[str] = None  # the patient sample (inbox subfolder, or the day's) the field belongs to
    moved_to: Optional[str] = None  # set after `daemon.after = "move"` moved the file (Store.set_moved_to)
    purged_at: Optional[datetime] = None  # when retention deleted the file (edge.daemon.retention)
    px_per_um: Optional[float] = None  # the scale used for the field (measured from its red cells, or config)
    magnification: Optional[float] = None  # relative to the model's training scale
    domain: Optional[str] = None  # why the field is outside the card's validated range; None inside it
    filename: Optional[str] = None  # default: the last component of path
    id: Optional[str] = None  # the row's id; the store makes a new uuid4 for a record without one
    device_id: Optional[str] = None  # default: the store's device id
    recorded_at: Optional[datetime] = None  # default: now (UTC)
    # What happened to the file in this process, not stored:
    capture_source: str = ""  # "exif" or "mtime"
    width: Optional[int] = None
    height: Optional[int] = None
    format: Optional[str] = None
    recorded: bool = False  # False for --no-db, for a file already recorded, or a failed commit
    already_recorded: bool = False  # recorded by an earlier run: nothing new was written
    deferred: bool = False  # polling: read while still being written; not recorded, watched again

    def copy_answer(self, other: ImageRecord) -> None:
        """The model's answer (label, probabilities, score, verdict, review flag) of ``other``: a copy of
        its content gets its answer, not a new inference."""
        self.label, self.probabilities = other.label, other.probabilities
        self.malignant_score, self.verdict, self.needs_review = other.malignant_score, other.verdict, other.needs_review


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

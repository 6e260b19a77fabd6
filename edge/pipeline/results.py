"""What the pipeline hands along per file: the job (a path and when it was seen), the result that is
recorded and reported, and the in-between state of a prepared image waiting for inference."""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Dict, List, Optional, Tuple

import numpy as np

from edge.vocabulary import Status

if TYPE_CHECKING:
    from edge.imaging.optics import Optics

CLASSIFIED, UNREADABLE, REJECTED, DUPLICATE = Status.CLASSIFIED, Status.UNREADABLE, Status.REJECTED, Status.DUPLICATE


@dataclass
class Job:
    path: Path
    discovered: float = field(default_factory=time.monotonic)  # when the watcher saw the file closed


@dataclass
class ImageResult:
    path: str
    status: str
    reason: str = ""
    sha256: str = ""
    size_bytes: int = 0
    capture_time: Optional[datetime] = None
    capture_source: str = ""  # "exif" or "mtime"
    width: Optional[int] = None
    height: Optional[int] = None
    format: Optional[str] = None
    label: Optional[str] = None
    probabilities: Optional[Dict[str, float]] = None
    malignant_score: Optional[float] = None
    verdict: Optional[str] = None
    needs_review: Optional[bool] = None
    quality: Optional[dict] = None
    segmentation: Optional[dict] = None
    timings: Dict[str, float] = field(default_factory=dict)  # ms per STAGES entry
    duplicate_of: Optional[str] = None  # id of the first record with the same content
    record_id: Optional[str] = None
    recorded: bool = False  # False for --no-db, for a file already recorded, or a failed commit
    moved_to: Optional[str] = None
    already_recorded: bool = False  # recorded by an earlier run: nothing new was written
    sample_id: Optional[str] = None  # the patient sample (inbox subfolder, or the day's) it belongs to
    deferred: bool = False  # polling: read while still being written; not recorded, watched again
    px_per_um: Optional[float] = None  # optics (edge/imaging/optics.py): the scale used, and relative to training
    magnification: Optional[float] = None
    domain: Optional[str] = None  # why the field is outside the card's validated range (edge/pipeline/domain.py)

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["capture_time"] = self.capture_time.isoformat() if self.capture_time else None
        return d


@dataclass
class Prepared:
    job: Job
    result: ImageResult
    model_inputs: Optional[List[np.ndarray]] = None  # None: no inference (rejected/unreadable)
    started: float = 0.0
    inferred: float = 0.0  # when stage 2 was done with it; its store time counts from here
    optics: Optional[Optics] = None  # the field's optics record, for the domain monitor in stage 2
    cell_lab: Optional[Tuple[float, ...]] = None  # stained pixels' LAB statistics before normalisation


__all__ = ["CLASSIFIED", "DUPLICATE", "REJECTED", "UNREADABLE", "ImageResult", "Job", "Prepared"]

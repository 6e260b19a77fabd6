"""What the pipeline hands along per file: the job (a path and when it was seen) and the in-between state of a
prepared image waiting for inference. The result that is recorded and reported is
:class:`edge.store.records.ImageRecord`, the store's own type: the store writes it as the pipeline filled it."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, List, Optional, Tuple

import numpy as np

from edge.store.records import ImageRecord
from edge.vocabulary import Status

if TYPE_CHECKING:
    from os import stat_result

    from edge.imaging.decode import DecodedImage
    from edge.imaging.optics import Optics
    from edge.pipeline.quality import QualityReport

CLASSIFIED, UNREADABLE, REJECTED, DUPLICATE = Status.CLASSIFIED, Status.UNREADABLE, Status.REJECTED, Status.DUPLICATE


@dataclass
class Job:
    path: Path
    discovered: float = field(default_factory=time.monotonic)  # when the watcher saw the file closed


@dataclass
class Prepared:
    job: Job
    result: ImageRecord  # filled in as the file goes through the stages; the store writes it as it is
    model_inputs: Optional[List[np.ndarray]] = None  # None: no inference (rejected/unreadable)
    started: float = 0.0
    inferred: float = 0.0  # when stage 2 was done with it; its store time counts from here
    optics: Optional[Optics] = None  # the field's optics record, for the domain monitor in stage 2
    cell_lab: Optional[Tuple[float, ...]] = None  # stained pixels' LAB statistics before normalisation
    flags: List[str] = field(default_factory=list)  # preprocessing's own review reasons (quality.review_flags)
    # What stage 1's steps hand each other (edge/pipeline/prepare.py), dropped when stage 1 ends:
    clock: float = 0.0  # when the last timed step ended
    stat: Optional[stat_result] = None
    data: Optional[bytes] = None
    image: Optional[DecodedImage] = None
    field: Optional[np.ndarray] = None  # the working field (RGB) the gate and preprocessing share
    report: Optional[QualityReport] = None  # exposure and focus


__all__ = ["CLASSIFIED", "DUPLICATE", "REJECTED", "UNREADABLE", "Job", "Prepared"]

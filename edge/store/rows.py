"""The one mapping between an image's result (:class:`edge.store.records.ImageRecord`) and its ``images`` row.

Every column is a field of the record of the same name, except the per-stage times: ``t_<stage>_ms`` is
``timings.<stage>``. The JSON columns (probabilities, quality, segmentation) are compact, key-sorted JSON.
"""

from __future__ import annotations

import json
import os
import uuid
from typing import Any, Dict, Optional

from edge.store.records import ImageRecord, Timings
from edge.store.schema import images, utcnow
from edge.vocabulary import STAGES, STATUSES, VERDICTS

JSON_FIELDS = ("probabilities", "quality", "segmentation")
TIMING_COLUMNS = tuple(f"t_{s}_ms" for s in STAGES)
# The columns that are a field of the record under their own name.
FIELD_COLUMNS = tuple(c.name for c in images.columns if c.name not in TIMING_COLUMNS)


def image_row(rec: ImageRecord, device_id: Optional[str] = None) -> Dict[str, Any]:
    """The row to insert for ``rec``: checked (status, verdict, sha256) and with its defaults filled in (a
    new id, ``device_id`` when the record has none, the file name, now). Raises ValueError for a record
    the database would refuse."""
    if rec.status not in STATUSES:
        raise ValueError(f"status {rec.status!r} is not one of {', '.join(STATUSES)}")
    if rec.verdict is not None and rec.verdict not in VERDICTS:
        raise ValueError(f"verdict {rec.verdict!r} is not one of {', '.join(VERDICTS)}")
    if not rec.sha256:
        raise ValueError("sha256 is required (it makes recording exactly-once)")
    # Shallow: asdict() deep-copies every value, a quarter of a millisecond per image for nothing (the JSON
    # fields are serialised below, the rest are immutable).
    row = {c: getattr(rec, c) for c in FIELD_COLUMNS}
    for k in JSON_FIELDS:
        if row[k] is not None:
            row[k] = json.dumps(row[k], sort_keys=True, separators=(",", ":"))
    for s, column in zip(STAGES, TIMING_COLUMNS):
        row[column] = getattr(rec.timings, s)
    row["reason"] = rec.reason or None
    row["needs_review"] = bool(rec.needs_review)
    row["id"] = rec.id or str(uuid.uuid4())
    row["device_id"] = rec.device_id or device_id
    row["filename"] = rec.filename or os.path.basename(rec.path)
    row["recorded_at"] = rec.recorded_at or utcnow()
    return row


def image_record(row: Any) -> ImageRecord:
    """The record of a row of ``images`` (a SQLAlchemy row or a mapping with its columns)."""
    d = dict(row._mapping) if hasattr(row, "_mapping") else dict(row)
    kwargs: Dict[str, Any] = {c: d.get(c) for c in FIELD_COLUMNS}
    for k in JSON_FIELDS:
        if kwargs[k] is not None:
            kwargs[k] = json.loads(kwargs[k])
    kwargs["needs_review"] = bool(kwargs["needs_review"])
    kwargs["timings"] = Timings(*(d.get(c) for c in TIMING_COLUMNS))
    return ImageRecord(**kwargs)


__all__ = ["FIELD_COLUMNS", "JSON_FIELDS", "TIMING_COLUMNS", "image_record", "image_row"]

"""The report's samples: every sample with a field in the report's window, with all its fields (a sample
is judged whole), flagged fields first, then by malignant score. Read only, like the rest of the report."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Dict, List, Optional

import sqlalchemy as sa

from edge.store.samples import field_key, risk_key
from edge.store.schema import images, samples
from edge.vocabulary import SampleStatus, Status


@dataclass
class SampleField:
    image_id: str
    path: str
    moved_to: Optional[str]
    status: str
    reason: Optional[str]
    label: Optional[str]
    malignant_score: Optional[float]
    verdict: Optional[str]
    needs_review: bool
    sha256: Optional[str] = None  # what was recorded of the file (edge.imaging.recorded checks it before embedding)
    size: Optional[int] = None


@dataclass
class SampleBlock:
    device_id: str
    sample_id: str
    status: str
    fields: int
    readable: int
    verdict: Optional[str]
    score: Optional[float]
    needs_review: bool
    reasons: List[str]
    signed_by: Optional[str]
    final_verdict: Optional[str]
    items: List[SampleField] = field(default_factory=list)
    late_fields: int = 0  # recorded after the sign-off: not part of what was signed

    def to_json(self) -> dict:
        return {
            "device_id": self.device_id,
            "sample_id": self.sample_id,
            "status": self.status,
            "fields": self.fields,
            "readable": self.readable,
            "verdict": self.verdict,
            "score": self.score,
            "needs_review": self.needs_review,
            "review_reasons": self.reasons,
            "signed_by": self.signed_by,
            "final_verdict": self.final_verdict,
            "late_fields": self.late_fields,
        }


def sample_blocks(engine: sa.Engine, where: list) -> List[SampleBlock]:
    """``where``: the report's image filter (window, devices, ...), which picks the samples shown."""
    c, s = images.c, samples.c
    with engine.connect() as conn:
        keys = set(
            conn.execute(sa.select(c.device_id, c.sample_id).where(*where, c.sample_id.is_not(None)).distinct()).all()
        )
        if not keys:
            return []
        ids = {k[1] for k in keys}  # three queries in all, not three per sample
        rows = [
            r
            for r in conn.execute(sa.select(samples).where(s.sample_id.in_(ids)))
            if (r.device_id, r.sample_id) in keys
        ]
        items: Dict[tuple, List[SampleField]] = {}
        for r in conn.execute(
            sa.select(
                c.device_id,
                c.sample_id,
                c.id,
                c.path,
                c.moved_to,
                c.status,
                c.reason,
                c.label,
                c.malignant_score,
                c.verdict,
                c.needs_review,
                c.sha256,
                c.bytes,
            ).where(c.sample_id.in_(ids), c.status != Status.DUPLICATE)
        ):
            items.setdefault((r.device_id, r.sample_id), []).append(
                SampleField(
                    image_id=str(r.id),
                    path=r.path,
                    moved_to=r.moved_to,
                    status=r.status,
                    reason=r.reason,
                    label=r.label,
                    malignant_score=r.malignant_score,
                    verdict=r.verdict,
                    needs_review=bool(r.needs_review),
                    sha256=r.sha256,
                    size=r.bytes,
                )
            )
    # A field whose sample has no aggregate row (written by an older edge-screen) is in the report's other
    # sections, not here.
    blocks = [
        SampleBlock(
            device_id=row.device_id,
            sample_id=row.sample_id,
            status=row.status,
            fields=row.fields,
            readable=row.readable,
            verdict=row.verdict,
            score=row.score,
            needs_review=bool(row.needs_review),
            reasons=json.loads(row.review_reasons) if row.review_reasons else [],
            signed_by=row.signed_by,
            final_verdict=row.final_verdict,
            late_fields=getattr(row, "late_fields", None) or 0,
            items=sorted(items.get((row.device_id, row.sample_id), []), key=field_key),
        )
        for row in rows
    ]
    return sorted(blocks, key=lambda b: (b.status == SampleStatus.SIGNED, *risk_key(b)))  # signed ones last

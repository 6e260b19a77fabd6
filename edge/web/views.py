"""What the review pages show, built from the library's records: one object per field with its cells, why
it needs a look, its review and whether it arrived after the sign-off; the queue's rows with their reasons.

No Flask here and nothing written: :mod:`.routes` calls these and hands the result to the templates.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple

from sqlalchemy import select

from edge.imaging.fieldcells import FieldCell, field_cells
from edge.store.records import ImageRecord
from edge.store.reviews import Review, card_labels, history, latest_field_reviews
from edge.store.samples import Sample, Samples, late_field_ids, risk_key
from edge.store.schema import models, samples
from edge.vocabulary import BENIGN, SampleStatus, Status
from edge.web.media import image_file
from edge.web.plain import Reason, field_reason, field_review_reasons, queue_reason, sample_reasons


@dataclass
class FieldView:
    rec: ImageRecord
    labels: Tuple[str, ...]  # the labels of the card of the model that made this call
    file_present: bool
    review: Optional[Review]  # the newest field review, if any
    cells: List[FieldCell] = field(default_factory=list)  # most malignant first
    why: List[Reason] = field(default_factory=list)  # why it is unreadable, or why it is marked review
    late: bool = False  # recorded after the sample was signed

    @property
    def shown_label(self) -> Optional[str]:
        """The label the page shows as current: the newest review's, else the model's (None: no label)."""
        if self.review is not None:
            return self.review.reviewer_label
        return self.rec.label if self.rec.status == Status.CLASSIFIED else None

    @property
    def confirmable(self) -> bool:
        return self.rec.status == Status.CLASSIFIED and bool(self.rec.label) and self.review is None


@dataclass
class QueueRow:
    sample: Sample
    why: List[Reason]
    subtype: Optional[Tuple[str, int, int]]  # (label, its fields, malignant fields)

    @property
    def unreadable(self) -> int:
        return self.sample.fields - self.sample.readable


@dataclass
class SampleView:
    sample: Sample
    fields: List[FieldView]
    history: List[Review]
    sample_labels: Tuple[str, ...]
    reasons: List[Reason]
    subtype: Optional[Tuple[str, int, int]]
    prev_id: Optional[str]
    next_id: Optional[str]

    @property
    def counts(self) -> Dict[str, int]:
        """Field reviews so far: confirmed, corrected, not reviewed (of the fields with a label to review)."""
        out = {"confirmed": 0, "corrected": 0, "open": 0, "unreadable": 0, "late": 0}
        for f in self.fields:
            if f.late:  # not part of what was signed: counted apart
                out["late"] += 1
                continue
            if f.rec.status == Status.DUPLICATE:
                continue
            if f.rec.status != Status.CLASSIFIED:
                out["unreadable"] += 1
            elif f.review is None:
                out["open"] += 1
            elif f.review.reviewer_label == f.rec.label:
                out["confirmed"] += 1
            else:
                out["corrected"] += 1
        return out

    @property
    def to_confirm(self) -> List[FieldView]:
        return [f for f in self.fields if f.confirmable and not f.late]


def _review_bands(store, model_ids) -> Dict[Optional[str], Optional[Tuple[float, float]]]:
    ids = [m for m in set(model_ids) if m]
    out: Dict[Optional[str], Optional[Tuple[float, float]]] = {None: None}
    if not ids:
        return out
    with store.engine.connect() as conn:
        for mid, card in conn.execute(select(models.c.id, models.c.card).where(models.c.id.in_(ids))):
            try:
                band = json.loads(card).get("review_band") if card else None
                out[mid] = (float(band[0]), float(band[1])) if band else None
            except (ValueError, TypeError, AttributeError, IndexError):
                out[mid] = None
    return out


def field_views(store, s: Sample, recs: Sequence[ImageRecord], hist: Sequence[Review]) -> List[FieldView]:
    latest = latest_field_reviews(store, s.sample_id, hist)
    late = late_field_ids(s, recs)
    bands = _review_bands(store, (r.model_id for r in recs))
    labels: Dict[Optional[str], Tuple[str, ...]] = {}
    out = []
    for rec in recs:
        if rec.model_id not in labels:
            labels[rec.model_id] = card_labels(store, rec.model_id)
        cells = field_cells(rec.segmentation)
        if rec.status == Status.CLASSIFIED:
            why = field_review_reasons(rec, bands.get(rec.model_id), [c.score for c in cells if c.score is not None])
        else:
            why = [field_reason(rec.reason)]
        out.append(
            FieldView(
                rec,
                labels[rec.model_id],
                image_file(rec) is not None,
                latest.get(rec.id or ""),
                cells,
                why,
                rec.id in late,
            )
        )
    # Late fields first: they are what the signer never saw.
    return sorted(out, key=lambda f: not f.late)


def ready_in_order(lib: Samples, device: str) -> List[Sample]:
    """The queue: ready samples, riskiest first (the order next/previous sample follows)."""
    return sorted(lib.list(SampleStatus.READY, device_id=device, order=[samples.c.ready_at]), key=risk_key)


def queue_rows(lib: Samples, ready: Sequence[Sample]) -> List[QueueRow]:
    ids = [s.sample_id for s in ready]
    subtypes, flagged = lib.subtypes(ids), lib.fields_to_review(ids)
    rows = []
    for s in ready:
        why = queue_reason(s)
        n = flagged.get(s.sample_id, 0)
        if n:
            why.append(Reason(f"{n} field{'s' if n != 1 else ''} marked for review", f"{n} field(s) needs_review"))
        rows.append(QueueRow(s, why, subtypes.get(s.sample_id) if s.verdict == "malignant" else None))
    return rows


def late_signed(lib: Samples, device: str) -> List[Sample]:
    """Signed samples that got fields after their sign-off: someone must look at those fields."""
    return [
        s for s in lib.list(SampleStatus.SIGNED, device_id=device, order=[samples.c.signed_at.desc()]) if s.late_fields
    ]


def sample_view(store, lib: Samples, s: Sample, device: str) -> SampleView:
    hist = history(store, s.sample_id)
    fields = field_views(store, s, lib.fields(s), hist)
    order = [r.sample_id for r in ready_in_order(lib, device)]
    prev_id = next_id = None
    if s.sample_id in order:
        i = order.index(s.sample_id)
        prev_id = order[i - 1] if i > 0 else None
        next_id = order[i + 1] if i + 1 < len(order) else None
    elif order:
        next_id = order[0]
    subtype = lib.subtypes([s.sample_id]).get(s.sample_id) if s.verdict == "malignant" else None
    return SampleView(
        sample=s,
        fields=fields,
        history=hist,
        sample_labels=card_labels(store, s.model_id),
        reasons=sample_reasons(s.review_reasons) if s.needs_review else [],
        subtype=subtype,
        prev_id=prev_id,
        next_id=next_id,
    )


def signoff_summary(view: SampleView, verdict: str, label: Optional[str], comment: Optional[str]) -> List[str]:
    """What a sign-off says, in lines a reviewer confirms before it is recorded; disagreements first."""
    s, c = view.sample, view.counts
    lines = []
    if s.verdict and verdict != s.verdict:
        lines.append(f"You sign {verdict.upper()}; the model said {s.verdict} (score {s.score:.3f}).")
    if label and view.subtype and label != view.subtype[0] and label != BENIGN:
        lines.append(f"Subtype {label}; the model's most common subtype was {view.subtype[0]}.")
    lines.append(f"Final verdict: {verdict}" + (f", {label}" if label else ", no label") + ".")
    lines.append(
        f"Model: {s.verdict or 'no verdict'}"
        + (f" {s.score:.3f}" if s.score is not None else "")
        + f" on {s.readable} readable of {s.fields} fields"
        + (f" ({c['unreadable']} unreadable)." if c["unreadable"] else ".")
    )
    lines.append(f"Field reviews: {c['confirmed']} confirmed, {c['corrected']} corrected, {c['open']} not reviewed.")
    if s.min_readable is not None and s.readable < s.min_readable:
        lines.append(f"Fewer readable fields than the rule needs ({s.readable} of {s.min_readable}).")
    lines.append(f"Comment: {comment}" if comment else "No comment.")
    return lines


__all__ = [
    "FieldView",
    "QueueRow",
    "SampleView",
    "field_views",
    "late_signed",
    "queue_rows",
    "ready_in_order",
    "sample_view",
    "signoff_summary",
]

"""Samples: one patient smear, many fields of view, one verdict.

A sample is a subfolder of the inbox (``inbox/<sample-id>/field.jpg``); images at the inbox root belong to
one sample per UTC day (``day-YYYY-MM-DD``), so a clinic that never makes folders still gets per-day
samples instead of nothing. A sample id is a folder name we will also put in URLs, file names and FHIR
identifiers, so it is validated strictly (no separators, no dot-dot, no leading dot).

Lifecycle: ``collecting`` (fields arriving) -> ``ready`` (>= N readable fields and no new field for T
seconds, or closed by hand) -> ``signed`` (a reviewer's sign-off, :mod:`edge.store.reviews`). The aggregate
(fields, readable, verdict, score, needs_review) is recomputed from the sample's image rows whenever a field
is recorded, so it is never out of step with them. The verdict rule and its parameters come from the model
card's ``sample_rule`` (chosen by the trainer on validation blocks treated as samples), never from here.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Callable, ContextManager, Dict, Iterable, List, Optional, Sequence

from sqlalchemy import and_, bindparam, func, select
from sqlalchemy.engine import Connection, Engine

from edge.store.records import ImageRecord
from edge.store.rows import image_record
from edge.store.samplerule import (
    SampleError,
    SampleRule,
    SampleVerdict,
    day_sample,
    judge,
    sample_of,
    validate_sample_id,
)
from edge.store.schema import images, samples, utcnow
from edge.vocabulary import SAMPLE_STATUSES, SampleStatus, Status


@dataclass
class Sample:
    id: str
    device_id: str
    sample_id: str
    created_at: datetime
    updated_at: datetime
    last_field_at: Optional[datetime]
    fields: int
    readable: int
    status: str
    verdict: Optional[str]
    score: Optional[float]
    needs_review: bool
    review_reasons: List[str]
    model_sha256: Optional[str]
    model_id: Optional[str] = None
    ready_at: Optional[datetime] = None
    closed_by: Optional[str] = None
    signed_at: Optional[datetime] = None
    signed_by: Optional[str] = None
    final_verdict: Optional[str] = None
    final_label: Optional[str] = None
    late_fields: int = 0  # recorded after the sign-off: not part of what was signed
    rule: Optional[dict] = None  # the card's sample rule that produced verdict and score

    @classmethod
    def from_row(cls, row) -> Sample:
        d = dict(row._mapping)
        d["review_reasons"] = json.loads(d["review_reasons"]) if d.get("review_reasons") else []
        d["needs_review"] = bool(d["needs_review"])
        d["late_fields"] = d.get("late_fields") or 0
        d["rule"] = json.loads(d["rule"]) if d.get("rule") else None
        kwargs: Dict[str, Any] = {k: d.get(k) for k in cls.__dataclass_fields__}
        return cls(**kwargs)

    @property
    def version(self) -> str:
        """Changes whenever what a reviewer sees of the sample changes (a field recorded, closed, signed):
        a sign-off names the version it was made on, and one made on an older page is refused."""
        key = "|".join(
            str(v)
            for v in (
                self.status,
                self.fields,
                self.readable,
                self.verdict,
                self.score,
                self.updated_at.isoformat(),
                self.late_fields,
            )
        )
        return hashlib.sha256(key.encode()).hexdigest()[:16]

    @property
    def min_readable(self) -> Optional[int]:
        return int(self.rule["min_readable"]) if self.rule and "min_readable" in self.rule else None

    def to_json(self) -> dict:
        """The `samples --format json` shape (stable keys; times as ISO 8601 UTC)."""
        return {
            "sample_id": self.sample_id,
            "device_id": self.device_id,
            "fields": self.fields,
            "readable": self.readable,
            "status": self.status,
            "verdict": self.verdict,
            "score": self.score,
            "needs_review": self.needs_review,
            "review_reasons": self.review_reasons,
            "created_at": self.created_at.isoformat(),
            "updated_at": self.updated_at.isoformat(),
            "last_field_at": _iso(self.last_field_at),
            "ready_at": _iso(self.ready_at),
            "closed_by": self.closed_by,
            "signed_at": _iso(self.signed_at),
            "signed_by": self.signed_by,
            "final_verdict": self.final_verdict,
            "final_label": self.final_label,
            "model_sha256": self.model_sha256,
            "late_fields": self.late_fields,
        }


def _iso(t: Optional[datetime]) -> Optional[str]:
    return t.isoformat() if t is not None else None


# Built once: statement construction (SQLAlchemy's coercions) cost more than running them, and this runs
# inside every commit of a field.
_FIELDS = select(images.c.status, images.c.malignant_score, images.c.domain).where(
    images.c.device_id == bindparam("device"),
    images.c.sample_id == bindparam("sample"),
    images.c.status != Status.DUPLICATE,
)
_LAST_FIELD = select(func.max(images.c.recorded_at)).where(
    images.c.device_id == bindparam("device"),
    images.c.sample_id == bindparam("sample"),
    images.c.status != Status.DUPLICATE,
)
_EXISTING = select(samples.c.id, samples.c.status, samples.c.fields, samples.c.late_fields).where(
    samples.c.device_id == bindparam("device"), samples.c.sample_id == bindparam("sample")
)
_UPDATE = samples.update().where(samples.c.id == bindparam("row_id"))


def _recompute(
    conn,
    device_id: str,
    sample_id: str,
    rule: Optional[SampleRule],
    model_id: Optional[str],
    model_sha256: Optional[str],
    now: datetime,
) -> None:
    key = {"device": device_id, "sample": sample_id}
    rows = conn.execute(_FIELDS, key).all()
    v = judge([r.status for r in rows], [r.malignant_score for r in rows], rule, [r.domain for r in rows])
    values = dict(
        fields=v.fields,
        readable=v.readable,
        verdict=v.verdict,
        score=v.score,
        needs_review=v.needs_review,
        review_reasons=json.dumps(v.reasons),
        rule=json.dumps(rule.to_dict(), sort_keys=True) if rule else None,
        model_id=model_id,
        model_sha256=model_sha256,
        last_field_at=conn.execute(_LAST_FIELD, key).scalar(),
        updated_at=now,
    )
    existing = conn.execute(_EXISTING, key).first()
    if existing is None:
        conn.execute(
            samples.insert().values(
                id=str(uuid.uuid4()),
                device_id=device_id,
                sample_id=sample_id,
                created_at=now,
                status=SampleStatus.COLLECTING,
                **values,
            )
        )
    elif existing.status != SampleStatus.SIGNED:
        conn.execute(_UPDATE, {"row_id": existing.id, **values})
    else:
        # A signed sample's verdict is what was signed; later fields don't move it. Its field count stays
        # as signed, so the fields beyond it arrived after the sign-off: counted, so they are seen.
        late = max(0, v.fields - (existing.fields or 0))
        if late != (existing.late_fields or 0):
            conn.execute(_UPDATE, {"row_id": existing.id, "late_fields": late, "updated_at": now})


def late_field_ids(sample: Sample, recs: Sequence) -> set:
    """Ids of the fields recorded after the sample was signed: the newest ``late_fields`` counted fields (the
    signed count never moves, so the rest are what was signed) and any duplicate recorded after it."""
    if sample.status != SampleStatus.SIGNED:
        return set()
    counted = sorted((r for r in recs if r.status != Status.DUPLICATE), key=lambda r: (r.recorded_at, r.id or ""))
    late = {r.id for r in counted[len(counted) - sample.late_fields :]} if sample.late_fields else set()
    if sample.signed_at is not None:
        late |= {r.id for r in recs if r.status == Status.DUPLICATE and r.recorded_at > sample.signed_at}
    return late


def risk_key(s) -> tuple:
    """Riskiest first, as a reviewer takes them: needs review, then a malignant verdict, then the higher
    score (any object with needs_review, verdict, score and sample_id: a Sample or a report's block)."""
    return (not s.needs_review, s.verdict != "malignant", -(s.score if s.score is not None else -1.0), s.sample_id)


def field_key(f) -> tuple:
    """A sample's fields as a reviewer reads them: flagged first (needs review, malignant, or not
    classified), then by malignant score, highest first (an image record or a report's field)."""
    flagged = f.needs_review or f.verdict == "malignant" or f.status != Status.CLASSIFIED
    return (not flagged, -(f.malignant_score if f.malignant_score is not None else -1.0), f.path)


class Samples:
    """A store's samples: their aggregation as fields are recorded, and the queries and state changes the
    library offers (`samples`, `sample close`, `serve`, the daemon's idle promotion).

    The store makes one (``Store.samples``) with the sample rule it was opened with: the model card's rule
    that turns the fields' scores into the sample's verdict (``rule``; None: a card without one, every
    sample then needs review). It is given the store's connections, not the store: ``engine`` for reads,
    ``write()`` for a write transaction (:meth:`Store.write`), ``device()`` for this device's id.
    """

    def __init__(
        self,
        engine: Engine,
        write: Callable[[], ContextManager[Connection]],
        device: Callable[[], str],
        rule: Optional[SampleRule] = None,
    ):
        self.engine = engine
        self.write = write
        self.device = device
        self.rule = rule  # replaced only when a reload of the daemon changes the model

    def update(
        self, conn: Connection, sample_ids: Iterable[str], model_id: Optional[str], model_sha256: Optional[str]
    ) -> None:
        """Recompute the named samples with :attr:`rule` inside the caller's write transaction (the one that
        records their new fields: never a field without its sample's aggregate, nor the reverse)."""
        now = utcnow()
        for sid in sorted({s for s in sample_ids if s}):
            _recompute(conn, self.device(), sid, self.rule, model_id, model_sha256, now)

    def list(
        self,
        status: Optional[str] = None,
        device_id: Optional[str] = None,
        order: Sequence = (),
        limit: Optional[int] = None,
    ) -> List[Sample]:
        """Samples, oldest first unless ``order`` (SQL order-by terms) says otherwise."""
        q = select(samples).order_by(*(order or (samples.c.created_at, samples.c.sample_id)))
        if status:
            q = q.where(samples.c.status == status)
        if device_id:
            q = q.where(samples.c.device_id == device_id)
        if limit:
            q = q.limit(limit)
        with self.engine.connect() as conn:
            return [Sample.from_row(r) for r in conn.execute(q)]

    def get(self, sample_id: str, device_id: Optional[str] = None) -> Optional[Sample]:
        q = select(samples).where(samples.c.sample_id == sample_id, samples.c.device_id == (device_id or self.device()))
        with self.engine.connect() as conn:
            row = conn.execute(q).first()
        return Sample.from_row(row) if row else None

    def fields(self, sample: Sample) -> List[ImageRecord]:
        """The sample's image records, flagged first, then by malignant score (highest first)."""
        q = select(images).where(images.c.device_id == sample.device_id, images.c.sample_id == sample.sample_id)
        with self.engine.connect() as conn:
            recs = [image_record(r) for r in conn.execute(q)]
        return sorted(recs, key=field_key)

    def close(self, sample_id: str, by: str = "manual") -> Sample:
        """Mark a collecting sample ready now (a technician says no more fields are coming)."""
        validate_sample_id(sample_id)
        with self.write() as conn:
            row = conn.execute(
                select(samples.c.status).where(samples.c.device_id == self.device(), samples.c.sample_id == sample_id)
            ).first()
            if row is None:
                raise SampleError(f"no sample {sample_id!r} on device {self.device()}")
            if row.status == SampleStatus.COLLECTING:
                now = utcnow()
                conn.execute(
                    samples.update()
                    .where(samples.c.device_id == self.device(), samples.c.sample_id == sample_id)
                    .values(status=SampleStatus.READY, ready_at=now, closed_by=by, updated_at=now)
                )
        closed = self.get(sample_id)
        assert closed is not None  # the row was there inside the transaction
        return closed

    def promote_idle(self, min_readable: int, idle_s: float, now: Optional[datetime] = None) -> List[str]:
        """Collecting samples with >= min_readable readable fields and no field for idle_s become ready."""
        now = now or utcnow()
        cutoff = now - timedelta(seconds=idle_s)
        cond = and_(
            samples.c.device_id == self.device(),
            samples.c.status == SampleStatus.COLLECTING,
            samples.c.readable >= min_readable,
            samples.c.last_field_at <= cutoff,
        )
        with self.write() as conn:
            ids = [r.sample_id for r in conn.execute(select(samples.c.sample_id).where(cond))]
            if ids:
                conn.execute(
                    samples.update()
                    .where(cond)
                    .values(status=SampleStatus.READY, ready_at=now, closed_by="rule", updated_at=now)
                )
        return ids

    def subtypes(self, sample_ids: Sequence[str]) -> Dict[str, tuple]:
        """sample id -> (most common label among its malignant fields, its fields, malignant fields): the
        subtype a reviewer reads beside a malignant verdict."""
        if not sample_ids:
            return {}
        q = (
            select(images.c.sample_id, images.c.label, func.count())
            .where(
                images.c.device_id == self.device(),
                images.c.sample_id.in_(list(sample_ids)),
                images.c.status == Status.CLASSIFIED,
                images.c.verdict == "malignant",
            )
            .group_by(images.c.sample_id, images.c.label)
        )
        by: Dict[str, Dict[str, int]] = {}
        with self.engine.connect() as conn:
            for sid, label, n in conn.execute(q):
                by.setdefault(sid, {})[label] = n
        return {sid: (max(c, key=lambda k: (c[k], k)), max(c.values()), sum(c.values())) for sid, c in by.items()}

    def fields_to_review(self, sample_ids: Sequence[str]) -> Dict[str, int]:
        """sample id -> how many of its classified fields the model marked for review."""
        if not sample_ids:
            return {}
        q = (
            select(images.c.sample_id, func.count())
            .where(
                images.c.device_id == self.device(),
                images.c.sample_id.in_(list(sample_ids)),
                images.c.status == Status.CLASSIFIED,
                images.c.needs_review.is_(True),
            )
            .group_by(images.c.sample_id)
        )
        with self.engine.connect() as conn:
            return {sid: n for sid, n in conn.execute(q)}

    def counts(self) -> Dict[str, int]:
        with self.engine.connect() as conn:
            rows = conn.execute(select(samples.c.status, func.count()).group_by(samples.c.status)).all()
        return {s: n for s, n in rows}


__all__ = [
    "SAMPLE_STATUSES",
    "Sample",
    "SampleError",
    "SampleRule",
    "SampleVerdict",
    "Samples",
    "day_sample",
    "field_key",
    "judge",
    "late_field_ids",
    "risk_key",
    "sample_of",
    "validate_sample_id",
]

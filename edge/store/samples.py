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

import json
import re
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Sequence

from sqlalchemy import and_, func, select

from edge.store.schema import images, samples, utcnow

SAMPLE_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
SAMPLE_STATUSES = ("collecting", "ready", "signed")
STATISTICS = ("mean", "quantile", "fraction_malignant")


class SampleError(ValueError):
    """A bad sample id or a sample that cannot change as asked; ``str(err)`` is one line."""


def validate_sample_id(text: str) -> str:
    if not isinstance(text, str) or not SAMPLE_ID_RE.match(text) or ".." in text:
        raise SampleError(f"invalid sample id {text!r}: use 1-64 of A-Z a-z 0-9 . _ - , starting with a letter "
                          "or digit, no '..'")
    return text


def day_sample(when: datetime) -> str:
    return f"day-{when.strftime('%Y-%m-%d')}"


def sample_of(path: Path, inbox: Path, when: datetime) -> str:
    """The sample a file in the inbox belongs to; raises :class:`SampleError` for a folder name that is not a
    valid sample id (the pipeline records the file as rejected with that reason)."""
    rel = Path(path).relative_to(inbox)
    if len(rel.parts) == 1:
        return day_sample(when)
    if len(rel.parts) != 2:
        raise SampleError(f"{rel.parent} is nested too deep: a sample is one folder directly in the inbox")
    return validate_sample_id(rel.parts[0])


# ------------------------------------------------------------------------------------------- the rule
@dataclass(frozen=True)
class SampleRule:
    """The card's ``sample_rule``: how the fields' malignant scores become one sample verdict."""
    statistic: str  # mean | quantile | fraction_malignant (share of readable fields at/above field threshold)
    threshold: float  # the sample is malignant when statistic >= threshold
    review_band: tuple  # (lo, hi): a statistic inside it needs review
    min_readable: int  # fewer readable fields than this: needs review
    disagreement: float  # this share of fields confidently against the sample verdict: needs review
    q: float = 0.5
    field_threshold: float = 0.5

    @classmethod
    def from_card(cls, card_extra: dict, field_threshold: float) -> Optional["SampleRule"]:
        raw = card_extra.get("sample_rule")
        if not raw:
            return None
        if raw.get("statistic") not in STATISTICS:
            raise ValueError(f"sample_rule.statistic {raw.get('statistic')!r} is not one of {', '.join(STATISTICS)}")
        return cls(statistic=raw["statistic"], threshold=float(raw["threshold"]),
                   review_band=tuple(float(x) for x in raw["review_band"]),
                   min_readable=int(raw["min_readable"]), disagreement=float(raw["disagreement"]),
                   q=float(raw.get("q", 0.5)), field_threshold=float(raw.get("field_threshold", field_threshold)))

    def statistic_of(self, scores: Sequence[float]) -> float:
        xs = sorted(scores)
        if self.statistic == "mean":
            return sum(xs) / len(xs)
        if self.statistic == "fraction_malignant":
            return sum(1 for x in xs if x >= self.field_threshold) / len(xs)
        pos = self.q * (len(xs) - 1)  # linear interpolation, as numpy.quantile's default
        lo = int(pos)
        hi = min(lo + 1, len(xs) - 1)
        return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)

    def to_dict(self) -> dict:
        return {"statistic": self.statistic, "q": self.q, "threshold": self.threshold,
                "review_band": list(self.review_band), "min_readable": self.min_readable,
                "disagreement": self.disagreement, "field_threshold": self.field_threshold}


@dataclass
class SampleVerdict:
    fields: int
    readable: int
    verdict: Optional[str] = None
    score: Optional[float] = None
    needs_review: bool = True
    reasons: List[str] = field(default_factory=list)


def judge(statuses: Sequence[str], scores: Sequence[Optional[float]], rule: Optional[SampleRule],
          domains: Sequence[Optional[str]] = ()) -> SampleVerdict:
    """The sample verdict from its fields (status, malignant score and domain-monitor reason of each,
    duplicates left out)."""
    readable = [s for st, s in zip(statuses, scores) if st == "classified" and s is not None]
    out = SampleVerdict(fields=len(statuses), readable=len(readable))
    outside = [d for st, d in zip(statuses, domains) if st == "classified" and d]
    if outside:
        # The model was not validated on slides like these: its verdict is a hint, a person decides.
        out.reasons.append(f"outside the validated range on {len(outside)} of {len(readable)} readable "
                           f"fields: {outside[0].split('; ')[0]}")
    if rule is None:
        out.reasons.append("the model card has no sample rule")
        return out
    if readable:
        out.score = round(rule.statistic_of(readable), 6)
        out.verdict = "malignant" if out.score >= rule.threshold else "benign"
    if len(readable) < rule.min_readable:
        out.reasons.append(f"only {len(readable)} readable field(s), the rule needs {rule.min_readable}")
    if out.score is not None:
        lo, hi = rule.review_band
        if lo <= out.score <= hi:
            out.reasons.append(f"score {out.score:.3f} is inside the review band {lo:.3f}-{hi:.3f}")
        against = sum(1 for s in readable if (s >= rule.field_threshold) != (out.verdict == "malignant"))
        if against and against / len(readable) >= rule.disagreement:
            out.reasons.append(f"{against} of {len(readable)} fields disagree with the sample verdict")
    out.needs_review = bool(out.reasons)
    return out


# ------------------------------------------------------------------------------------- persistence
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

    @classmethod
    def from_row(cls, row) -> "Sample":
        d = dict(row._mapping)
        d["review_reasons"] = json.loads(d["review_reasons"]) if d.get("review_reasons") else []
        d["needs_review"] = bool(d["needs_review"])
        return cls(**{k: d[k] for k in cls.__dataclass_fields__})

    def to_json(self) -> dict:
        """The `samples --format json` shape (stable keys; times as ISO 8601 UTC)."""
        return {"sample_id": self.sample_id, "device_id": self.device_id, "fields": self.fields,
                "readable": self.readable, "status": self.status, "verdict": self.verdict, "score": self.score,
                "needs_review": self.needs_review, "review_reasons": self.review_reasons,
                "created_at": self.created_at.isoformat(), "updated_at": self.updated_at.isoformat(),
                "signed_by": self.signed_by, "final_verdict": self.final_verdict,
                "model_sha256": self.model_sha256}


def _recompute(conn, device_id: str, sample_id: str, rule: Optional[SampleRule], model_id: Optional[str],
               model_sha256: Optional[str], now: datetime) -> None:
    rows = conn.execute(select(images.c.status, images.c.malignant_score, images.c.recorded_at,
                               images.c.domain).where(
        images.c.device_id == device_id, images.c.sample_id == sample_id, images.c.status != "duplicate")).all()
    v = judge([r.status for r in rows], [r.malignant_score for r in rows], rule, [r.domain for r in rows])
    last = max((r.recorded_at for r in rows), default=None)
    values = dict(fields=v.fields, readable=v.readable, verdict=v.verdict, score=v.score,
                  needs_review=v.needs_review, review_reasons=json.dumps(v.reasons),
                  rule=json.dumps(rule.to_dict(), sort_keys=True) if rule else None, model_id=model_id,
                  model_sha256=model_sha256, last_field_at=last, updated_at=now)
    existing = conn.execute(select(samples.c.id, samples.c.status).where(
        samples.c.device_id == device_id, samples.c.sample_id == sample_id)).first()
    if existing is None:
        conn.execute(samples.insert().values(id=str(uuid.uuid4()), device_id=device_id, sample_id=sample_id,
                                             created_at=now, status="collecting", **values))
    elif existing.status != "signed":  # a signed sample's verdict is what was signed; later fields don't move it
        conn.execute(samples.update().where(samples.c.id == existing.id).values(**values))


def update_samples(conn, device_id: str, sample_ids: Iterable[str], rule: Optional[SampleRule],
                   model_id: Optional[str], model_sha256: Optional[str]) -> None:
    """Recompute the named samples inside the caller's (write) transaction."""
    now = utcnow()
    for sid in sorted({s for s in sample_ids if s}):
        _recompute(conn, device_id, sid, rule, model_id, model_sha256, now)


def risk_key(s) -> tuple:
    """Riskiest first, as a reviewer takes them: needs review, then a malignant verdict, then the higher
    score (any object with needs_review, verdict, score and sample_id: a Sample or a report's block)."""
    return (not s.needs_review, s.verdict != "malignant", -(s.score if s.score is not None else -1.0), s.sample_id)


def field_key(f) -> tuple:
    """A sample's fields as a reviewer reads them: flagged first (needs review, malignant, or not
    classified), then by malignant score, highest first (an image record or a report's field)."""
    flagged = f.needs_review or f.verdict == "malignant" or f.status != "classified"
    return (not flagged, -(f.malignant_score if f.malignant_score is not None else -1.0), f.path)


class Samples:
    """Queries and state changes on a store's samples (the library under `samples`, `sample close`, `serve`)."""

    def __init__(self, store):
        self.store = store

    def list(self, status: Optional[str] = None, device_id: Optional[str] = None, order: Sequence = (),
             limit: Optional[int] = None) -> List[Sample]:
        """Samples, oldest first unless ``order`` (SQL order-by terms) says otherwise."""
        q = select(samples).order_by(*(order or (samples.c.created_at, samples.c.sample_id)))
        if status:
            q = q.where(samples.c.status == status)
        if device_id:
            q = q.where(samples.c.device_id == device_id)
        if limit:
            q = q.limit(limit)
        with self.store.engine.connect() as conn:
            return [Sample.from_row(r) for r in conn.execute(q)]

    def get(self, sample_id: str, device_id: Optional[str] = None) -> Optional[Sample]:
        q = select(samples).where(samples.c.sample_id == sample_id,
                                  samples.c.device_id == (device_id or self.store.device()))
        with self.store.engine.connect() as conn:
            row = conn.execute(q).first()
        return Sample.from_row(row) if row else None

    def fields(self, sample: Sample) -> list:
        """The sample's image records, flagged first, then by malignant score (highest first)."""
        from edge.store.records import ImageRecord
        q = select(images).where(images.c.device_id == sample.device_id, images.c.sample_id == sample.sample_id)
        with self.store.engine.connect() as conn:
            recs = [ImageRecord.from_row(r) for r in conn.execute(q)]
        return sorted(recs, key=field_key)

    def close(self, sample_id: str, by: str = "manual") -> Sample:
        """Mark a collecting sample ready now (a technician says no more fields are coming)."""
        validate_sample_id(sample_id)
        with self.store.write() as conn:
            row = conn.execute(select(samples.c.status).where(samples.c.device_id == self.store.device(),
                                                             samples.c.sample_id == sample_id)).first()
            if row is None:
                raise SampleError(f"no sample {sample_id!r} on device {self.store.device()}")
            if row.status == "collecting":
                now = utcnow()
                conn.execute(samples.update().where(samples.c.device_id == self.store.device(),
                                                    samples.c.sample_id == sample_id)
                             .values(status="ready", ready_at=now, closed_by=by, updated_at=now))
        return self.get(sample_id)

    def promote_idle(self, min_readable: int, idle_s: float, now: Optional[datetime] = None) -> List[str]:
        """Collecting samples with >= min_readable readable fields and no field for idle_s become ready."""
        now = now or utcnow()
        cutoff = now - timedelta(seconds=idle_s)
        cond = and_(samples.c.device_id == self.store.device(), samples.c.status == "collecting",
                    samples.c.readable >= min_readable, samples.c.last_field_at <= cutoff)
        with self.store.write() as conn:
            ids = [r.sample_id for r in conn.execute(select(samples.c.sample_id).where(cond))]
            if ids:
                conn.execute(samples.update().where(cond).values(status="ready", ready_at=now, closed_by="rule",
                                                                 updated_at=now))
        return ids

    def counts(self) -> Dict[str, int]:
        with self.store.engine.connect() as conn:
            rows = conn.execute(select(samples.c.status, func.count()).group_by(samples.c.status)).all()
        return {s: n for s, n in rows}


__all__ = ["SAMPLE_STATUSES", "Sample", "SampleError", "SampleRule", "SampleVerdict", "Samples", "day_sample",
           "field_key", "judge", "risk_key", "sample_of", "update_samples", "validate_sample_id"]

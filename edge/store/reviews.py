"""Reviews: what a person said about a field or a whole sample, and the accounts allowed to say it.

The library under `edge-screen serve` and `edge-screen user`; no web code here. A review never changes what
the model said: ``images`` is never written, and a sample's own verdict and score stay as the model left
them. A field review records the model's label, score and sha256 beside the reviewer's label, so the audit
row is readable on its own after the model is replaced. A sign-off is the one review that changes a sample:
its status becomes ``signed`` with the reviewer's final verdict, in the same transaction as the review row.

Every refusal is a :class:`ReviewError` with a one-line message, raised before anything is written (or
inside the write transaction, which then rolls back), so a refused call changes nothing.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Dict, List, Optional, Sequence, Tuple

from sqlalchemy import select

from edge.store.accounts import (
    MIN_PASSWORD,
    WRITERS,
    ReviewError,
    User,
    add_user,
    find_row,
    get_user,
    list_users,
    user_from_row,
    verify_user,
)
from edge.store.samples import Sample, SampleError, validate_sample_id
from edge.store.schema import images, models, reviews, samples, utcnow
from edge.vocabulary import BENIGN, LABELS, ROLES, VERDICTS, SampleStatus, Status

MAX_COMMENT = 2000


class ReviewConflict(ReviewError):
    """Refused because of the sample's state (not ready, already signed), not because of the input."""


@dataclass(frozen=True)
class Review:
    id: str
    device_id: str
    created_at: datetime
    reviewer: str
    kind: str  # field | sample | signoff
    sample_id: str
    image_id: Optional[str]
    model_label: Optional[str]
    model_score: Optional[float]
    model_sha256: Optional[str]
    reviewer_label: Optional[str]
    reviewer_verdict: Optional[str]
    comment: Optional[str]

    @classmethod
    def from_row(cls, row) -> Review:
        d = row._mapping
        return cls(**{k: d[k] for k in cls.__dataclass_fields__})


# ------------------------------------------------------------------------------------------- accounts
# In edge.store.accounts; re-exported here, where they were first.


def _reviewer(conn, name: str) -> User:
    row = find_row(conn, name)
    if row is None:
        raise ReviewError(f"no user {name!r}")
    user = user_from_row(row)
    if user.disabled:
        raise ReviewError(f"user {name!r} is disabled")
    if user.role not in WRITERS:
        raise ReviewError(f"user {name!r} is a {user.role}: only a reviewer or an admin may review or sign off")
    return user


# ------------------------------------------------------------------------------------------- labels
def card_labels(store, model_id: Optional[str]) -> Tuple[str, ...]:
    """The labels of the model card that made a call (a reviewer chooses among what the model could say);
    the vocabulary's labels when the model row or its card is missing."""
    with store.engine.connect() as conn:
        return _card_labels(conn, model_id)


def _card_labels(conn, model_id: Optional[str]) -> Tuple[str, ...]:
    if not model_id:
        return LABELS
    card = conn.execute(select(models.c.card).where(models.c.id == model_id)).scalar()
    try:
        labels = json.loads(card).get("labels") if card else None
    except (ValueError, AttributeError):
        labels = None
    return tuple(str(x) for x in labels) if labels else LABELS


def _check_label(label: Optional[str], allowed: Sequence[str]) -> str:
    if label not in allowed:
        raise ReviewError(f"label {label!r} is not one of the model card's labels: {', '.join(allowed)}")
    assert label is not None
    return label


def _comment(text: Optional[str]) -> Optional[str]:
    text = (text or "").strip()
    if len(text) > MAX_COMMENT:
        raise ReviewError(f"comment too long: {len(text)} characters, at most {MAX_COMMENT}")
    return text or None


# ------------------------------------------------------------------------------------------- reviews
def review_field(store, reviewer: str, image_id: str, reviewer_label: str, comment: Optional[str] = None) -> Review:
    """Confirm (same label) or correct (another label) the model's call on one field of a sample."""
    device = store.device()
    comment = _comment(comment)
    with store.write() as conn:
        _reviewer(conn, reviewer)
        img = conn.execute(select(images).where(images.c.id == str(image_id), images.c.device_id == device)).first()
        if img is None or not img.sample_id:
            raise ReviewError(f"no field {image_id!r} in a sample of device {device}")
        if img.status == Status.DUPLICATE:
            raise ReviewError(f"field {image_id} is a duplicate: review the original ({img.duplicate_of})")
        st = conn.execute(
            select(samples.c.status).where(samples.c.device_id == device, samples.c.sample_id == img.sample_id)
        ).scalar()
        if st is None:
            raise ReviewError(f"no sample {img.sample_id!r} on device {device}")
        if st == SampleStatus.SIGNED:
            raise ReviewConflict(f"sample {img.sample_id} is signed off: its reviews are closed")
        _check_label(reviewer_label, _card_labels(conn, img.model_id))
        rev = Review(
            id=str(uuid.uuid4()),
            device_id=device,
            created_at=utcnow(),
            reviewer=reviewer,
            kind="field",
            sample_id=img.sample_id,
            image_id=img.id,
            model_label=img.label,
            model_score=img.malignant_score,
            model_sha256=img.model_sha256,
            reviewer_label=reviewer_label,
            reviewer_verdict=None,
            comment=comment,
        )
        conn.execute(reviews.insert().values(**rev.__dict__))
    return rev


CHANGED = "the sample changed: reload"


def check_consistent(s: Sample, final_verdict: str, final_label: Optional[str], comment: Optional[str]) -> None:
    """Refuse a sign-off that contradicts itself or signs more than the fields can carry."""
    if final_verdict == "benign" and final_label not in (None, BENIGN):
        raise ReviewError(
            f"a benign sign-off cannot carry the malignant subtype {final_label}: sign malignant, "
            f"or leave the label empty"
        )
    if final_verdict == "malignant" and final_label == BENIGN:
        raise ReviewError(f"a malignant sign-off cannot be labelled {BENIGN}: choose the subtype or leave it empty")
    need = s.min_readable
    if need is not None and s.readable < need and not comment:
        raise ReviewError(
            f"only {s.readable} readable field(s), the rule needs {need}: say in the comment why it "
            "can be signed anyway, or ask for a new smear"
        )


def confirm_fields(store, reviewer: str, sample_id: str, image_ids: Sequence[str]) -> List[Review]:
    """ "Confirm all as shown": a confirming field review (the model's own label) of each named field that
    has no review yet, in one transaction. Only the fields the reviewer was shown are named, so a field
    that arrived since is not confirmed unseen; unreadable fields have no label to confirm and are refused."""
    device = store.device()
    ids = list(dict.fromkeys(str(i) for i in image_ids))
    if not ids:
        raise ReviewError("no field to confirm")
    out: List[Review] = []
    with store.write() as conn:
        _reviewer(conn, reviewer)
        st = conn.execute(
            select(samples.c.status).where(samples.c.device_id == device, samples.c.sample_id == sample_id)
        ).scalar()
        if st is None:
            raise ReviewError(f"no sample {sample_id!r} on device {device}")
        if st == SampleStatus.SIGNED:
            raise ReviewConflict(f"sample {sample_id} is signed off: its reviews are closed")
        rows = {
            r.id: r
            for r in conn.execute(
                select(images).where(
                    images.c.device_id == device, images.c.sample_id == sample_id, images.c.id.in_(ids)
                )
            )
        }
        reviewed = {
            r.image_id
            for r in conn.execute(
                select(reviews.c.image_id).where(
                    reviews.c.device_id == device, reviews.c.kind == "field", reviews.c.image_id.in_(ids)
                )
            )
        }
        now = utcnow()
        for i in ids:
            img = rows.get(i)
            if img is None:
                raise ReviewError(f"no field {i!r} in sample {sample_id}")
            if img.status != Status.CLASSIFIED or not img.label:
                raise ReviewError(f"field {img.filename} is {img.status}: it has no label to confirm")
            if i in reviewed:
                continue
            rev = Review(
                id=str(uuid.uuid4()),
                device_id=device,
                created_at=now,
                reviewer=reviewer,
                kind="field",
                sample_id=sample_id,
                image_id=img.id,
                model_label=img.label,
                model_score=img.malignant_score,
                model_sha256=img.model_sha256,
                reviewer_label=img.label,
                reviewer_verdict=None,
                comment=None,
            )
            conn.execute(reviews.insert().values(**rev.__dict__))
            out.append(rev)
    return out


def _signable(
    conn,
    device: str,
    reviewer: str,
    sample_id: str,
    final_verdict: str,
    final_label: Optional[str],
    comment: Optional[str],
    version: Optional[str],
):
    """The sample row when this sign-off may be made now; every refusal a :class:`ReviewError`."""
    _reviewer(conn, reviewer)
    s = conn.execute(select(samples).where(samples.c.device_id == device, samples.c.sample_id == sample_id)).first()
    if s is None:
        raise ReviewError(f"no sample {sample_id!r} on device {device}")
    if s.status != SampleStatus.READY:
        raise ReviewConflict(
            f"sample {sample_id} is {s.status}, not ready: only a ready sample can be signed off"
            + (f" (signed by {s.signed_by})" if s.status == SampleStatus.SIGNED else "")
        )
    if final_label is not None:
        _check_label(final_label, _card_labels(conn, s.model_id))
    seen = Sample.from_row(s)
    if version is not None and version != seen.version:
        raise ReviewConflict(CHANGED)
    check_consistent(seen, final_verdict, final_label, comment)
    return s


def _signoff_input(sample_id: str, final_verdict: str, comment: Optional[str]) -> Optional[str]:
    try:
        validate_sample_id(sample_id)
    except SampleError as e:
        raise ReviewError(str(e)) from None
    if final_verdict not in VERDICTS:
        raise ReviewError(f"final verdict {final_verdict!r} is not one of {', '.join(VERDICTS)}")
    return _comment(comment)


def check_sign_off(
    store,
    reviewer: str,
    sample_id: str,
    final_verdict: str,
    final_label: Optional[str] = None,
    comment: Optional[str] = None,
    version: Optional[str] = None,
) -> Sample:
    """Every check of :func:`sign_off`, writing nothing: the sample as it would be signed (the review app
    shows it for confirmation before the real sign-off, which checks again)."""
    comment = _signoff_input(sample_id, final_verdict, comment)
    with store.engine.connect() as conn:
        return Sample.from_row(
            _signable(conn, store.device(), reviewer, sample_id, final_verdict, final_label or None, comment, version)
        )


def sign_off(
    store,
    reviewer: str,
    sample_id: str,
    final_verdict: str,
    final_label: Optional[str] = None,
    comment: Optional[str] = None,
    version: Optional[str] = None,
) -> Review:
    """The reviewer's final word on a ``ready`` sample: one review row (kind ``signoff``) and the sample
    marked ``signed``, in one write transaction. ``version``: the :attr:`Sample.version` the reviewer saw;
    a sample that changed since is refused (:data:`CHANGED`), so the row never holds a score nobody saw."""
    device = store.device()
    comment = _signoff_input(sample_id, final_verdict, comment)
    final_label = final_label or None
    with store.write() as conn:  # BEGIN IMMEDIATE: the state read below cannot go stale before the write
        s = _signable(conn, device, reviewer, sample_id, final_verdict, final_label, comment, version)
        now = utcnow()
        rev = Review(
            id=str(uuid.uuid4()),
            device_id=device,
            created_at=now,
            reviewer=reviewer,
            kind="signoff",
            sample_id=sample_id,
            image_id=None,
            model_label=None,
            model_score=s.score,
            model_sha256=s.model_sha256,
            reviewer_label=final_label,
            reviewer_verdict=final_verdict,
            comment=comment,
        )
        conn.execute(reviews.insert().values(**rev.__dict__))
        # PostgreSQL has no BEGIN IMMEDIATE: the row must still be the one checked (same status, same update).
        done = conn.execute(
            samples.update()
            .where(samples.c.id == s.id, samples.c.status == SampleStatus.READY, samples.c.updated_at == s.updated_at)
            .values(
                status=SampleStatus.SIGNED,
                signed_at=now,
                signed_by=reviewer,
                final_verdict=final_verdict,
                final_label=final_label,
                updated_at=now,
            )
        )
        if done.rowcount != 1:
            raise ReviewConflict(CHANGED)
    return rev


def history(store, sample_id: str) -> List[Review]:
    """Every review of a sample on this device, oldest first."""
    q = (
        select(reviews)
        .where(reviews.c.device_id == store.device(), reviews.c.sample_id == sample_id)
        .order_by(reviews.c.created_at, reviews.c.id)
    )
    with store.engine.connect() as conn:
        return [Review.from_row(r) for r in conn.execute(q)]


def latest_field_reviews(store, sample_id: str, hist: Optional[Sequence[Review]] = None) -> Dict[str, Review]:
    """image id -> the newest field review of it (what the sample page shows beside the model's call);
    ``hist``: the sample's :func:`history` when the caller has it already."""
    return {
        r.image_id: r for r in (history(store, sample_id) if hist is None else hist) if r.kind == "field" and r.image_id
    }


__all__ = [
    "CHANGED",
    "MIN_PASSWORD",
    "ROLES",
    "Review",
    "ReviewConflict",
    "ReviewError",
    "User",
    "add_user",
    "card_labels",
    "check_consistent",
    "check_sign_off",
    "confirm_fields",
    "get_user",
    "history",
    "latest_field_reviews",
    "list_users",
    "review_field",
    "sign_off",
    "verify_user",
]

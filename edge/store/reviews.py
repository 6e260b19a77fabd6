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
from sqlalchemy.exc import IntegrityError

from edge.store.samples import SampleError, validate_sample_id
from edge.store.schema import images, models, reviews, samples, users, utcnow
from edge.vocabulary import LABELS, ROLES, VERDICTS

WRITERS = ("reviewer", "admin")  # roles that may review and sign off
MIN_PASSWORD = 8
MAX_PASSWORD_BYTES = 72  # bcrypt reads no further; a longer password would be silently truncated
MAX_COMMENT = 2000
NAME_CHARS = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-@")


class ReviewError(ValueError):
    """A refused review, sign-off or account change; ``str(err)`` is one line and nothing was changed."""


class ReviewConflict(ReviewError):
    """Refused because of the sample's state (not ready, already signed), not because of the input."""


@dataclass(frozen=True)
class User:
    name: str
    role: str
    created_at: datetime
    disabled: bool = False

    @property
    def can_review(self) -> bool:
        return self.role in WRITERS and not self.disabled


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
    def from_row(cls, row) -> "Review":
        d = row._mapping
        return cls(**{k: d[k] for k in cls.__dataclass_fields__})


# ------------------------------------------------------------------------------------------- accounts
def _hash(password: str) -> str:
    import bcrypt  # a compiled extension: only the commands that handle passwords load it

    return bcrypt.hashpw(password.encode("utf-8"), bcrypt.gensalt()).decode("ascii")


def _check_password(password: str, hashed: str) -> bool:
    import bcrypt

    try:
        return bcrypt.checkpw(password.encode("utf-8"), hashed.encode("ascii"))
    except ValueError:  # over 72 bytes (bcrypt 5 refuses) or a malformed stored hash
        return False


def _validate_name(name: str) -> str:
    if not isinstance(name, str) or not name or len(name) > 64 or not set(name) <= NAME_CHARS:
        raise ReviewError(f"invalid user name {name!r}: use 1-64 of A-Z a-z 0-9 . _ - @")
    return name


def add_user(store, name: str, password: str, role: str) -> User:
    """A new account; the password is stored only as a bcrypt hash."""
    _validate_name(name)
    if role not in ROLES:
        raise ReviewError(f"invalid role {role!r}: use one of {', '.join(ROLES)}")
    if not password:
        raise ReviewError("empty password")
    if len(password) < MIN_PASSWORD:
        raise ReviewError(f"password too short: at least {MIN_PASSWORD} characters")
    if len(password.encode("utf-8")) > MAX_PASSWORD_BYTES:
        raise ReviewError(f"password too long: at most {MAX_PASSWORD_BYTES} bytes (bcrypt ignores the rest)")
    user = User(name=name, role=role, created_at=utcnow())
    hashed = _hash(password)  # slow on purpose (~0.25 s on a Pi 4): outside the write lock
    try:
        with store.write() as conn:
            if conn.execute(select(users.c.name).where(users.c.name == name)).first() is not None:
                raise ReviewError(f"user {name!r} already exists")
            conn.execute(users.insert().values(name=name, password_hash=hashed, role=role,
                                               created_at=user.created_at, disabled=False))
    except IntegrityError:  # PostgreSQL: another process added the same name between check and insert
        raise ReviewError(f"user {name!r} already exists") from None
    return user


def _user_from_row(row) -> User:
    return User(name=row.name, role=row.role, created_at=row.created_at, disabled=bool(row.disabled))


def get_user(store, name: str) -> Optional[User]:
    with store.engine.connect() as conn:
        row = conn.execute(select(users).where(users.c.name == name)).first()
    return _user_from_row(row) if row else None


def list_users(store) -> List[User]:
    with store.engine.connect() as conn:
        return [_user_from_row(r) for r in conn.execute(select(users).order_by(users.c.name))]


_dummy: List[str] = []


def _dummy_hash() -> str:
    # Checked against when the name is unknown, so a wrong name costs as long as a wrong password and the
    # login form does not tell which names exist.
    if not _dummy:
        _dummy.append(_hash(uuid.uuid4().hex))
    return _dummy[0]


def verify_user(store, name: str, password: str) -> Optional[User]:
    """The user when the name and password match an enabled account, else None (never says which was wrong)."""
    with store.engine.connect() as conn:
        row = conn.execute(select(users).where(users.c.name == name)).first() if isinstance(name, str) else None
    if row is None:
        _check_password(password or "", _dummy_hash())
        return None
    if not _check_password(password or "", row.password_hash) or row.disabled:
        return None
    return _user_from_row(row)


def _reviewer(conn, name: str) -> User:
    row = conn.execute(select(users).where(users.c.name == name)).first()
    if row is None:
        raise ReviewError(f"no user {name!r}")
    user = _user_from_row(row)
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
    return label


def _comment(text: Optional[str]) -> Optional[str]:
    text = (text or "").strip()
    if len(text) > MAX_COMMENT:
        raise ReviewError(f"comment too long: {len(text)} characters, at most {MAX_COMMENT}")
    return text or None


# ------------------------------------------------------------------------------------------- reviews
def review_field(store, reviewer: str, image_id: str, reviewer_label: str,
                 comment: Optional[str] = None) -> Review:
    """Confirm (same label) or correct (another label) the model's call on one field of a sample."""
    device = store.device()
    comment = _comment(comment)
    with store.write() as conn:
        _reviewer(conn, reviewer)
        img = conn.execute(select(images).where(images.c.id == str(image_id), images.c.device_id == device)).first()
        if img is None or not img.sample_id:
            raise ReviewError(f"no field {image_id!r} in a sample of device {device}")
        if img.status == "duplicate":
            raise ReviewError(f"field {image_id} is a duplicate: review the original ({img.duplicate_of})")
        st = conn.execute(select(samples.c.status).where(samples.c.device_id == device,
                                                         samples.c.sample_id == img.sample_id)).scalar()
        if st is None:
            raise ReviewError(f"no sample {img.sample_id!r} on device {device}")
        if st == "signed":
            raise ReviewConflict(f"sample {img.sample_id} is signed off: its reviews are closed")
        _check_label(reviewer_label, _card_labels(conn, img.model_id))
        rev = Review(id=str(uuid.uuid4()), device_id=device, created_at=utcnow(), reviewer=reviewer, kind="field",
                     sample_id=img.sample_id, image_id=img.id, model_label=img.label,
                     model_score=img.malignant_score, model_sha256=img.model_sha256,
                     reviewer_label=reviewer_label, reviewer_verdict=None, comment=comment)
        conn.execute(reviews.insert().values(**rev.__dict__))
    return rev


def sign_off(store, reviewer: str, sample_id: str, final_verdict: str, final_label: Optional[str] = None,
             comment: Optional[str] = None) -> Review:
    """The reviewer's final word on a ``ready`` sample: one review row (kind ``signoff``) and the sample
    marked ``signed``, in one write transaction."""
    device = store.device()
    try:
        validate_sample_id(sample_id)
    except SampleError as e:
        raise ReviewError(str(e)) from None
    if final_verdict not in VERDICTS:
        raise ReviewError(f"final verdict {final_verdict!r} is not one of {', '.join(VERDICTS)}")
    comment = _comment(comment)
    final_label = final_label or None
    with store.write() as conn:  # BEGIN IMMEDIATE: the status read below cannot go stale before the write
        _reviewer(conn, reviewer)
        s = conn.execute(select(samples).where(samples.c.device_id == device,
                                               samples.c.sample_id == sample_id)).first()
        if s is None:
            raise ReviewError(f"no sample {sample_id!r} on device {device}")
        if s.status != "ready":
            raise ReviewConflict(f"sample {sample_id} is {s.status}, not ready: only a ready sample can be signed off"
                              + (f" (signed by {s.signed_by})" if s.status == "signed" else ""))
        if final_label is not None:
            _check_label(final_label, _card_labels(conn, s.model_id))
        now = utcnow()
        rev = Review(id=str(uuid.uuid4()), device_id=device, created_at=now, reviewer=reviewer, kind="signoff",
                     sample_id=sample_id, image_id=None, model_label=None, model_score=s.score,
                     model_sha256=s.model_sha256, reviewer_label=final_label, reviewer_verdict=final_verdict,
                     comment=comment)
        conn.execute(reviews.insert().values(**rev.__dict__))
        done = conn.execute(samples.update().where(samples.c.id == s.id, samples.c.status == "ready").values(
            status="signed", signed_at=now, signed_by=reviewer, final_verdict=final_verdict,
            final_label=final_label, updated_at=now))
        if done.rowcount != 1:  # PostgreSQL has no BEGIN IMMEDIATE: another sign-off won the race
            raise ReviewConflict(f"sample {sample_id} was signed off by someone else just now")
    return rev


def history(store, sample_id: str) -> List[Review]:
    """Every review of a sample on this device, oldest first."""
    q = (select(reviews).where(reviews.c.device_id == store.device(), reviews.c.sample_id == sample_id)
         .order_by(reviews.c.created_at, reviews.c.id))
    with store.engine.connect() as conn:
        return [Review.from_row(r) for r in conn.execute(q)]


def latest_field_reviews(store, sample_id: str, hist: Optional[Sequence[Review]] = None) -> Dict[str, Review]:
    """image id -> the newest field review of it (what the sample page shows beside the model's call);
    ``hist``: the sample's :func:`history` when the caller has it already."""
    return {r.image_id: r for r in (history(store, sample_id) if hist is None else hist)
            if r.kind == "field" and r.image_id}


__all__ = ["MIN_PASSWORD", "ROLES", "Review", "ReviewConflict", "ReviewError", "User", "add_user", "card_labels", "get_user",
           "history", "latest_field_reviews", "list_users", "review_field", "sign_off", "verify_user"]

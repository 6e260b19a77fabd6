"""edge.store.reviews: accounts, field reviews and sign-offs; every refusal one line and no change."""

from __future__ import annotations

import json
import sqlite3

import pytest
import web_support as ws
from sqlalchemy.exc import IntegrityError

from edge.store import reviews
from edge.store.database import Store
from edge.store.reviews import ReviewConflict, ReviewError
from edge.store.schema import models


@pytest.fixture
def env(tmp_path):
    db = ws.build_db(tmp_path, [ws.SampleSpec("S1", 3, [0.9, 0.2]), ws.SampleSpec("S2", 2, [0.1], close=False)])
    ws.build_db(tmp_path, [ws.SampleSpec("X1", 1, [0.9])], device="other-device")
    store = Store.open(db, device_id=ws.DEVICE)
    reviews.add_user(store, "rev", ws.PASSWORD, "reviewer")
    reviews.add_user(store, "view", ws.PASSWORD, "viewer")
    yield store, db
    store.close()


def state(db):
    return [ws.q(db, f"SELECT * FROM {t} ORDER BY 1") for t in ("images", "samples", "reviews", "users")]


def fields(db, sample_id):
    return ws.q(db, "SELECT * FROM images WHERE sample_id = ? ORDER BY path", sample_id)


def test_accounts(env):
    store, db = env
    before = state(db)
    for args, message in (
        (("rev", ws.PASSWORD, "reviewer"), "user 'rev' already exists"),
        (("x", ws.PASSWORD, "boss"), "invalid role 'boss'"),
        (("x", "", "viewer"), "empty password"),
        (("x", "1234567", "viewer"), "password too short: at least 8 characters"),
        (("x", "p" * 73, "viewer"), "password too long"),
        (("a/b", ws.PASSWORD, "viewer"), "invalid user name"),
    ):
        with pytest.raises(ReviewError, match=message) as e:
            reviews.add_user(store, *args)
        assert "\n" not in str(e.value)
    assert state(db) == before
    stored = ws.q(db, "SELECT password_hash FROM users WHERE name = 'rev'")[0]["password_hash"]
    assert ws.PASSWORD not in stored and stored.startswith("$2")
    assert reviews.verify_user(store, "rev", ws.PASSWORD).role == "reviewer"
    assert reviews.verify_user(store, "rev", "wrong password") is None
    assert reviews.verify_user(store, "nobody", ws.PASSWORD) is None
    assert [u.name for u in reviews.list_users(store)] == ["rev", "view"]


def test_field_review_records_the_models_call_and_never_changes_images(env):
    store, db = env
    f = fields(db, "S1")[0]
    before = ws.q(db, "SELECT * FROM images")
    new = next(lab for lab in ("Benign", "Pro-B") if lab != f["label"])
    r = reviews.review_field(store, "rev", f["id"], new, "  looks like a blast  ")
    assert (r.kind, r.sample_id, r.image_id, r.reviewer_label, r.comment) == (
        "field",
        "S1",
        f["id"],
        new,
        "looks like a blast",
    )
    assert (r.model_label, r.model_score, r.model_sha256) == (f["label"], f["malignant_score"], f["model_sha256"])
    assert ws.q(db, "SELECT * FROM images") == before
    assert [x.id for x in reviews.history(store, "S1")] == [r.id]
    assert reviews.latest_field_reviews(store, "S1")[f["id"]].reviewer_label == new


def test_field_review_refusals_change_nothing(env):
    store, db = env
    f, foreign = fields(db, "S1")[0], fields(db, "X1")[0]
    before = state(db)
    for call, err, message in (
        (
            lambda: reviews.review_field(store, "rev", f["id"], "Leukemia"),
            ReviewError,
            "'Leukemia' is not one of the model card's labels",
        ),
        (lambda: reviews.review_field(store, "view", f["id"], "Benign"), ReviewError, "is a viewer"),
        (lambda: reviews.review_field(store, "ghost", f["id"], "Benign"), ReviewError, "no user 'ghost'"),
        (
            lambda: reviews.review_field(store, "rev", foreign["id"], "Benign"),
            ReviewError,
            "no field .* in a sample of device test-device",
        ),
        (lambda: reviews.review_field(store, "rev", "no-such-id", "Benign"), ReviewError, "no field"),
        (lambda: reviews.review_field(store, "rev", f["id"], "Benign", "x" * 3000), ReviewError, "comment too long"),
    ):
        with pytest.raises(err, match=message):
            call()
    assert state(db) == before


def test_labels_come_from_the_card_of_the_model_that_made_the_call(env):
    store, db = env
    f = fields(db, "S1")[0]
    with store.write() as conn:  # a model whose card knows other words than the vocabulary
        conn.execute(
            models.update().where(models.c.id == f["model_id"]).values(card=json.dumps({"labels": ["Benign", "Blast"]}))
        )
    assert reviews.card_labels(store, f["model_id"]) == ("Benign", "Blast")
    with pytest.raises(ReviewError, match="Benign, Blast"):
        reviews.review_field(store, "rev", f["id"], "Pro-B")
    assert reviews.review_field(store, "rev", f["id"], "Blast").reviewer_label == "Blast"


def test_sign_off_once_and_only_when_ready(env):
    store, db = env
    before = state(db)
    with pytest.raises(ReviewConflict, match="sample S2 is collecting, not ready"):
        reviews.sign_off(store, "rev", "S2", "benign")
    for args, message in (
        (("S1", "maybe"), "final verdict 'maybe'"),
        (("S1", "benign", "Leukemia"), "Leukemia"),
        (("X1", "benign"), "no sample 'X1' on device test-device"),
        (("../etc", "benign"), "invalid sample id"),
    ):
        with pytest.raises(ReviewError, match=message):
            reviews.sign_off(store, "rev", *args)
    with pytest.raises(ReviewError, match="is a viewer"):
        reviews.sign_off(store, "view", "S1", "benign")
    assert state(db) == before

    r = reviews.sign_off(store, "rev", "S1", "malignant", "Pro-B", "clear")
    s = store.samples.get("S1")
    assert (s.status, s.signed_by, s.final_verdict, s.final_label) == ("signed", "rev", "malignant", "Pro-B")
    assert s.signed_at == r.created_at and (r.kind, r.reviewer_verdict) == ("signoff", "malignant")
    after = state(db)
    with pytest.raises(ReviewConflict, match="sample S1 is signed, not ready.*signed by rev"):
        reviews.sign_off(store, "rev", "S1", "benign")
    with pytest.raises(ReviewConflict, match="signed off: its reviews are closed"):
        reviews.review_field(store, "rev", fields(db, "S1")[0]["id"], "Benign")
    assert state(db) == after


def test_sign_off_is_one_transaction(env):
    store, db = env
    # The sample's update fails after the review row was inserted: the review must be rolled back with it.
    with sqlite3.connect(db) as con:
        con.execute(
            "CREATE TRIGGER no_sign BEFORE UPDATE ON samples BEGIN SELECT RAISE(ABORT, 'refused by the test'); END"
        )
    before = state(db)
    with pytest.raises(IntegrityError, match="refused by the test"):
        reviews.sign_off(store, "rev", "S1", "benign", comment="three fields are all this smear has")
    assert state(db) == before


def test_reviews_are_append_only(env):
    store, db = env
    reviews.review_field(store, "rev", fields(db, "S1")[0]["id"], "Benign")
    with sqlite3.connect(db) as con:
        for sql in ("UPDATE reviews SET reviewer_label = 'Pro-B'", "DELETE FROM reviews"):
            with pytest.raises(sqlite3.IntegrityError, match="reviews are append-only"):
                con.execute(sql)
    assert ws.q(db, "SELECT reviewer_label FROM reviews") == [{"reviewer_label": "Benign"}]

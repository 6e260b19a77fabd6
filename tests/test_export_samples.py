"""Samples and reviews travel with export/merge/CSV: idempotent, incremental, samples move forward only,
reviews insert-only, anonymised ids still join, device-local tables never leave."""

import csv
import sqlite3
import uuid
from dataclasses import replace
from datetime import timedelta

import pytest
from conftest import T0, count, fake_record
from sqlalchemy import create_engine, select, text
from test_export import cli, dump

from edge.export.csvfile import export_csv
from edge.export.merge import export_to, merge
from edge.store import migrations, schema
from edge.store.database import Store
from edge.store.rows import image_row
from edge.store.samples import SampleRule
from edge.store.schema import images, reviews, samples, schema_info, users, utcnow, web_sessions

KEY = b"clinic-secret"
RULE = SampleRule(statistic="mean", threshold=0.5, review_band=(0.45, 0.55), min_readable=2, disagreement=0.9)
CARD = {"name": "edge-screen-mnv2-int8", "version": "2.0.0", "sha256": "ab" * 32}


def device(tmp_path, device_id="dev-a", name=None):
    store = Store.open(tmp_path / (name or f"{device_id}.sqlite"), device_id=device_id, sample_rule=RULE)
    run_id = store.start_run("0.1.0-test")
    model_id = store.ensure_model("edge-screen-mnv2-int8", "ab" * 32, CARD)
    return store, run_id, model_id


def add_fields(store, sample_id, numbers, run_id=None, model_id=None):
    """Fields of one sample through the real store (the sample's aggregate is updated with them)."""
    recs = [
        replace(
            fake_record(i, store.device_id, run_id, model_id, prefix=f"/inbox/{sample_id}/field"), sample_id=sample_id
        )
        for i in numbers
    ]
    return store.record_many(recs)


def add_review(
    store,
    sample_id,
    kind="field",
    image_id=None,
    reviewer="dr-smith",
    label="Pre-B",
    comment="looks like blasts to me",
    review_id=None,
):
    rid = review_id or str(uuid.uuid4())
    with store.engine.begin() as c:
        c.execute(
            reviews.insert().values(
                id=rid,
                device_id=store.device_id,
                created_at=utcnow(),
                reviewer=reviewer,
                kind=kind,
                sample_id=sample_id,
                image_id=image_id,
                model_label="Benign",
                model_score=0.3,
                model_sha256="ab" * 32,
                reviewer_label=label,
                reviewer_verdict="malignant",
                comment=comment,
            )
        )
    return rid


def sign(store, sample_id, reviewer="dr-smith", verdict="malignant"):
    """What edge.store.reviews' sign-off does: the sample becomes signed and a sign-off review is appended."""
    now = utcnow()
    with store.engine.begin() as c:
        c.execute(
            samples.update()
            .where(samples.c.device_id == store.device_id, samples.c.sample_id == sample_id)
            .values(
                status="signed",
                signed_at=now,
                signed_by=reviewer,
                final_verdict=verdict,
                final_label="Pre-B",
                updated_at=now,
            )
        )
    add_review(store, sample_id, kind="signoff", reviewer=reviewer, label="Pre-B", comment="signed")


def target_sample(target, sample_id):
    eng = create_engine(
        f"sqlite:///{target}"
        if "://" not in str(target)
        else str(target).replace("postgresql://", "postgresql+psycopg://")
    )
    with eng.connect() as c:
        row = c.execute(select(samples).where(samples.c.sample_id == sample_id)).first()
    eng.dispose()
    return row


@pytest.fixture
def dev(tmp_path):
    store, run_id, model_id = device(tmp_path)
    ids = add_fields(store, "S-001", range(0, 3), run_id, model_id)
    add_fields(store, "S-002", range(10, 12), run_id, model_id)
    add_review(store, "S-001", image_id=ids[0])
    add_review(store, "S-002", kind="sample", label=None)
    yield store, run_id, model_id
    store.close()


def test_samples_and_reviews_are_exported_once_and_again_when_they_change(dev, tmp_path):
    store, run_id, model_id = dev
    target = tmp_path / "clinic.sqlite"
    s = export_to(store, target)
    assert (s.samples_sent, s.reviews_sent, s.rows_sent, s.conflicts) == (2, 2, 5, [])
    again = export_to(store, target)
    assert (again.samples_sent, again.samples_updated, again.reviews_sent, again.rows_sent) == (0, 0, 0, 0)
    assert (again.samples_skipped, again.reviews_skipped, again.conflicts) == (2, 2, [])
    # The sample keeps collecting fields, another is closed by hand, after the export.
    add_fields(store, "S-001", range(3, 5), run_id, model_id)
    store.samples.close("S-002")
    s = export_to(store, target)
    assert (s.samples_updated, s.samples_sent, s.rows_sent, s.conflicts) == (2, 0, 2, [])
    assert (target_sample(target, "S-001").fields, target_sample(target, "S-002").status) == (5, "ready")
    # Signed on the device: the target's copy becomes the signed one, and the sign-off review arrives.
    sign(store, "S-001")
    s = export_to(store, target)
    assert (s.samples_updated, s.reviews_sent, s.conflicts) == (1, 1, [])
    row = target_sample(target, "S-001")
    assert (row.status, row.signed_by, row.final_verdict) == ("signed", "dr-smith", "malignant")
    assert export_to(store, target).samples_updated == 0
    assert count(target, "reviews") == 3 and count(target, "samples") == 2
    src = store.samples.get("S-001")
    assert Store.open(target).samples.get("S-001", device_id="dev-a") == src  # every column survives


def test_a_change_made_while_the_clock_was_behind_still_moves_the_sample_forward(dev, tmp_path):
    # A Pi without RTC may come up with a clock behind the last export: the change carries an older time.
    store, run_id, model_id = dev
    target = tmp_path / "clinic.sqlite"
    export_to(store, target)
    add_fields(store, "S-001", range(3, 6), run_id, model_id)
    with store.engine.begin() as c:
        c.execute(samples.update().where(samples.c.sample_id == "S-001").values(updated_at=T0 - timedelta(days=30)))
    s = export_to(store, target)
    assert (s.samples_updated, s.conflicts) == (1, [])
    assert target_sample(target, "S-001").fields == 6


def test_a_signed_sample_is_never_replaced_and_a_stale_copy_is_a_conflict(dev, tmp_path):
    store, run_id, model_id = dev
    target = tmp_path / "clinic.sqlite"
    old_copy = tmp_path / "old-copy.sqlite"
    with sqlite3.connect(str(old_copy)) as dst:  # a backup taken before the sign-off
        sqlite3.connect(str(tmp_path / "dev-a.sqlite")).backup(dst)
    sign(store, "S-001")
    add_fields(store, "S-002", range(12, 14), run_id, model_id)
    export_to(store, target)
    before = dump(target)
    m = merge([old_copy], target)
    got = {(c.table, c.id) for c in m.conflicts}
    ids = {sid: target_sample(target, sid).id for sid in ("S-001", "S-002")}
    assert got == {("samples", ids["S-001"]), ("samples", ids["S-002"])}
    assert m.samples_updated == 0 and dump(target) == before
    assert "status" in next(c for c in m.conflicts if c.id == ids["S-001"]).columns
    # The device itself un-signing (a bug, or a restored backup) is a conflict too; the target keeps signed.
    with store.engine.begin() as c:
        c.execute(
            samples.update()
            .where(samples.c.sample_id == "S-001")
            .values(status="ready", signed_by=None, updated_at=utcnow() + timedelta(days=1))
        )
    s = export_to(store, target)
    assert [(c.table, c.id) for c in s.conflicts] == [("samples", ids["S-001"])]
    assert target_sample(target, "S-001").status == "signed"


def test_reviews_are_insert_only_and_a_different_copy_is_a_conflict(dev, tmp_path):
    store, _, _ = dev
    target = tmp_path / "clinic.sqlite"
    rid = add_review(store, "S-002", kind="sample", comment="first opinion")
    export_to(store, target)
    other = Store.open(tmp_path / "other.sqlite", device_id="dev-a")
    with store.engine.connect() as c:
        row = dict(c.execute(select(reviews).where(reviews.c.id == rid)).one()._mapping)
    with other.engine.begin() as c:
        c.execute(reviews.insert().values(**{**row, "comment": "edited elsewhere"}))
    m = merge([tmp_path / "other.sqlite"], target)
    assert [(c.table, c.id, c.columns) for c in m.conflicts] == [("reviews", rid, ["comment"])]
    eng = create_engine(f"sqlite:///{target}")
    with eng.connect() as c:
        assert c.execute(select(reviews.c.comment).where(reviews.c.id == rid)).scalar() == "first opinion"
    eng.dispose()
    other.close()


def test_anonymized_sample_ids_still_join_and_comments_and_names_are_gone(tmp_path):
    store, run_id, model_id = device(tmp_path)
    ids = add_fields(store, "Jane-Doe-MRN4711", range(0, 4), run_id, model_id)
    add_review(store, "Jane-Doe-MRN4711", image_id=ids[1], reviewer="dr-smith", comment="Jane Doe, call back")
    sign(store, "Jane-Doe-MRN4711", reviewer="dr-smith")
    store.set_moved_to(ids[0], "/archive/Jane-Doe-MRN4711/field-0.jpg")
    target = tmp_path / "anon.sqlite"
    s = export_to(store, target, anonymize_key=KEY)
    assert (s.samples_sent, s.reviews_sent, s.conflicts) == (1, 2, [])
    export_csv(store, tmp_path / "csv", anonymize_key=KEY)
    for t in [dump(target)] + [p.read_text() for p in (tmp_path / "csv").iterdir()]:
        for secret in ("Jane", "4711", "dr-smith", "call back", "dev-a", "archive"):
            assert secret not in t, secret
    eng = create_engine(f"sqlite:///{target}")
    with eng.connect() as c:
        joined = c.execute(
            text(
                "SELECT count(DISTINCT i.id), count(DISTINCT r.id) FROM samples s "
                "JOIN images i ON i.sample_id = s.sample_id AND i.device_id = s.device_id "
                "JOIN reviews r ON r.sample_id = s.sample_id AND r.device_id = s.device_id"
            )
        ).one()
        comments = {r[0] for r in c.execute(select(reviews.c.comment))}
        signer, reviewer = c.execute(
            select(samples.c.signed_by, reviews.c.reviewer).select_from(
                samples.join(reviews, reviews.c.sample_id == samples.c.sample_id)
            )
        ).first()
        moved = c.execute(select(images.c.moved_to).where(images.c.id == ids[0])).scalar()
    eng.dispose()
    assert tuple(joined) == (4, 2) and comments == {None}
    assert signer == reviewer and signer.startswith("anon-") and moved.startswith("anon:")
    # Deterministic with the same key: a re-export matches row for row.
    full = export_to(store, target, anonymize_key=KEY, incremental=False)
    assert (full.conflicts, full.samples_skipped, full.reviews_skipped) == ([], 1, 2)
    store.close()


def test_users_and_web_sessions_never_leave_the_device(dev, tmp_path):
    store, _, _ = dev
    with store.engine.begin() as c:
        c.execute(
            users.insert().values(name="dr-local", password_hash="$2b$12$secrethash", role="admin", created_at=utcnow())
        )
        c.execute(
            web_sessions.insert().values(
                token_sha256="cd" * 32,
                user_name="dr-local",
                csrf="csrf-token",
                created_at=utcnow(),
                expires_at=utcnow() + timedelta(hours=1),
            )
        )
    export_to(store, tmp_path / "clinic.sqlite")
    merge([tmp_path / "dev-a.sqlite"], tmp_path / "merged.sqlite")
    export_csv(store, tmp_path / "csv")
    for target in (tmp_path / "clinic.sqlite", tmp_path / "merged.sqlite"):
        assert count(target, "users") == 0 and count(target, "web_sessions") == 0
        assert count(target, "samples") == 2
        assert "secrethash" not in dump(target) and "dr-local" not in dump(target)
    assert sorted(p.name for p in (tmp_path / "csv").iterdir()) == [
        "images.csv",
        "models.csv",
        "reviews.csv",
        "runs.csv",
        "samples.csv",
    ]


def test_moved_to_filled_in_after_the_export_is_completed_not_a_conflict(tmp_path):
    store, run_id, model_id = device(tmp_path)
    ids = add_fields(store, "S-9", range(0, 3), run_id, model_id)
    target = tmp_path / "clinic.sqlite"
    export_to(store, target)  # between the commit and the move
    for i in ids:
        store.set_moved_to(i, f"/done/S-9/{i}.jpg")
    s = export_to(store, target)  # incremental: nothing new, but the moves are picked up
    assert (s.rows_sent, s.rows_completed, s.conflicts) == (0, 3, [])
    assert Store.open(target).get(ids[0]).moved_to == f"/done/S-9/{ids[0]}.jpg"
    full = export_to(store, target, incremental=False)
    assert (full.rows_completed, full.rows_skipped, full.conflicts) == (0, 3, [])
    # An older copy of the device (from before the moves) is not a conflict either: the target knows more.
    other = tmp_path / "before-move.sqlite"
    with store.engine.begin() as c:
        c.execute(images.update().values(moved_to=None))
    assert export_to(store, other).rows_sent == 3
    assert merge([other], target).conflicts == []
    store.close()


V2_IMAGE_COLUMNS = [c.name for c in images.columns][: [c.name for c in images.columns].index("moved_to")]


def make_v2(path, device_id="old-device", n=3):
    """A device still at schema 2: no samples, reviews, users; images without the v3 columns."""
    eng = create_engine(f"sqlite:///{path}")
    with eng.begin() as c:
        schema.metadata.create_all(c, tables=[schema_info])
        migrations.MIGRATIONS[1](c)  # today's images table: the v3 columns are dropped again below
        migrations.MIGRATIONS[2](c)
        c.exec_driver_sql("DROP INDEX ix_images_sample")
        for col in [r[1] for r in c.exec_driver_sql("PRAGMA table_info(images)")]:
            if col not in V2_IMAGE_COLUMNS:
                c.exec_driver_sql(f"ALTER TABLE images DROP COLUMN {col}")
        c.execute(schema_info.insert().values(application="edge-screen", version=2, updated_at=T0))
        for i in range(n):
            row = {k: v for k, v in image_row(fake_record(i, device_id)).items() if k in V2_IMAGE_COLUMNS}
            row["filename"] = f"patient-{i:06d}_smear.jpg"
            c.execute(images.insert().values(**row))
    eng.dispose()


def test_a_schema_2_source_exports_and_a_schema_2_target_is_upgraded(dev, tmp_path):
    store, _, _ = dev
    old = tmp_path / "old.sqlite"
    make_v2(old)
    s = export_to(old, tmp_path / "clinic.sqlite")
    assert (s.rows_sent, s.samples_sent, s.reviews_sent, s.conflicts) == (3, 0, 0, [])
    assert export_to(old, tmp_path / "clinic.sqlite").rows_sent == 0  # incremental as before
    summary = export_csv(old, tmp_path / "csv")
    assert summary.rows_sent == 3
    with open(tmp_path / "csv" / "images.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert {r["sample_id"] for r in rows} == {""} and len(rows) == 3
    assert "samples" not in {
        r[0] for r in sqlite3.connect(str(old)).execute("SELECT name FROM sqlite_master WHERE type = 'table'")
    }  # only read: never upgraded by an export
    assert sqlite3.connect(str(old)).execute("SELECT version FROM schema_info").fetchone()[0] == 2
    # A clinic database still at schema 2 is upgraded in the export's own transaction.
    target = tmp_path / "clinic-v2.sqlite"
    make_v2(target, device_id="dev-z", n=2)
    s = export_to(store, target)
    assert (s.samples_sent, s.reviews_sent, s.conflicts) == (2, 2, [])
    c = sqlite3.connect(str(target))
    assert c.execute("SELECT version FROM schema_info").fetchone()[0] == schema.SCHEMA_VERSION
    assert c.execute("SELECT count(*) FROM images").fetchone()[0] == 7


def test_csv_has_samples_and_reviews(dev, tmp_path):
    store, _, _ = dev
    s = export_csv(store, tmp_path / "csv", anonymize_key=KEY)
    assert (s.samples_sent, s.reviews_sent) == (2, 2)
    with open(tmp_path / "csv" / "samples.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert sorted(r["fields"] for r in rows) == ["2", "3"]
    assert all(r["sample_id"].startswith("anon-") for r in rows)
    with open(tmp_path / "csv" / "reviews.csv", newline="") as f:
        revs = list(csv.DictReader(f))
    assert len(revs) == 2 and {r["comment"] for r in revs} == {""}
    assert {r["sample_id"] for r in revs} == {r["sample_id"] for r in rows}
    with open(tmp_path / "csv" / "images.csv", newline="") as f:
        assert {r["sample_id"] for r in csv.DictReader(f)} == {r["sample_id"] for r in rows}


def test_cli_reports_samples_and_reviews(dev, tmp_path):
    cfg = tmp_path / "c.toml"
    cfg.write_text(f'[database]\nurl = "sqlite:///{tmp_path}/dev-a.sqlite"\n[daemon]\ndevice_id = "dev-a"\n')
    r = cli("export", "--config", str(cfg), "--to", str(tmp_path / "clinic.sqlite"))
    assert r.exit_code == 0 and "2 samples sent and 0 updated, 2 reviews sent" in r.output, r.output
    r = cli("export", "--config", str(cfg), "--format", "csv", "--out", str(cfg))
    assert r.exit_code == 1 and "is a file, not a folder" in r.output
    assert len(r.output.strip().splitlines()) == 1


# ----------------------------------------------------------------------------------------- PostgreSQL


def test_pg_samples_and_reviews(dev, pg_db):
    store, run_id, model_id = dev
    s = export_to(store, pg_db)
    assert (s.samples_sent, s.reviews_sent, s.conflicts) == (2, 2, [])
    again = export_to(store, pg_db)
    assert (again.samples_sent, again.samples_updated, again.reviews_sent, again.conflicts) == (0, 0, 0, [])
    add_fields(store, "S-001", range(3, 5), run_id, model_id)
    sign(store, "S-002")
    s = export_to(store, pg_db)
    assert (s.samples_updated, s.reviews_sent, s.conflicts) == (2, 1, [])
    assert target_sample(pg_db, "S-001").fields == 5 and target_sample(pg_db, "S-002").status == "signed"
    pg = Store.open(pg_db, create=False)
    assert pg.samples.get("S-002", device_id="dev-a") == store.samples.get("S-002")
    pg.close()
    with store.engine.begin() as c:
        c.execute(samples.update().where(samples.c.sample_id == "S-002").values(status="ready"))
    s = export_to(store, pg_db)
    assert [c.table for c in s.conflicts] == ["samples"] and target_sample(pg_db, "S-002").status == "signed"
    assert count(pg_db, "users") == 0 and count(pg_db, "reviews") == 3

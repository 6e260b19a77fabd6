"""Reviewers' field corrections from a device database become training images, never validation leaks."""

from __future__ import annotations

import hashlib
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from sqlalchemy import create_engine

from edge.imaging.synthetic import smear_jpeg
from edge.store.database import Store
from edge.store.records import ImageRecord
from edge.store.schema import reviews
from trainer.corrections import add_corrections, load_corrections, read_corrections
from trainer.data import block_split, discover

T0 = datetime(2026, 12, 1, 9, 0, tzinfo=timezone.utc)


def _write(path: Path, data: bytes) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return hashlib.sha256(data).hexdigest()


@pytest.fixture
def world(tmp_path):
    """A small dataset (split into blocks) and a device database whose reviewers corrected some fields."""
    data = tmp_path / "data"
    for _label, folder, seed0 in (("Benign", "Benign", 0), ("Pre-B", "Pre", 100)):
        for n in range(10):
            _write(data / folder / f"WBC-{folder}-{n:03d}.jpg", smear_jpeg(seed0 + n, 96))
    split = block_split(discover(data)[0], block_size=2, val_fraction=0.5)
    assert split.val, "the fixture needs validation images"

    db = tmp_path / "device.sqlite"
    store = Store.open(db, device_id="pi-1")
    inbox = tmp_path / "inbox"
    rows = {}

    def field(name: str, data_bytes: bytes, moved: bool = False, missing: bool = False) -> str:
        p = inbox / "S1" / name
        sha = _write(p, data_bytes)
        moved_to = None
        if moved:
            moved_to = tmp_path / "done" / name
            moved_to.parent.mkdir(exist_ok=True)
            p.rename(moved_to)
        if missing:
            p.unlink()
        rows[name] = store.record(
            ImageRecord(
                path=str(p),
                sha256=sha,
                status="classified",
                label="Pre-B",
                malignant_score=0.9,
                verdict="malignant",
                sample_id="S1",
                moved_to=str(moved_to) if moved_to else None,
            )
        )
        return rows[name]

    a = field("a.jpg", smear_jpeg(500, 96))
    b = field("b.jpg", smear_jpeg(501, 96), moved=True)
    c = field("c.jpg", smear_jpeg(502, 96), missing=True)
    leak = field("leak.jpg", split.val[0].path.read_bytes())  # byte-identical to a validation image
    d = field("d.jpg", smear_jpeg(503, 96))
    store.close()

    reviews_rows = [
        (a, 0, "Pro-B", None),
        (a, 5, "Benign", None),  # two reviews of one field: the later one wins
        (b, 1, None, "benign"),  # a plain "benign" verdict is a complete label
        (c, 2, "Early Pre-B", None),  # the file is gone
        (leak, 3, "Benign", None),
        (d, 4, None, "malignant"),  # malignant but no subtype: nothing to train a 4-class model on
    ]
    eng = create_engine(f"sqlite:///{db}")
    with eng.begin() as conn:
        for image_id, minutes, label, verdict in reviews_rows:
            conn.execute(
                reviews.insert().values(
                    id=str(uuid.uuid4()),
                    device_id="pi-1",
                    created_at=T0 + timedelta(minutes=minutes),
                    reviewer="dr-a",
                    kind="field",
                    sample_id="S1",
                    image_id=image_id,
                    model_label="Pre-B",
                    model_score=0.9,
                    reviewer_label=label,
                    reviewer_verdict=verdict,
                )
            )
        conn.execute(
            reviews.insert().values(  # a sample review is not a field correction
                id=str(uuid.uuid4()),
                device_id="pi-1",
                created_at=T0,
                reviewer="dr-a",
                kind="sample",
                sample_id="S1",
                reviewer_verdict="benign",
            )
        )
    eng.dispose()
    return split, db, rows


def test_counts_latest_review_wins_and_missing_files(world):
    split, db, rows = world
    corrections, counts = read_corrections([db])
    assert counts["reviews"] == 6 and counts["images"] == 5
    assert counts["missing_file"] == 1 and counts["no_label"] == 1
    by_id = {c.image_id: c for c in corrections}
    assert set(by_id) == {rows["a.jpg"], rows["b.jpg"], rows["leak.jpg"]}
    assert by_id[rows["a.jpg"]].label == "Benign"  # not the earlier "Pro-B"
    assert by_id[rows["b.jpg"]].path.parent.name == "done"  # read from where the daemon moved it


def test_validation_duplicates_dropped_and_only_training_grows(world):
    split, db, rows = world
    new, info = load_corrections(split, [db])
    assert new.val == split.val and new.val_blocks == split.val_blocks
    added = new.train[len(split.train) :]
    assert sorted(s.label for s in added) == ["Benign", "Benign"]
    val_sha = {s.sha256 for s in split.val}
    assert not any(s.sha256 in val_sha for s in added)
    assert info["used"] == 2 and info["reviews_read"] == 6 and info["images_reviewed"] == 5
    assert info["dropped"]["same_as_validation"] == 1
    assert info["dropped"]["missing_file"] == 1 and info["dropped"]["no_label"] == 1


def test_the_same_image_from_two_devices_is_used_once(world):
    split, db, rows = world
    corrections, counts = read_corrections([db, db])
    _, info = add_corrections(split, corrections, counts)
    assert info["used"] == 2 and info["dropped"]["duplicate_correction"] == 2


def test_a_missing_database_is_an_error(tmp_path):
    with pytest.raises(FileNotFoundError):
        read_corrections([tmp_path / "nope.sqlite"])


def test_the_corrections_used_are_identified_by_a_hash_in_the_version(world):
    """Issue 14: a model retrained with --corrections installed as the bundled model's own 2.0.0."""
    from trainer.corrections import corrected_version

    split, db, rows = world
    _, info = load_corrections(split, [db])
    again = load_corrections(split, [db])[1]
    assert len(info["sha256"]) == 64 and info["sha256"] == again["sha256"]  # the same corrections, the same id
    assert corrected_version("3.0.0", info) == f"3.0.0+corrections.2.{info['sha256'][:8]}"
    _, fewer = add_corrections(split, read_corrections([db])[0][:1])
    assert fewer["sha256"] != info["sha256"]

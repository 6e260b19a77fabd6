from pathlib import Path

import pytest

from tests.shared_data import DATASET, HAVE_DATASET, NO_DATASET
from trainer.data import Sample, block_split, canonical_label, discover, load_split


def _fake(label, numbers):
    return [Sample(path=Path(f"/x/{label}-{n:03d}.jpg"), label=label, number=n, sha256=f"{label}{n}") for n in numbers]


def _assert_blocks_disjoint(split):
    bs = split.block_size
    train = {(s.label, s.number // bs) for s in split.train}
    val = {(s.label, s.number // bs) for s in split.val}
    assert not train & val


def test_no_block_is_on_both_sides_and_every_class_is_validated():
    samples = _fake("Benign", range(1, 130)) + _fake("Pre-B", range(1, 260)) + _fake("Pro-B", range(5, 90))
    for bs in (1, 7, 25):
        sp = block_split(samples, block_size=bs)
        _assert_blocks_disjoint(sp)
        assert {s.label for s in sp.val} == {"Benign", "Pre-B", "Pro-B"}
        assert len(sp.train) + len(sp.val) == len(samples)
        assert 0.1 < len(sp.val) / len(samples) < 0.3


def test_split_is_deterministic_and_data_hash_tracks_content():
    s = _fake("Benign", range(100)) + _fake("Pre-B", range(100))
    a, b = block_split(s), block_split(list(reversed(s)))
    assert [x.path for x in a.val] == sorted([x.path for x in b.val]) or {x.path for x in a.val} == {
        x.path for x in b.val
    }
    assert a.data_hash == b.data_hash
    assert block_split(s[:-1]).data_hash != a.data_hash


@pytest.mark.parametrize(
    "folder,label",
    [
        ("Benign", "Benign"),
        ("Early", "Early Pre-B"),
        ("Pre", "Pre-B"),
        ("Pro", "Pro-B"),
        ("[Malignant] early Pre-B", "Early Pre-B"),
        ("Pro-B", "Pro-B"),
        ("pre_b", "Pre-B"),
        ("misc", None),
    ],
)
def test_folder_names_map_to_canonical_labels(folder, label):
    assert canonical_label(folder) == label


def test_exact_duplicates_are_dropped(tmp_path):
    for name in ("Benign", "Pro", "notes"):
        (tmp_path / name).mkdir()
    (tmp_path / "Benign" / "WBC-Benign-001.jpg").write_bytes(b"a")
    (tmp_path / "Benign" / "WBC-Benign-002.jpg").write_bytes(b"b")
    (tmp_path / "Pro" / "WBC-Malignant-Pro-001.jpg").write_bytes(b"c")
    (tmp_path / "Pro" / "WBC-Malignant-Pro-002.jpg").write_bytes(b"c")  # same bytes as 001
    (tmp_path / "notes" / "x.jpg").write_bytes(b"d")  # not a class folder
    samples, dropped = discover(tmp_path)
    assert dropped == 1
    assert sorted((s.label, s.number) for s in samples) == [("Benign", 1), ("Benign", 2), ("Pro-B", 1)]


@pytest.mark.skipif(not HAVE_DATASET, reason=NO_DATASET)
def test_real_dataset_split_keeps_slides_apart():
    sp = load_split(DATASET, block_size=25)
    _assert_blocks_disjoint(sp)
    assert len(sp.train) + len(sp.val) == 2550
    assert {s.label for s in sp.val} == {"Benign", "Early Pre-B", "Pre-B", "Pro-B"}

"""Several labelled sources (trainer/sources.py) and the per-source figures' building blocks."""

from __future__ import annotations

import numpy as np
import pytest

from edge.imaging import synthetic
from tests.shared_data import BCCD, NO_BCCD, NO_PBC, PBC
from trainer.external import ood_auroc
from trainer.sources import add_sources, bccd, folder_label, labelled_folder, pbc, untrained_types


@pytest.mark.skipif(not PBC.is_dir(), reason=NO_PBC)
def test_pbc_split_by_class_and_file_keeps_every_type_on_both_sides_and_no_file_twice():
    train, held = pbc()
    assert not {s.path for s in train} & {s.path for s in held}
    assert {s.label for s in train + held} == {"Benign"} and {s.source for s in train} == {"pbc"}
    types = {s.path.parent.name for s in held}
    assert len(types) == 8 and {s.path.parent.name for s in train} == types
    assert abs(len(held) / (len(train) + len(held)) - 0.2) < 0.01


@pytest.mark.skipif(not PBC.is_dir(), reason=NO_PBC)
def test_a_cell_type_kept_out_of_training_is_still_scored_and_the_card_says_so():
    from trainer.data import Split

    def empty() -> Split:
        return Split(train=[], val=[], block_size=25, duplicates_dropped=0, data_hash="")

    every, without = add_sources(empty(), ["pbc"]), add_sources(empty(), ["pbc"], ["ig"])
    assert {s.path.parent.name for s in without.train} == {s.path.parent.name for s in every.train} - {"ig"}
    assert len(without.train) == len(every.train) - sum(s.path.parent.name == "ig" for s in every.train) > 0
    assert [s.path for s in without.extra_val] == [s.path for s in every.extra_val]  # held-out ig still scored
    assert without.sources["pbc"]["untrained_types"] == ["ig"] and "untrained_types" not in every.sources["pbc"]
    # A finalize reads them back from the card's split, so its training cells leave them out too.
    assert untrained_types(without.sources) == ["ig"] and untrained_types(every.sources) == []


@pytest.mark.skipif(not BCCD.is_dir(), reason=NO_BCCD)
def test_bccd_split_by_blocks_of_file_numbers():
    train, held = bccd()
    blocks = lambda xs: {s.number // 10 for s in xs}  # noqa: E731
    assert not blocks(train) & blocks(held) and held and train
    assert {s.label for s in train + held} == {"Benign"}


def test_external_folder_layouts(tmp_path):
    # Distinct seeds for every file: hash(folder) changes with PYTHONHASHSEED and two folders' seeds could
    # meet, which made two files the same picture about one run in a hundred.
    for k, (folder, n) in enumerate((("benign", 2), ("Blast", 3), ("neutrophil", 1), ("notes", 1))):
        (tmp_path / folder).mkdir()
        for i in range(n):
            (tmp_path / folder / f"{i}.jpg").write_bytes(synthetic.smear_jpeg(10 * k + i))
    got = labelled_folder(tmp_path, "lab-x")
    assert sorted(s.label for s in got) == ["Benign"] * 3 + ["blast"] * 3
    assert {s.source for s in got} == {"lab-x"}
    assert folder_label("AML") == "blast" and folder_label("Pro") == "Pro-B" and folder_label("misc") is None
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError):
        labelled_folder(tmp_path / "empty", "x")


def test_ood_auroc():
    rng = np.random.default_rng(0)
    a = rng.normal(0, 1, 200)
    assert ood_auroc(a, a + 100) == 1.0 and ood_auroc(a + 100, a) == 0.0
    assert abs(ood_auroc(a, rng.normal(0, 1, 300)) - 0.5) < 0.08
    assert ood_auroc([1.0, 1.0], [1.0]) == 0.5 and ood_auroc([], [1.0]) is None


def test_validated_range_is_widened_only_by_the_tests_that_held():
    from trainer.finalize import widen_for_tests

    ranges = {
        "magnification": [0.8, 1.3],
        "glass_level": [200.0, 250.0],
        "glass_rg": [0.95, 1.0],
        "glass_bg": [0.97, 1.02],
    }
    ok = {
        "sensitivity_among_classified": 1.0,
        "label_agreement_with_x1": 0.97,
        "verdict_agreement_with_x1": 0.99,
        "confident_misses": 0,
    }
    bad = {
        "sensitivity_among_classified": 0.9,
        "label_agreement_with_x1": 0.97,
        "verdict_agreement_with_x1": 0.99,
        "confident_misses": 3,
    }
    tests = {
        "optics": {"rescale_0.75": ok, "rescale_2": ok, "rescale_4": bad, "tint_warm": ok, "tint_green": bad},
        "curves": {"exposure_gain": {"0.6": bad, "0.7": ok, "1.0": ok, "1.4": ok}},
    }
    widen_for_tests(ranges, tests)
    # x0.75 held and widens the low end; x2 held too, but an enlarged field resampled back is no other
    # microscope, so the high end stays the primary source's own
    assert ranges["magnification"] == [0.6, 1.3]
    assert ranges["glass_level"] == [140.0, 255.0]  # x0.7 held, x0.6 did not; never above 255
    assert ranges["glass_rg"][1] == pytest.approx(1.12, abs=1e-3)  # the warm tint (R x1.12) held
    assert ranges["glass_bg"][0] == pytest.approx(0.97 * 0.88, abs=1e-3)  # ... and its B x0.88


def test_other_sources_weigh_half_the_primary_benign_class_whatever_their_number():
    from trainer.train import source_weights

    y = np.array([0] * 10 + [1] * 30 + [0] * 500)
    primary = np.array([True] * 40 + [False] * 500)
    w = source_weights(y, primary)
    assert w[:10].sum() == pytest.approx(w[10:40].sum())  # the primary classes balanced
    assert w[40:].sum() == pytest.approx(0.5 * w[:10].sum())
    assert np.all(w[40:] == w[40])


def test_per_source_balance_gives_each_other_laboratory_the_same_share():
    from trainer.train import source_weights

    y = np.array([0] * 10 + [1] * 30 + [0] * 500 + [0] * 20)
    primary = np.array([True] * 40 + [False] * 520)
    names = ["taleqani"] * 40 + ["pbc"] * 500 + ["bccd"] * 20
    w = source_weights(y, primary, sources=names)
    pooled = source_weights(y, primary)
    assert np.array_equal(w[:40], pooled[:40])  # the primary source as before
    assert w[40:540].sum() == pytest.approx(w[540:].sum())  # 500 PBC cells weigh what 20 BCCD fields weigh
    assert w[40:].sum() == pytest.approx(pooled[40:].sum())  # ... within the same total
    assert w[540] > pooled[540] and w[40] < pooled[40]


def test_evaluate_external_screens_another_labs_folder_through_the_pipeline(tmp_path):
    import json

    from click.testing import CliRunner

    from edge.inference.classifier import DEFAULT_MODEL
    from trainer.cli import main

    for folder, seeds in (("benign", range(3)), ("blast", range(10, 13))):
        (tmp_path / "lab" / folder).mkdir(parents=True)
        for s in seeds:
            (tmp_path / "lab" / folder / f"{s}.jpg").write_bytes(synthetic.smear_jpeg(s))
    (tmp_path / "lab" / "blast" / "broken.jpg").write_bytes(b"not a jpeg")
    res = CliRunner().invoke(
        main,
        [
            "evaluate",
            str(DEFAULT_MODEL),
            "--external",
            str(tmp_path / "lab"),
            "--sample-size",
            "3",
            "--out",
            str(tmp_path / "out"),
        ],
    )
    assert res.exit_code == 0, res.output
    figs = json.loads((tmp_path / "out" / "external.json").read_text())
    lab = figs["lab"]
    assert lab["fields"] == 7 and set(lab["by_class"]) == {"Benign", "blast"}
    blast = lab["by_class"]["blast"]
    assert blast["fields"] == 4 and blast["refused"] >= 0.25  # the broken file is a refusal, not an answer
    assert lab["by_class"]["Benign"]["samples"]["n"] == 1
    for d in (lab, blast):
        assert 0 <= (d["flagged"] or 0) <= 1 and "confidently_benign" in d

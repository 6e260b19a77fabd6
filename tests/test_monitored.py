"""The cell tests judged as the device judges them (trainer/monitored.py): a field the domain monitor sends to
review is not a confident answer, and the model's own figures stay beside the device's."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from edge.imaging import synthetic
from edge.imaging.decode import decode_file
from edge.inference.classifier import Classifier
from edge.pipeline.domain import ValidatedRange
from tests.report_support import model_path
from tests.shared_data import real_images
from trainer.augment import lab_stats
from trainer.data import Sample
from trainer.monitored import other_lab_stains, run_monitored, summary
from trainer.robustness import RESCALE, Judge, Outcome, field, tint

LABELS = ("Benign", "Early Pre-B", "Pre-B", "Pro-B")


@pytest.fixture(scope="module")
def clf() -> Classifier:
    return Classifier(model_path(), num_threads=2)


@pytest.fixture(scope="module")
def samples(tmp_path_factory) -> list:
    """One field of each class: real ones from ../shared, else generated smears with two white cells."""
    folder = tmp_path_factory.mktemp("fields")
    real = real_images(1)
    out = []
    for i, label in enumerate(LABELS):
        p = folder / f"WBC-{i:03d}.jpg"
        if real:
            shutil.copy(real[i], p)
        else:
            p.write_bytes(synthetic.encode(synthetic.smear(400 + i, 224, n_wbc=2)))
        out.append(Sample(path=p, label=label, number=i, sha256=""))
    return out


def _answered(clf: Classifier, samples: list) -> np.ndarray:
    for s in samples:
        f = field(decode_file(s.path).rgb, clf)
        if not Judge(clf)(f).refused:
            return f
    pytest.skip("no field answered by this model")


def test_the_monitor_flags_what_the_range_leaves_out_and_changes_no_answer(clf, samples):
    f = _answered(clf, samples)
    alone = Judge(clf)(f)
    inside = Judge(clf, validated=ValidatedRange({"cell_l": (0.0, 100.0)}))(f)
    outside = Judge(clf, validated=ValidatedRange({"cell_l": (99.5, 100.0)}))(f)
    assert alone.outside == "" and inside.outside == "" and inside.flagged == alone.needs_review
    assert outside.outside.startswith("stain unlike the validated slides (cell lightness") and outside.flagged

    def answer(o: Outcome) -> tuple:
        return o.label, o.score, o.verdict, o.needs_review

    # The model's answer and its own flags are the same with the monitor or without it.
    assert answer(inside) == answer(alone) and answer(outside) == answer(alone)


def test_device_figures_count_only_what_no_flag_sends_to_a_person():
    benign = dict(refused=False, label="Benign", verdict="benign")
    outs = [
        Outcome(score=0.01, **benign),  # a confident miss: nothing sends it to a person
        Outcome(score=0.01, outside="stain unlike the validated slides", **benign),  # the monitor does
        Outcome(score=0.3, needs_review=True, **benign),  # the model's review band does
        Outcome(refused=True),
    ]
    blasts = np.ones(4, bool)
    d = summary(outs, blasts)
    assert (d["confident_misses"], d["device_confident_misses"]) == (2, 1)
    assert d["flagged_by_monitor"] == pytest.approx(1 / 3, abs=1e-4) and d["refused"] == 0.25
    base = [Outcome(refused=False, label="Pre-B", score=0.9, verdict="malignant")] * 4
    d = summary(outs, blasts, base)
    assert d["verdict_flips"] == 1.0
    assert d["confident_verdict_flips"] == pytest.approx(2 / 3, abs=1e-4)
    assert d["device_confident_verdict_flips"] == pytest.approx(1 / 3, abs=1e-4)
    normal = summary([Outcome(refused=False, label="Pre-B", score=0.9, verdict="malignant")], np.zeros(1, bool))
    assert (normal["confident_false_alarms"], normal["device_confident_false_alarms"]) == (1, 1)


def test_run_monitored_reports_the_model_and_the_device_on_every_test(clf, samples):
    validated = clf.card.validated_range
    if validated is None:
        pytest.skip("this model's card has no validated range")
    r = run_monitored(clf, samples, validated)
    assert set(r) == {"plain", "reinhard", "exposure_gain", "tint", "painted_out"}
    assert set(r["reinhard"]) == set(LABELS) and "1.0" not in r["exposure_gain"]
    rows = [r["plain"], *r["reinhard"].values(), *r["exposure_gain"].values(), *r["tint"].values()]
    for d in rows:
        # The device flags at least what the model does: its confident errors can only be fewer.
        assert d["device_confident_misses"] <= d["confident_misses"]
        assert d["device_confident_false_alarms"] <= d["confident_false_alarms"]
        assert d["flagged_by_monitor"] is None or 0.0 <= d["flagged_by_monitor"] <= 1.0
    for d in r["reinhard"].values():
        assert d["n"] == len(samples) - 1  # every field not of the target class
        if d["confident_verdict_flips"] is not None:
            assert d["device_confident_verdict_flips"] <= d["confident_verdict_flips"] <= d["verdict_flips"]
    po = r["painted_out"]
    assert po["n"] == len(samples) and po["device_confident_malignant"] <= po["confident_malignant"]


def _lab(folder, name: str, gains) -> list:
    """Two images of another laboratory: smears under that lab's lamp (per-channel gains)."""
    out = []
    for i in range(2):
        p = folder / f"{name}-{i}.png"
        p.write_bytes(synthetic.encode(tint(synthetic.smear(700 + i, 224, n_wbc=1), gains), "png"))
        out.append(Sample(path=p, label="Benign", number=i, sha256="", source=name))
    return out


def test_other_labs_stains_are_their_own_images_statistics(tmp_path):
    warm, cool = _lab(tmp_path, "warm-lab", (1.15, 1.0, 0.85)), _lab(tmp_path, "cool-lab", (0.85, 1.0, 1.15))
    got = other_lab_stains({"warm-lab": warm, "cool-lab": cool, "empty-lab": []})
    assert set(got) == {"warm-lab", "cool-lab"}  # a source without images has no stain to lend
    for name, samples in (("warm-lab", warm), ("cool-lab", cool)):
        want = np.mean([lab_stats(decode_file(s.path).rgb) for s in samples], axis=0)
        np.testing.assert_allclose(got[name], want, rtol=1e-6)
    assert got["warm-lab"][2] > got["cool-lab"][2]  # LAB b: the warm lamp's glass is yellower


def test_blasts_shown_as_another_lab_would_are_judged_like_every_other_test(clf, samples, tmp_path):
    validated = clf.card.validated_range
    if validated is None:
        pytest.skip("this model's card has no validated range")
    others = {"warm-lab": _lab(tmp_path, "warm-lab", (1.15, 1.0, 0.85))}
    r = run_monitored(clf, samples, validated, others=others)
    zoom = f"stain_x{max(RESCALE):g}"
    assert set(r["other_lab_stain"]) == {"warm-lab"} and set(r["other_lab_stain"]["warm-lab"]) == {"stain", zoom}
    for d in r["other_lab_stain"]["warm-lab"].values():
        assert d["n"] == len(samples) and "verdict_flips" in d  # every field, compared with itself untouched
        assert d["device_confident_misses"] <= d["confident_misses"]
    assert "other_lab_stain" not in run_monitored(clf, samples[:1], validated)  # none given: none run

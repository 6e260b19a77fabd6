"""A tiny end-to-end run: train one epoch per phase, convert to int8, load through edge/inference/classifier.py."""

import csv

import numpy as np
import pytest
from click.testing import CliRunner

from edge.imaging import synthetic
from tests.shared_data import WEIGHTS

pytest.importorskip("tensorflow", reason="the train extra (tensorflow-cpu) is not installed")

CLASSES = {"Benign": (0, 0, 0), "Early": (25, -10, 0), "Pre": (-10, 20, 0), "Pro": (0, -15, 25)}


@pytest.fixture(scope="module")
def tiny_dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    for ci, (name, tint) in enumerate(CLASSES.items()):
        (root / name).mkdir()
        for n in range(1, 9):
            rgb = np.clip(synthetic.smear(seed=100 * ci + n).astype(int) + tint, 0, 255).astype(np.uint8)
            (root / name / f"WBC-{name}-{n:03d}.jpg").write_bytes(synthetic.encode(rgb))
    return root


@pytest.fixture(scope="module")
def trained(tiny_dataset, tmp_path_factory):
    from trainer.cli import main

    out = tmp_path_factory.mktemp("model")
    weights = "shared" if (WEIGHTS / "tf2_mobilenet_v2_1.0_224_ptq.tflite").is_file() else "none"
    res = CliRunner().invoke(
        main,
        [
            "train",
            str(tiny_dataset),
            "--out",
            str(out),
            "--head-epochs",
            "1",
            "--fine-epochs",
            "1",
            "--block-size",
            "2",
            "--batch-size",
            "8",
            "--modes",
            "cell,raw",
            "--ship",
            "cell",
            "--augment-copies",
            "1",
            "--weights",
            weights,
            "--sources",
            "",
        ],
        catch_exceptions=False,
    )
    assert res.exit_code == 0, res.output
    return out


def test_train_convert_load_predict(trained):
    from edge.imaging.preprocess import preprocess_image
    from edge.inference.classifier import Classifier, ModelCard, card_path_for, load_card

    tfl = trained / "edge-screen-mnv2-int8.tflite"
    clf = Classifier(tfl, num_threads=1)
    assert clf.card.input_mode == "cell" and clf.preprocessing.version == "lab-kmeans-3"
    assert clf.preprocessing.field_scale == "optical" and clf.preprocessing.crop == "none"
    assert np.dtype(clf._interp.input.dtype) == np.uint8
    assert clf.ood is not None, "a cell model ships its out-of-distribution reference"
    field = clf.predict_field(preprocess_image(synthetic.smear(5), clf.preprocessing).model_inputs)
    pred = field.prediction
    assert pred is not None or field.refusal
    if pred is not None:
        assert len(pred.probabilities) == 4
        assert sum(pred.probabilities.values()) == pytest.approx(1.0, abs=1e-4)
    card = load_card(card_path_for(tfl))
    assert ModelCard.from_dict(card.to_dict()) == card
    for key in (
        "split",
        "ablation",
        "float_int8_top1_agreement",
        "validation",
        "versions",
        "ood",
        "cell_tests",
        "quality_gate",
        "review_band_rule",
        "validated_range",
        "cell_tests_with_monitor",
        "per_source",
    ):
        assert key in card.extra, key
    assert set(card.extra["ablation"]["modes"]) == {"cell", "raw"}
    # The stain reference was measured on the training fields, not left at the default.
    assert card.preprocessing.stain_reference != type(card.preprocessing)().stain_reference
    assert (trained / "edge-screen-mnv2-int8.md").is_file()
    assert (trained / "edge-screen-mnv2-int8-confusion.png").is_file()


def test_evaluate_writes_one_prediction_row_per_image(trained, tiny_dataset, tmp_path):
    from trainer.cli import main

    csv_path = tmp_path / "pred.csv"
    res = CliRunner().invoke(
        main,
        [
            "evaluate",
            str(trained / "edge-screen-mnv2-int8.tflite"),
            str(tiny_dataset),
            "--predictions",
            str(csv_path),
            "--out",
            str(tmp_path / "ev"),
        ],
    )
    assert res.exit_code == 0, res.output
    rows = list(csv.DictReader(csv_path.open()))
    assert len(rows) == 32
    assert {"path", "true_label", "predicted_label", "malignant_score", "p_Benign", "p_Pro-B"} <= set(rows[0])
    for r in rows:
        if r["verdict"].startswith("unreadable"):
            assert r["predicted_label"] == "" and r["p_Benign"] == ""
            continue
        total = sum(float(r[f"p_{lab}"]) for lab in ("Benign", "Early Pre-B", "Pre-B", "Pro-B"))
        assert total == pytest.approx(1.0, abs=1e-3)
    assert (tmp_path / "ev" / "confusion.png").is_file()

"""`edge-screen-train evaluate` runs on the device's code path, without TensorFlow."""

import json
import subprocess
import sys

import numpy as np
import pytest

from edge.imaging import synthetic
from edge.inference.classifier import DEFAULT_MODEL
from trainer.metrics import choose_threshold, expected_calibration_error, summarize

SCRIPT = """
import json, sys
from click.testing import CliRunner
from trainer.cli import main
r = CliRunner().invoke(main, ["evaluate", sys.argv[1], sys.argv[2], "--predictions", sys.argv[3]])
print(json.dumps({"code": r.exit_code, "tf": "tensorflow" in sys.modules or "keras" in sys.modules,
                  "out": r.output[-2000:]}))
"""


@pytest.mark.skipif(not DEFAULT_MODEL.is_file(), reason="the shipped model is not in edge/models")
def test_evaluate_a_tflite_model_without_importing_tensorflow(tmp_path):
    for i, name in enumerate(("Benign", "Pro")):
        (tmp_path / "data" / name).mkdir(parents=True)
        for n in range(3):
            (tmp_path / "data" / name / f"x-{n:03d}.jpg").write_bytes(synthetic.smear_jpeg(10 * i + n))
    csv_path = tmp_path / "pred.csv"
    out = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(DEFAULT_MODEL), str(tmp_path / "data"), str(csv_path)],
        capture_output=True,
        text=True,
        check=True,
    )
    res = json.loads(out.stdout.strip().splitlines()[-1])
    assert res["code"] == 0, res["out"]
    assert res["tf"] is False
    assert len(csv_path.read_text().strip().splitlines()) == 1 + 6
    assert '"accuracy"' in res["out"]


def test_metrics_on_a_known_confusion():
    probs = np.array([[0.9, 0.1, 0, 0], [0.2, 0.8, 0, 0], [0.6, 0.4, 0, 0], [0, 0, 0.1, 0.9]])
    y = [0, 1, 1, 3]
    m = summarize(probs, y, threshold=0.5)
    assert m["accuracy"] == 0.75
    assert m["malignant_sensitivity"] == pytest.approx(2 / 3, abs=1e-4)  # the 0.4-score case is missed
    assert m["specificity"] == 1.0
    assert m["confusion_matrix"]["rows_true_cols_pred"][1] == [1, 1, 0, 0]
    assert m["per_class"]["Early Pre-B"]["recall"] == 0.5


def test_threshold_keeps_sensitivity_and_never_exceeds_argmax_rule():
    rng = np.random.default_rng(0)
    scores = np.concatenate([rng.uniform(0.3, 1.0, 400), rng.uniform(0.0, 0.2, 100)])
    malignant = np.arange(500) < 400
    t, (lo, hi) = choose_threshold(scores, malignant, 0.995)
    assert (scores[malignant] >= t).mean() >= 0.995
    assert t <= 0.5 and lo < t < hi
    t2, _ = choose_threshold(np.array([0.9, 0.95, 0.1]), np.array([True, True, False]), 0.995)
    assert t2 == 0.5  # a clean validation set must not push the line above the argmax rule


def test_ece_is_zero_for_perfectly_calibrated_and_positive_for_overconfident():
    y = np.array([0, 1] * 50)
    sure_right = np.eye(2)[y]
    assert expected_calibration_error(sure_right, y) == pytest.approx(0.0)
    sure_wrong = np.eye(2)[1 - y]
    assert expected_calibration_error(sure_wrong, y) == pytest.approx(1.0)

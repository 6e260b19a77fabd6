import json
import shutil

import pytest

from edge.imaging import synthetic
from edge.imaging.preprocess import preprocess
from edge.inference.classifier import Classifier, ModelCard, ModelLoadError, card_path_for, load_card, sha256_file
from tests.report_support import model_path


@pytest.fixture(scope="module")
def model():
    return model_path()


@pytest.fixture()
def copy(tmp_path, model):
    dst = tmp_path / "m.tflite"
    shutil.copyfile(model, dst)
    shutil.copyfile(card_path_for(model), card_path_for(dst))
    return dst


def test_predict_returns_four_probabilities_and_a_consistent_verdict(model):
    clf = Classifier(model, num_threads=1)
    for seed in range(3):
        pred = clf.predict(preprocess(synthetic.smear(seed), clf.preprocessing).model_input)
        p = pred.probabilities
        assert list(p) == ["Benign", "Early Pre-B", "Pre-B", "Pro-B"]
        assert sum(p.values()) == pytest.approx(1.0, abs=1e-4)
        assert pred.label == max(p, key=p.get)
        assert pred.malignant_score == pytest.approx(1 - p["Benign"], abs=1e-5)
        assert pred.verdict == ("malignant" if pred.malignant_score >= clf.card.threshold else "benign")


def test_decide_applies_threshold_and_review_band(model):
    clf = Classifier(model, num_threads=1)
    lo, hi = clf.card.review_band
    t = clf.card.threshold
    below = clf.decide([1 - lo / 2, lo / 2, 0, 0])
    assert below.verdict == "benign" and not below.needs_review
    at = clf.decide([1 - t, t, 0, 0])
    assert at.verdict == "malignant" and at.needs_review
    sure = clf.decide([0, 0, 0, 1])
    assert sure.verdict == "malignant" and sure.label == "Pro-B" and not sure.needs_review


def test_card_round_trips(model):
    card = load_card(card_path_for(model))
    again = ModelCard.from_dict(json.loads(json.dumps(card.to_dict())))
    assert again == card


def test_replaced_model_file_is_refused(copy):
    data = bytearray(copy.read_bytes())
    data[len(data) // 2] ^= 0xFF
    copy.write_bytes(bytes(data))
    with pytest.raises(ModelLoadError, match="does not match its card"):
        Classifier(copy)


def test_corrupt_model_with_matching_card_is_refused(copy):
    copy.write_bytes(b"not a flatbuffer at all" * 100)
    card = load_card(card_path_for(copy))
    card.sha256 = sha256_file(copy)
    card.save(card_path_for(copy))
    with pytest.raises(ModelLoadError, match="cannot load"):
        Classifier(copy)


def test_missing_card_and_unknown_preprocessing_are_refused(copy):
    d = json.loads(card_path_for(copy).read_text())
    d["preprocessing"]["version"] = "hsv-otsu-2"
    card_path_for(copy).write_text(json.dumps(d))
    with pytest.raises(ModelLoadError, match="hsv-otsu-2"):
        Classifier(copy)
    card_path_for(copy).unlink()
    with pytest.raises(ModelLoadError, match="card not found"):
        Classifier(copy)


def test_missing_runtime_names_the_package(model):
    try:
        import tflite_runtime  # noqa: F401

        pytest.skip("tflite_runtime is installed here, so it cannot be missing")
    except ImportError:
        pass
    with pytest.raises(ModelLoadError, match="pip install tflite-runtime"):
        Classifier(model, backend="tflite_runtime")


def test_threshold_outside_review_band_is_refused(copy):
    d = json.loads(card_path_for(copy).read_text())
    d["review_band"] = [0.9, 0.95]
    d["threshold"] = 0.5
    card_path_for(copy).write_text(json.dumps(d))
    with pytest.raises(ModelLoadError, match="review band"):
        Classifier(copy)

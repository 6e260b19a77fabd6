"""No white cell, no answer; nothing that is not a stained smear gets a class; corrupt JPEGs are rejected.

Runs the real pipeline with the shipped cell model (real SQLite store, real interpreter)."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from daemon_support import model_path  # noqa: F401

from edge.config import config_from_dict
from edge.imaging import synthetic
from edge.imaging.decode import decode_file
from edge.inference.classifier import Classifier
from edge.inference.ood import OodReference
from edge.pipeline.settings import PipelineSettings
from edge.pipeline.stages import Pipeline
from edge.store.database import Store
from edge.vocabulary import CARVED, PALE
from tests.shared_data import HAVE_DATASET, WEIGHTS, real_images


@pytest.fixture(scope="module")
def clf(model_path):
    c = Classifier(model_path, num_threads=1)
    if c.preprocessing.input_mode != "cell":
        pytest.skip(f"the model under test reads whole fields ({c.preprocessing.input_mode!r}), not cells")
    return c


@pytest.fixture
def run(tmp_path, clf):
    cfg = config_from_dict({"daemon": {"inbox": str(tmp_path / "in"), "device_id": "t"}}, base_dir=tmp_path)
    store = Store.open(tmp_path / "db.sqlite", device_id="t")
    pipe = Pipeline(PipelineSettings.of(cfg, clf.card), clf, store=store)

    def _run(name: str, data: bytes):
        p = tmp_path / name
        p.write_bytes(data)
        return pipe.process(p)

    yield _run
    store.close()


def _smear_fields():
    if HAVE_DATASET:
        return [decode_file(p).rgb for p in real_images(2)]
    return [synthetic.smear(seed, n_wbc=2) for seed in range(5, 9)]


def _smear_field():
    return _smear_fields()[0]


def _png(rgb) -> bytes:
    return synthetic.encode(rgb, "png")


def test_a_smear_without_white_cells_is_unreadable_with_the_reason(run, clf):
    from edge.imaging.preprocess import preprocess

    reasons = []
    for i, rgb in enumerate(_smear_fields()):
        pre = preprocess(rgb, clf.preprocessing)
        m = cv2.dilate(pre.mask.astype(np.uint8), np.ones((7, 7), np.uint8))
        painted = cv2.inpaint(pre.resized, m, 5, cv2.INPAINT_TELEA)
        res = run(f"painted{i}.png", _png(painted))
        # Without its cells a bright field may fail the exposure gate first; either way: no class, or (a smudge
        # the inpainting left, carved out as a cell or found by its contrast to the red cells) an answer that
        # goes to a person with the reason.
        if res.status == "classified":
            assert res.needs_review and (CARVED in (res.domain or "") or PALE in (res.domain or "")), (
                res.label,
                res.domain,
            )
            assert all(c.get("carved") or c.get("pale") for c in res.segmentation["cell_positions"])
        else:
            assert res.status == "unreadable" and res.label is None and res.recorded, (res.status, res.reason)
            reasons.append(res.reason)
        ok = run(f"smear{i}.png", _png(pre.resized))
        assert ok.status in ("classified", "unreadable") and (
            ok.status != "classified" or ok.segmentation["cells"] >= 1
        )
    assert "no white cell found" in reasons, reasons


def test_noise_and_blank_glass_get_no_class(run):
    rng = np.random.default_rng(0)
    for i in range(6):
        noise = rng.integers(0, 256, (224, 224, 3), dtype=np.uint8)
        res = run(f"noise{i}.png", _png(noise))
        assert res.status in ("unreadable", "rejected") and res.label is None, (res.status, res.reason)
    glass = np.clip(np.full((224, 224, 3), (238, 230, 240)) + rng.normal(0, 2, (224, 224, 3)), 0, 255)
    res = run("glass.png", _png(glass.astype(np.uint8)))
    assert res.status == "unreadable" and res.label is None


@pytest.mark.skipif(not (WEIGHTS / "cat.bmp").is_file(), reason="../shared photos not present")
def test_a_cat_photo_is_not_called_malignant(run):
    res = run("cat.bmp", (WEIGHTS / "cat.bmp").read_bytes())
    assert res.status == "unreadable" or res.verdict != "malignant" or res.needs_review, res


def test_corrupt_jpeg_scan_data_is_rejected_not_classified(run):
    ok, buf = cv2.imencode(".jpg", cv2.cvtColor(_smear_field(), cv2.COLOR_RGB2BGR))
    data = bytearray(buf.tobytes())
    sos = data.index(b"\xff\xda")
    start = sos + 2 + int.from_bytes(data[sos + 2 : sos + 4], "big")
    rng = np.random.default_rng(1)
    data[start:-2] = rng.integers(0, 255, len(data) - start - 2, dtype=np.uint8).tobytes()
    res = run("corrupt.jpg", bytes(data))
    assert res.status == "rejected" and "corrupt JPEG" in res.reason, res.reason
    flipped = bytearray(buf.tobytes())
    for k in rng.integers(start, len(flipped) - 2, 200):
        flipped[k] ^= 0xFF
    res = run("flipped.jpg", bytes(flipped))
    assert res.status == "rejected" and "JPEG" in res.reason, res.reason


def test_cells_far_from_the_training_cells_are_refused(clf):
    """With a reference that nothing is close to, every field is refused as not a smear."""
    from edge.imaging.preprocess import preprocess

    pre = preprocess(_smear_field(), clf.preprocessing)
    assert clf.predict_field(pre.model_inputs).prediction is not None
    saved = clf.ood
    try:
        clf.ood = OodReference(
            mean=saved.mean, axes=saved.axes, sd=saved.sd, residual_sd=saved.residual_sd, max_distance=0.0
        )
        fp = clf.predict_field(pre.model_inputs)
        assert fp.prediction is None and fp.refusal.startswith("not a blood smear")
    finally:
        clf.ood = saved


def test_the_field_answer_combines_its_cells(clf):
    from edge.inference.classifier import combine_cells

    benign, blast = np.array([0.9, 0.05, 0.03, 0.02]), np.array([0.02, 0.9, 0.05, 0.03])
    assert combine_cells(np.stack([benign, benign, blast]), "geometric-mean").argmax() == 0
    assert combine_cells(np.stack([benign, benign, blast]), "most-malignant").argmax() == 1
    assert np.isclose(combine_cells(np.stack([blast]), "geometric-mean").sum(), 1.0)

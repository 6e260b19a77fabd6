"""The domain monitor end to end: a real daemon on a microscope outside the card's validated range records
each field with its reason, its sample needs review, and `status` says so."""

from __future__ import annotations

import json
import shutil

import cv2
import pytest
from daemon_support import DaemonProc, cli, model_path, poll, rows, write_config  # noqa: F401

from edge.imaging import synthetic
from edge.inference.classifier import card_path_for, load_card, model_files


@pytest.fixture
def narrow_model(tmp_path, model_path):  # noqa: F811
    """The shipped model with a card whose validated range is magnification 0.3-1.2x only (the synthetic
    smears' red cells are smaller than the training ones: they measure ~0.6x)."""
    card = load_card(card_path_for(model_path))
    if card.preprocessing.field_scale != "optical":
        pytest.skip("the shipped model predates optical normalisation")
    d = tmp_path / "model"
    d.mkdir()
    dst = d / model_path.name
    for f in model_files(model_path):
        shutil.copy(f, d / f.name)
    card.extra["validated_range"] = {"ranges": {"magnification": [0.3, 1.2]}, "sources": ["test"]}
    card.save(card_path_for(dst))
    return dst


def _jpeg(rgb) -> bytes:
    return cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 95])[1].tobytes()


def test_fields_outside_the_validated_magnification_go_to_review_with_the_reason(tmp_path, narrow_model):
    cfg = write_config(tmp_path, narrow_model)
    inbox = tmp_path / "inbox"
    d = DaemonProc(cfg).wait_ready()
    try:
        (inbox / "PAT-NEAR").mkdir(parents=True)
        (inbox / "PAT-FAR").mkdir()
        for i in range(3):
            field = synthetic.smear(100 + i, 224, n_wbc=2)
            (inbox / "PAT-NEAR" / f"{i}.jpg").write_bytes(_jpeg(field))
            far = cv2.resize(field, (672, 672), interpolation=cv2.INTER_CUBIC)  # a 3x objective
            (inbox / "PAT-FAR" / f"{i}.jpg").write_bytes(_jpeg(far))
        db = tmp_path / "db.sqlite"
        poll(lambda: len(rows(db)) == 6, what="6 fields recorded")
    finally:
        assert d.terminate() == 0
    recs = rows(db)
    far = [r for r in recs if r["sample_id"] == "PAT-FAR"]
    near = [r for r in recs if r["sample_id"] == "PAT-NEAR"]
    near_mag = sorted(r["magnification"] for r in near)[1]
    assert all(0.3 <= r["magnification"] <= 1.2 for r in near), [r["magnification"] for r in near]
    assert all(2.4 <= r["magnification"] / near_mag <= 3.6 for r in far), [r["magnification"] for r in far]
    for r in far:
        if r["status"] == "classified":
            assert (
                r["needs_review"] and r["domain"].startswith("magnification ") and "validated 0.3-1.2x" in r["domain"]
            )
    assert any(r["status"] == "classified" for r in far)
    assert all(r["domain"] is None for r in near)
    samples = {s["sample_id"]: s for s in json.loads(cli("--config", str(cfg), "samples", "--format", "json").stdout)}
    assert samples["PAT-FAR"]["needs_review"]
    assert any(x.startswith("outside the validated range") for x in samples["PAT-FAR"]["review_reasons"])
    st = cli("--config", str(cfg), "status").stdout
    assert "OUTSIDE the validated range" in st and "magnification" in st
    assert all(len(line) <= 80 for line in st.splitlines() if line.startswith(("optics", "           ")))
    js = json.loads(cli("--config", str(cfg), "status", "--json").stdout)
    assert js["optics"]["outside"] >= 1 and js["optics"]["fields"] >= js["optics"]["outside"]


def test_classify_says_why_a_field_goes_to_review(tmp_path, narrow_model):
    """`classify` (no daemon, no database) gives the monitor's reason beside the answer: in its JSON, and in
    the table a technologist reads at a Pi's 80 columns."""
    cfg = write_config(tmp_path, narrow_model)
    near = synthetic.smear(300, 224, n_wbc=2)
    far = cv2.resize(near, (672, 672), interpolation=cv2.INTER_CUBIC)
    (tmp_path / "near.jpg").write_bytes(_jpeg(near))
    (tmp_path / "far.jpg").write_bytes(_jpeg(far))
    args = ("--config", str(cfg), "classify", "--no-db")
    got = {
        r["path"].rsplit("/", 1)[-1]: r
        for r in map(
            json.loads, cli(*args, "--json", str(tmp_path / "near.jpg"), str(tmp_path / "far.jpg")).stdout.splitlines()
        )
    }
    assert got["near.jpg"]["domain"] is None
    far_js = got["far.jpg"]
    assert far_js["status"] == "classified", far_js
    assert far_js["needs_review"] and far_js["domain"].startswith("magnification ")
    table = cli(*args, str(tmp_path / "far.jpg"), env={"COLUMNS": "80"}).stdout
    words = " ".join(table.split())  # the folded column wraps anywhere
    assert "REVIEW" in words and "magnification" in words and "validated 0.3-1.2x" in words

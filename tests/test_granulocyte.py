"""The immature-granulocyte check (edge/inference/granulocyte.py): a linear read-out of the model's embedding
that sends a field with such a cell to a person, loaded from the file its card names and verified by sha256."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from edge.config import Config
from edge.inference.card import ModelLoadError
from edge.inference.classifier import DEFAULT_MODEL, Classifier, card_path_for, load_card, sha256_file
from edge.inference.granulocyte import GranulocyteCheck, granulocyte_path_for
from edge.pipeline.settings import PipelineSettings
from edge.pipeline.stages import Pipeline
from edge.vocabulary import GRANULOCYTE
from tests.model_support import screened_smear, shipped_model_copy
from tests.shared_data import HAVE_DATASET, NO_DATASET, NO_PBC, PBC, pbc_held_out, real_images


def test_the_read_out_flags_a_field_from_its_highest_cell():
    check = GranulocyteCheck(weights=np.array([1.0, -2.0], np.float32), bias=0.5, threshold=3.0)
    embs = np.array([[1.0, 0.0], [2.5, 0.0], [4.0, 1.0]], np.float32)
    assert check.scores(embs) == [1.5, 3.0, 2.5]
    assert check.flagged(embs) == 3.0  # at the threshold is flagged
    assert check.flagged(embs[[0, 2]]) is None
    assert check.flagged(embs[:0]) is None


def _model_with_check(tmp_path: Path, threshold: float, tamper: bool = False) -> Path:
    """The shipped model in ``tmp_path`` with a read-out of its own (all weights 0: every cell reads ``bias``)."""
    dst, dim = shipped_model_copy(tmp_path)
    path = granulocyte_path_for(dst)
    GranulocyteCheck(np.zeros(dim, np.float32), 1.0, threshold).save(path)
    card = json.loads(card_path_for(dst).read_text())
    card["granulocyte_check"] = {"file": path.name, "sha256": sha256_file(path), "threshold": threshold}
    card_path_for(dst).write_text(json.dumps(card))
    if tamper:
        GranulocyteCheck(np.ones(dim, np.float32), 1.0, threshold).save(path)
    return dst


def test_a_flagged_cell_sends_the_field_to_review_with_its_reason(tmp_path):
    """Through the pipeline: the field keeps its answer and score, and is recorded as needing review with the
    read-out in its reason; below the threshold nothing changes."""
    answers = {}
    for name, threshold in (("flags", 0.5), ("quiet", 1.5)):
        d = tmp_path / name
        d.mkdir()
        clf = Classifier(_model_with_check(d, threshold), num_threads=1)
        assert clf.granulocyte is not None and clf.granulocyte.threshold == threshold
        answers[name] = screened_smear(clf, tmp_path)
    flagged, quiet = answers["flags"], answers["quiet"]
    assert flagged.status == quiet.status == "classified"
    assert flagged.malignant_score == quiet.malignant_score and flagged.label == quiet.label
    assert flagged.needs_review and f"{GRANULOCYTE} (read-out 1.0, flagged from 0.5)" in flagged.domain
    assert GRANULOCYTE not in (quiet.domain or "")


def test_a_check_that_does_not_match_its_card_fails_the_load(tmp_path):
    model = _model_with_check(tmp_path, 0.5, tamper=True)
    with pytest.raises(ModelLoadError, match="granulocyte check .* does not match the card's sha256"):
        Classifier(model, num_threads=1)
    granulocyte_path_for(model).unlink()
    with pytest.raises(ModelLoadError, match="granulocyte check not found"):
        Classifier(model, num_threads=1)


def test_installing_a_model_carries_its_check(tmp_path):
    from edge.inference.modelstore import ModelStore

    (tmp_path / "new").mkdir()
    model = _model_with_check(tmp_path / "new", 0.5)
    installed = ModelStore(tmp_path / "inst").install(model).path
    assert installed.parent != model.parent and granulocyte_path_for(installed).is_file()
    clf = Classifier(installed, num_threads=1)
    assert clf.granulocyte is not None and clf.granulocyte.threshold == 0.5


@pytest.mark.skipif(not PBC.is_dir(), reason=NO_PBC)
@pytest.mark.skipif(not HAVE_DATASET, reason=NO_DATASET)
def test_the_shipped_model_sends_held_out_immature_granulocytes_to_review_and_not_taleqani_fields():
    clf = Classifier(num_threads=2)
    assert load_card(card_path_for(DEFAULT_MODEL)).granulocyte_check is not None
    pipe = Pipeline(PipelineSettings.of(Config(), clf.card), clf)

    def share(paths) -> float:
        recs = [pipe.process(p) for p in paths]
        answered = [r for r in recs if r.status == "classified"]
        return sum(GRANULOCYTE in (r.domain or "") for r in answered) / max(1, len(answered))

    # All 80 held-out ones: sorted by name, the subtypes (metamyelocytes, myelocytes, promyelocytes) come in runs.
    ig, lymphocytes = share(pbc_held_out("ig", 80)), share(pbc_held_out("lymphocyte", 40))
    assert ig >= 0.6 and lymphocytes <= 0.1
    assert share(real_images(3)) == 0.0

"""Fields the device answers but always sends to a person: a white cell carved out of red cells, one found
only by its contrast to the red cells, a field whose glass the camera clipped (each behind its card flag)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from daemon_support import model_path  # noqa: F401
from field_support import merged_field, pale_field

from edge.config import config_from_dict
from edge.imaging import synthetic
from edge.inference.classifier import Classifier
from edge.pipeline.settings import PipelineSettings
from edge.pipeline.stages import Pipeline
from edge.vocabulary import CARVED, CLIPPED, PALE

FLAGS = {"carve_merged": False, "pale_search": False, "clipped_glass_review": False}


def _process(tmp_path, model_path, name, rgb, **flags):
    """The daemon's pipeline on one field of sample PAT-1, the card's preprocessing flags as given."""
    inbox = tmp_path / "inbox"
    (inbox / "PAT-1").mkdir(parents=True, exist_ok=True)
    path = inbox / "PAT-1" / f"{name}.png"
    path.write_bytes(synthetic.encode(rgb, "png"))
    cfg = config_from_dict({"daemon": {"inbox": str(inbox)}}, base_dir=tmp_path)
    clf = Classifier(model_path, num_threads=1)
    clf.card.preprocessing = dataclasses.replace(clf.card.preprocessing, **{**FLAGS, **flags})
    return Pipeline(PipelineSettings.of(cfg, clf.card, inbox=inbox), clf, store=None).process(path)


@pytest.mark.parametrize("search", ["carve_merged", "pale_search"])
def test_a_cell_found_by_a_second_search_goes_to_review_with_the_reason(tmp_path, model_path, search):
    """Another lab's reddish red cells merged with the white cell (``carve_merged``), or a white cell under
    the stain bar (``pale_search``: washed out, faded): refused without the card's flag; with it the cell is
    answered and the field sent to a person with the reason, and its sample with it."""
    field, reason, key = {
        "carve_merged": (merged_field, CARVED, "carved"),
        "pale_search": (pale_field, PALE, "pale"),
    }[search]
    answers = {on: _process(tmp_path, model_path, key, field(), **{search: on}) for on in (False, True)}
    assert answers[False].status == "unreadable" and answers[False].reason.startswith("no white cell found")
    got = answers[True]
    assert got.status == "classified" and got.needs_review and reason in (got.domain or "")
    assert got.segmentation["cell_positions"][0][key] is True


def test_a_field_whose_glass_the_camera_clipped_goes_to_review_with_the_reason(tmp_path, model_path):
    """Overexposed until the glass is 255 in every channel: answered (the exposure tests hold at +20 %) but
    sent to a person with what to do, where the card's ``clipped_glass_review`` says so; the same field
    exposed as it was is not."""
    got = {}
    for gain in (1.0, 1.2):
        rgb = np.clip(synthetic.smear(2, n_wbc=2).astype(np.float32) * gain, 0, 255).astype(np.uint8)
        for on in (False, True):
            got[gain, on] = _process(tmp_path, model_path, f"x{gain}", rgb, clipped_glass_review=on)
    assert all(r.status == "classified" for r in got.values())
    assert min(got[1.2, True].quality["optics"]["glass_rgb"]) == 255.0
    assert got[1.2, True].needs_review and CLIPPED in (got[1.2, True].domain or "")
    assert CLIPPED not in (got[1.2, False].domain or "") and CLIPPED not in (got[1.0, True].domain or "")

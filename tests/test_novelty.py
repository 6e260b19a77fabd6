"""The domain monitor's novelty (edge/inference/novelty.py): how unlike the validated laboratory's training
cells a cell is, by its nearest neighbours among them; loaded from the file its card names, verified by
sha256, and a field beyond the card's validated range goes to a person with the figure."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from edge.config import Config
from edge.inference.card import ModelLoadError
from edge.inference.classifier import Classifier, card_path_for, sha256_file
from edge.inference.novelty import NoveltyReference, novelty_path_for
from edge.pipeline.domain import ValidatedRange, statistics
from edge.pipeline.settings import PipelineSettings
from edge.pipeline.stages import Pipeline
from edge.vocabulary import NOVEL, optics_reasons
from edge.web.plain import domain_reasons
from tests.model_support import screened_smear, shipped_model_copy
from tests.shared_data import HAVE_DATASET, NO_DATASET, NO_PBC, PBC, pbc_held_out, real_images


def test_novelty_is_one_minus_the_mean_similarity_of_the_nearest_cells():
    ref = NoveltyReference.of(np.array([[1, 0, 0], [0, 1, 0], [0, 0, 1], [1, 1, 0]], np.float32), k=2)
    # Length does not count, direction does: one of the reference cells, scaled, and its neighbour at 45°.
    (same,) = ref.novelty(np.array([[5.0, 0.0, 0.0]], np.float32))
    assert same == pytest.approx(1 - (1 + 0.5**0.5) / 2, abs=1e-3)
    (between,) = ref.novelty(np.array([[1.0, 1.0, 0.0]], np.float32))
    assert between == pytest.approx(1 - (1 + 0.5**0.5) / 2, abs=1e-3)
    (far,) = ref.novelty(np.array([[0.0, -1.0, -1.0]], np.float32))
    assert far > 1.0 > same
    assert ref.novelty(np.zeros((1, 3), np.float32)) == [1.0]  # no features at all: nothing alike


def test_each_cell_is_scored_on_its_own_and_the_saved_reference_answers_the_same(tmp_path):
    rng = np.random.default_rng(0)
    ref = NoveltyReference.of(rng.random((50, 64), dtype=np.float32), k=5)
    cells = rng.random((6, 64), dtype=np.float32)
    batch = ref.novelty(cells)
    assert batch == [ref.novelty(cells[i : i + 1])[0] for i in range(6)]  # bit for bit, whatever the batch
    ref.save(tmp_path / "n.npz")
    again = NoveltyReference.load(tmp_path / "n.npz")
    assert again.k == 5 and again.novelty(cells) == batch  # stored as float16, rounded so before saving


def test_the_field_statistic_is_the_median_cell_and_beyond_the_range_is_a_plain_reason():
    assert statistics(None, None, None, [], [0.1, 0.5, 0.3])["cell_novelty"] == 0.3
    assert "cell_novelty" not in statistics(None, None, None, [1.0])
    vr = ValidatedRange(ranges={"cell_novelty": (0.1, 0.35)})
    assert vr.check(None, None, [], [0.2, 0.3, 0.5]) == []
    (reason,) = vr.check(None, None, [], [0.4, 0.5, 0.2])
    assert reason == f"{NOVEL} (novelty 0.400, validated up to 0.350)"
    assert optics_reasons(reason) == [reason]  # the monitor's: counted as the microscope's, as the others
    assert domain_reasons(reason)[0].text.startswith("the cells look unlike those of the laboratory")
    # A card whose range has no novelty (before 3.7.0) does not check it.
    assert ValidatedRange(ranges={"magnification": (0.5, 1.6)}).check(None, None, [], [0.9]) == []


def _model_with_reference(tmp_path: Path, limit: float, tamper: bool = False, k: int = 1) -> Path:
    """The shipped model in ``tmp_path`` with a novelty reference of its own (one all-ones cell) and the
    validated range's novelty limit set to ``limit``."""
    dst, dim = shipped_model_copy(tmp_path)
    path = novelty_path_for(dst)
    NoveltyReference.of(np.ones((1, dim), np.float32), k=k).save(path)
    card = json.loads(card_path_for(dst).read_text())
    card["novelty"] = {"file": path.name, "sha256": sha256_file(path)}
    card["validated_range"]["ranges"]["cell_novelty"] = [0.0, limit]
    card_path_for(dst).write_text(json.dumps(card))
    if tamper:
        NoveltyReference.of(np.ones((2, dim), np.float32), k=1).save(path)
    return dst


def test_a_field_beyond_the_validated_novelty_goes_to_review_with_its_figure(tmp_path):
    """Through the pipeline: the field keeps its answer and score; its cells' novelty is recorded, and beyond
    the card's limit it needs review with the figure in its reason."""
    answers = {}
    for name, limit in (("flags", 0.0), ("quiet", 2.0)):
        d = tmp_path / name
        d.mkdir()
        clf = Classifier(_model_with_reference(d, limit), num_threads=1)
        assert clf.novelty is not None and len(clf.novelty.cells) == 1
        answers[name] = screened_smear(clf, tmp_path)
    flagged, quiet = answers["flags"], answers["quiet"]
    assert flagged.status == quiet.status == "classified"
    assert flagged.malignant_score == quiet.malignant_score and flagged.label == quiet.label
    novelty = flagged.segmentation["novelty"]
    assert len(novelty) == flagged.segmentation["cells"] and all(0.0 < v < 1.0 for v in novelty)
    assert flagged.needs_review and f"{NOVEL} (novelty {sorted(novelty)[len(novelty) // 2]:.3f}" in flagged.domain
    assert NOVEL not in (quiet.domain or "")


def test_a_reference_that_does_not_match_its_card_fails_the_load(tmp_path):
    model = _model_with_reference(tmp_path, 0.5, tamper=True)
    with pytest.raises(ModelLoadError, match="novelty reference .* does not match the card's sha256"):
        Classifier(model, num_threads=1)
    novelty_path_for(model).unlink()
    with pytest.raises(ModelLoadError, match="novelty reference not found"):
        Classifier(model, num_threads=1)
    (tmp_path / "k").mkdir()
    with pytest.raises(ModelLoadError, match="k 2 for 1 cells"):
        Classifier(_model_with_reference(tmp_path / "k", 0.5, k=2), num_threads=1)


@pytest.mark.skipif(not PBC.is_dir(), reason=NO_PBC)
@pytest.mark.skipif(not HAVE_DATASET, reason=NO_DATASET)
def test_the_shipped_model_finds_other_labs_cells_novel_and_not_its_own():
    """The shipped reference: another laboratory's held-out normal cells, at the training scale after the
    optics, read as unlike the validated slides; Taleqani's own fields do not."""
    clf = Classifier(num_threads=2)
    assert clf.novelty is not None and clf.card.validated_range is not None
    pipe = Pipeline(PipelineSettings.of(Config(), clf.card), clf)

    def novel(paths) -> float:
        answered = [r for r in (pipe.process(p) for p in paths) if r.status == "classified"]
        return sum(NOVEL in (r.domain or "") for r in answered) / max(1, len(answered))

    assert novel(pbc_held_out("neutrophil", 15) + pbc_held_out("eosinophil", 15) + pbc_held_out("monocyte", 15)) >= 0.6
    assert novel(real_images(5)) == 0.0


def test_the_trainer_fits_the_reference_on_the_primary_sources_clean_cells_only(tmp_path):
    """trainer/novelty.fit: another source's cells and augmented copies never enter the reference; what it
    keeps is evenly spread over the primary source's cells, as the device will load them."""
    from trainer import novelty
    from trainer.cellset import CellSet, cell_embeddings
    from trainer.data import Sample

    samples = [Sample(tmp_path / f"{i}.jpg", "Benign", i, "0" * 64, "taleqani" if i < 3 else "pbc") for i in range(5)]
    rng = np.random.default_rng(2)
    n = 40
    field = np.arange(n) % 5
    copy = (np.arange(n) // 5) % 2  # every other group of five is an augmented copy
    cells = CellSet(rng.integers(0, 256, (n, 112, 112, 3), dtype=np.uint8), np.zeros(n, int), field, copy, [])
    clf = Classifier(num_threads=1)
    ref = novelty.fit(clf, cells, samples, "taleqani", n=6, k=2)
    primary = np.flatnonzero((copy == 0) & (field < 3))
    want = NoveltyReference.of(
        cell_embeddings(clf, cells.x[primary[np.linspace(0, len(primary) - 1, 6).astype(int)]]), 2
    )
    assert ref.k == 2 and np.array_equal(ref.cells, want.cells)
    with pytest.raises(ValueError, match="too few"):
        novelty.fit(clf, cells, samples, "bccd")

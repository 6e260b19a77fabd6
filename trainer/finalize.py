"""After conversion: the device-side pieces of a model card, measured through the device's own code.

:func:`finalize` fits the out-of-distribution reference, the domain monitor's novelty reference
(trainer/novelty.py) and, when PBC's immature granulocytes were in training, the granulocyte check (cell
models; trainer/granulocyte.py), chooses the threshold, the review band and the sample rule
(trainer/samplerule.py) on the validation blocks, runs the clinical reviewer's tests (trainer/robustness.py)
and sets the quality gate from their failure curves. It needs no TensorFlow, so it can be re-run on a
shipped model (`edge-screen-train finalize MODEL`) when the rules change.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from pathlib import Path
from typing import Callable, Optional, Sequence

import numpy as np

from edge.imaging.preprocess import PreprocessParams
from edge.inference.classifier import (
    LABELS,
    Classifier,
    card_path_for,
    load_card,
    sha256_file,
)
from edge.inference.novelty import novelty_path_for
from edge.inference.ood import OodReference, ood_path_for

from . import granulocyte, novelty
from .cellset import CellSet, build_cellset, cell_embeddings
from .data import Sample, Split
from .evaluate import evaluate, save_evaluation
from .metrics import binary_rates, choose_threshold, malignant_scores
from .samplerule import blocks_for, choose_rule, rule_card

log = logging.getLogger(__name__)


def finalize(
    tflite: Path,
    split: Split,
    work: Path,
    float_probs: Optional[np.ndarray] = None,
    progress: Optional[Callable[[str, int, int], None]] = None,
    tests: bool = True,
) -> None:
    """``tests=False`` (experiments such as a leave-one-source-out run): threshold, band and sample rule
    only; no cell tests, quality gate, validated range or per-source figures. Not for a shipped model."""
    prog = (lambda stage: lambda i, n: progress(stage, i, n)) if progress else (lambda stage: None)
    work.mkdir(parents=True, exist_ok=True)
    card = load_card(card_path_for(tflite))
    card.set_section("ood", None)
    card.set_section("granulocyte_check", None)
    card.set_section("novelty", None)
    card.set_section("quality_gate", None)
    card.save(card_path_for(tflite))
    if card.input_mode == "cell":
        clf = Classifier(tflite, num_threads=2)
        # The reference is of the cells the validated search finds: a cell carved out of red cells or found
        # only by its contrast (both flagged on the device) must not shape it. On the 3.1.0 run they are 132
        # of 13,289 training cells (none of the validation cells); with them the limit came out 1.985, without
        # 1.967 (3.3.0's, with the carved ones: 1.938).
        found = dataclasses.replace(card.preprocessing, carve_merged=False, pale_search=False)
        tr = build_cellset(split.train, found, progress=prog("cells: train fields (clean)"))
        va = build_cellset(split.val, found, progress=prog("cells: validation fields"))
        ref = fit_ood(clf, tr.x, va.x, ood_path_for(tflite))
        card.set_section("ood", {"file": ood_path_for(tflite).name, "sha256": sha256_file(ood_path_for(tflite)), **ref})
        card.set_section("novelty", fit_novelty(clf, tflite, tr, split.train))
        card.save(card_path_for(tflite))
        if any(granulocyte.is_type(s) for s in split.train):
            card.set_section("granulocyte_check", None)
            section = fit_granulocyte(clf, tflite, split, va, found, prog)
            card.set_section("granulocyte_check", section)
            card.save(card_path_for(tflite))
    clf = Classifier(tflite, num_threads=2)
    ev = evaluate(clf, split.val, variants=("plain",), progress=prog("evaluate int8 on validation"))
    int8_probs, refused = ev.probs["plain"], ev.refused["plain"]
    if float_probs is not None:
        both = ~refused & ~np.isnan(float_probs[:, 0])
        card.extra["float_int8_top1_agreement"] = round(
            float((int8_probs[both].argmax(1) == float_probs[both].argmax(1)).mean()), 4
        )
    scores = malignant_scores(int8_probs[~refused])
    malignant = (ev.y != LABELS.index("Benign"))[~refused]
    threshold, _ = choose_threshold(scores, malignant, 0.995)
    band, band_info = choose_band(scores, malignant, threshold)
    sens, spec = binary_rates(scores, malignant, threshold)
    # Rounded as the device stores them, so the sample rule is chosen on the numbers it will aggregate.
    field_scores = [None if r else round(float(s), 6) for s, r in zip(malignant_scores(int8_probs), refused)]
    sample_rule, sample_info = choose_rule(blocks_for(split, field_scores), threshold)
    card.threshold, card.review_band = threshold, band
    card.save(card_path_for(tflite))
    clf.card = card  # same file, new threshold: no need to load the interpreter again
    ev.rescore(clf)
    save_evaluation(ev, clf, work)
    if not tests:
        card.extra.update(
            {
                "split": split.describe(),
                "validation": ev.to_dict(),
                "size_bytes": tflite.stat().st_size,
                "experiment": "finalized without the cell tests, quality gate and validated range: not for shipping",
            }
        )
        card.set_section("sample_rule", rule_card(sample_rule, sample_info))
        card.save(card_path_for(tflite))
        return
    from .robustness import run as run_robustness

    tests = run_robustness(clf, split.val, progress=progress)
    (work / "robustness.json").write_text(json.dumps(tests, indent=2) + "\n")
    card.extra.update(
        {
            "split": split.describe(),
            "threshold_rule": "highest malignant-score threshold with validation malignant sensitivity >= 99.5 % "
            "(int8 model, fields), capped at 0.5",
            "review_band_rule": band_info,
            "validation_at_threshold": {"malignant_sensitivity": round(sens, 4), "specificity": round(spec, 4)},
            "validation": ev.to_dict(),
            "cell_tests": tests,
            "size_bytes": tflite.stat().st_size,
        }
    )
    card.set_section("sample_rule", rule_card(sample_rule, sample_info))
    card.set_section("quality_gate", quality_gate_section(tests))
    card.save(card_path_for(tflite))
    if card.preprocessing.field_scale == "optical":
        domain_and_sources(tflite, split, tests, progress)


def quality_gate_section(tests: dict) -> dict:
    """The card's ``quality_gate``: the thresholds the cell tests found (:mod:`trainer.gate`)."""
    return {k: tests["quality_gate"][k]["threshold"] for k in ("min_focus", "min_brightness", "max_brightness")}


def domain_and_sources(
    tflite: Path, split: Split, tests: dict, progress: Optional[Callable[[str, int, int], None]] = None
) -> None:
    """The domain monitor's validated range, the cell tests judged with it (:mod:`trainer.monitored`) and
    every source's figures, through the daemon's pipeline.

    Sensitivity is validated on the primary source's blocks only (the other sources hold no blasts), so
    the validated range is theirs: the monitor's statistics on those fields, with magnification widened
    down to the shrunk simulated optics (``tests["optics"]``) that kept sensitivity and agreement (never
    up: see :func:`widen_for_tests`), and the glass to the exposures that did. Other laboratories' fields
    then go to review until a clinic validates locally.
    """
    from .external import per_source, screen, source_aurocs, validated_range

    prog = (lambda stage: lambda i, n: progress(stage, i, n)) if progress else (lambda stage: None)
    card = load_card(card_path_for(tflite))
    card.set_section("validated_range", None)
    card.save(card_path_for(tflite))
    clf = Classifier(tflite, num_threads=2)
    primary = screen(clf, split.val, prog("monitor statistics: validation blocks"))
    vr = validated_range(primary, ["taleqani"])
    widen_for_tests(vr["ranges"], tests)
    card.set_section("validated_range", vr)
    card.save(card_path_for(tflite))
    clf = Classifier(tflite, num_threads=2)
    # The tests a stain, lamp or camera could fool, again with the monitor: what reaches a clinic unflagged.
    from .monitored import run_monitored

    validated = card.validated_range
    assert validated is not None  # set just above
    others = {src: [s for s in split.extra_val if s.source == src] for src in {s.source for s in split.extra_val}}
    card.extra["cell_tests_with_monitor"] = run_monitored(clf, split.val, validated, progress, others)
    card.save(card_path_for(tflite))
    every = screen(clf, list(split.val) + list(split.extra_val), prog("per-source figures"))
    card.extra["per_source"] = per_source(every, card.sample_rule)
    card.extra["ood_auroc"] = source_aurocs(every, "taleqani", "ood_distances")
    card.extra["ood_auroc"]["note"] = (
        "AUROC of the cells' embedding distance, primary validation cells vs "
        "each other source's held-out cells; sources used in training are "
        "meant to be close (they were learnt as benign)"
    )
    if card.novelty is not None:
        card.extra["novelty_auroc"] = source_aurocs(every, "taleqani", "novelty")
    card.save(card_path_for(tflite))


def widen_for_tests(ranges: dict, tests: dict, min_sensitivity: float = 0.99, min_agreement: float = 0.95) -> None:
    """Magnification and glass ranges widened to what the simulated-optics and exposure tests validated."""
    opt = tests.get("optics", {})
    ok = [
        float(k.split("_")[1])
        for k, d in opt.items()
        if k.startswith("rescale_")
        and (d.get("sensitivity_among_classified") or 0) >= min_sensitivity
        and (d.get("label_agreement_with_x1") or 0) >= min_agreement
    ]
    # Only a shrunk field widens the magnification range. A field enlarged ×2-×4 and measured back down
    # is the same pixels again (the resampling round trip, which the test does check), not what a
    # microscope at 2-4× shows (more resolution, another objective and camera): a real microscope above
    # the primary source's own spread has never been validated, so its fields go to review.
    shrunk = [f for f in ok if f < 1.0]
    if "magnification" in ranges and shrunk:
        lo, hi = ranges["magnification"]
        ranges["magnification"] = [round(min(lo, lo * min(shrunk)), 3), hi]
    curve = tests.get("curves", {}).get("exposure_gain", {})
    gains = [
        float(k)
        for k, d in curve.items()
        if (d.get("sensitivity_among_classified") or 0) >= min_sensitivity and d.get("confident_misses", 99) <= 1
    ]
    if "glass_level" in ranges and gains:
        lo, hi = ranges["glass_level"]
        ranges["glass_level"] = [round(lo * min(1.0, min(gains)), 1), round(min(255.0, hi * max(1.0, max(gains))), 1)]
    # Tints the tests validated widen the glass chromaticity by their own channel ratios.
    from .robustness import TINTS

    tints = [
        TINTS[k[len("tint_") :]]
        for k, d in opt.items()
        if k.startswith("tint_")
        and (d.get("sensitivity_among_classified") or 0) >= min_sensitivity
        and d.get("confident_misses", 99) <= 1
        and (d.get("verdict_agreement_with_x1") or 0) >= min_agreement
    ]
    for key, ratio in (("glass_rg", lambda t: t[0] / t[1]), ("glass_bg", lambda t: t[2] / t[1])):
        if key in ranges and tints:
            lo, hi = ranges[key]
            f = [ratio(t) for t in tints]
            ranges[key] = [round(lo * min(1.0, min(f)), 3), round(hi * max(1.0, max(f)), 3)]


def fit_ood(
    clf: Classifier,
    train_x: np.ndarray,
    val_x: np.ndarray,
    path: Path,
    k: int = 32,
    margin: float = 1.05,
    n: int = 3000,
) -> dict:
    """Whitened PCA of the int8 model's embeddings of training cells.

    The limit is the farthest validation cell plus ``margin``: every real cell of the held-out slides
    passes, and photographs (cat, hot dog crops: 1.7-2.4 on the first cell model, where validation cells
    reach 1.64) do not. Noise lands *near* the mean of this space, so noise is refused by the
    segmentation's stain and shape checks, not here."""

    def embed(x):
        idx = np.linspace(0, len(x) - 1, min(n, len(x))).astype(int)
        return np.stack([clf.invoke_all(x[i])[1] for i in idx])

    e = embed(train_x)
    mean = e.mean(axis=0)
    _, sv, vt = np.linalg.svd(e - mean, full_matrices=False)
    axes = vt[:k].astype(np.float32)
    sd = (sv[:k] / np.sqrt(len(e) - 1)).astype(np.float32) + 1e-6
    c = e - mean
    z = c @ axes.T
    resid = np.sqrt(np.maximum((c * c).sum(1) - (z * z).sum(1), 0))
    ref = OodReference(
        mean=mean.astype(np.float32), axes=axes, sd=sd, residual_sd=float(resid.mean()) + 1e-6, max_distance=0.0
    )
    dv = np.array([ref.distance(v) for v in embed(val_x)])
    ref.max_distance = float(dv.max() * margin)
    ref.save(path)
    return {
        "method": f"whitened PCA ({k} axes) of the pooled features + residual; limit = farthest "
        f"validation cell x {margin}",
        "max_distance": round(ref.max_distance, 4),
        "axes": k,
        "train_cells": int(len(e)),
    }


def fit_novelty(
    clf: Classifier, tflite: Path, cells: CellSet, samples: Sequence[Sample], primary: str = "taleqani"
) -> dict:
    """The domain monitor's novelty reference (trainer/novelty.py) of the primary source's clean training
    cells, saved beside the model; its card section."""
    ref = novelty.fit(clf, cells, samples, primary)
    path = novelty_path_for(tflite)
    ref.save(path)
    return novelty.card_section(path, ref, primary)


def fit_granulocyte(
    clf: Classifier,
    tflite: Path,
    split: Split,
    va: CellSet,
    found: PreprocessParams,
    prog: Callable[[str], Optional[Callable[[int, int], None]]],
) -> dict:
    """The immature-granulocyte check (:mod:`trainer.granulocyte`) fitted on training cells (clean and
    augmented) and saved beside the model; its card section with what it flags on every held-out part."""
    from edge.inference.granulocyte import granulocyte_path_for

    fields = granulocyte.training_fields(split.train)
    cells = build_cellset(fields, found, copies=granulocyte.COPIES, seed=1, progress=prog("cells: granulocyte check"))
    check = granulocyte.fit(clf, cells, fields)
    path = granulocyte_path_for(tflite)
    check.save(path)
    pos = sum(granulocyte.is_type(fields[f]) for f in cells.field)
    section = granulocyte.card_section(
        check, path.name, sha256_file(path), pos, min(granulocyte.N_OTHER, len(cells.field) - pos)
    )
    from .external import ood_auroc

    held = build_cellset(split.extra_val, found, progress=prog("cells: other sources' held-out fields"))
    extra = list(split.extra_val)
    # Each cell's read-out once; the shares and the AUROCs below are all taken from these.
    scores = np.array(check.scores(cell_embeddings(clf, held.x)))
    tal = np.array(check.scores(cell_embeddings(clf, va.x)))
    section["held_out_fields_flagged"] = {
        "taleqani validation, by class": granulocyte.flagged_share(
            tal >= check.threshold, va.field, split.val, lambda s: s.label
        ),
        "other sources, by type": granulocyte.flagged_share(
            scores >= check.threshold,
            held.field,
            extra,
            lambda s: f"{s.source} {s.path.parent.name}" if s.source == "pbc" else s.source,
        ),
    }
    is_ig = np.array([granulocyte.is_type(extra[f]) for f in held.field])
    is_pbc = np.array([extra[f].source == "pbc" for f in held.field])
    # ood_auroc(inside, outside): P(an immature granulocyte reads higher than the other cell).
    section["auroc_held_out"] = {
        "ig vs other pbc types": ood_auroc(scores[is_pbc & ~is_ig], scores[is_ig]),
        "ig vs taleqani validation cells": ood_auroc(tal, scores[is_ig]),
    }
    log.info("granulocyte check: %s", section)
    return section


def choose_band(scores: np.ndarray, malignant: np.ndarray, threshold: float, max_workload: float = 0.10) -> tuple:
    """Review band around the threshold that holds the validation errors, within a review budget.

    Starts from half the threshold to halfway to 1 and widens to take in each benign/malignant error,
    nearest first, while the share of fields inside the band stays within ``max_workload``.
    """
    lo, hi = threshold / 2, threshold + (1 - threshold) / 2
    wrong = (scores >= threshold) != malignant
    for sc in sorted(scores[wrong], key=lambda v: abs(v - threshold)):
        nlo, nhi = min(lo, sc), max(hi, sc + 1e-4)
        if ((scores >= nlo) & (scores < nhi)).mean() <= max_workload:
            lo, hi = nlo, nhi
    lo, hi = float(np.floor(lo * 1e4) / 1e4), float(min(np.ceil(hi * 1e4) / 1e4, 1.0))
    inside = (scores >= lo) & (scores < hi)
    caught = float(inside[wrong].mean()) if wrong.any() else 1.0
    info = {
        "rule": f"widen the band to hold validation errors while at most {max_workload:.0%} of fields fall inside",
        "errors": int(wrong.sum()),
        "errors_in_band": round(caught, 4),
        "review_workload": round(float(inside.mean()), 4),
    }
    return (lo, hi), info

"""Does the answer follow the white cell? The clinical reviewer's tests, run through the device's code.

Each test changes a decoded field, then the field goes through the device's own quality gate,
preprocessing and int8 interpreter (:func:`trainer.evaluate.classify_field`):

- ``painted_out``: every stained (white) cell inpainted away, only red cells and glass left. Nothing is
  there to judge, so the answer should be a refusal (or at least a review flag).
- ``cell_swap``: a field A's white cells pasted at their own positions onto field B of another class,
  after B's own cells were painted out. The answer should follow A.
- ``reinhard``: the whole field's LAB statistics moved onto another class's (what another laboratory's
  staining looks like). Labels and verdicts should not flip.
- ``curves``: Gaussian blur, exposure gain and JPEG quality at increasing strength: refusals, sensitivity
  among the fields still classified, confident misses (malignant called benign outside the review band).
- ``ood``: noise, natural photos, blank glass, red-cells-only fields and corrupt JPEGs: none should be
  called malignant with confidence.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import cv2
import numpy as np

from edge.config import QualityConfig
from edge.imaging.decode import decode_file
from edge.imaging.preprocess import decode_target, preprocess, remove_scale_bar, working_field
from edge.imaging.segmentation import segment
from edge.inference.classifier import BENIGN, Classifier
from edge.pipeline import quality
from edge.pipeline.domain import ValidatedRange

from . import augment
from .augment import jpeg_roundtrip, lab_stats, reinhard_to
from .data import Sample
from .gate import Trial, curve_with_gate, exposure_curves, exposure_limits, knee

BLUR = (0.0, 0.5, 1.0, 1.5, 2.0, 3.0)
# Down to x0.3 (glass ~75 of 255): the gate's min_brightness is the darkest level the model was shown to
# hold at, so the levels must reach one where it fails (x0.3 did, x0.4 did not: model 3.8.0's card).
EXPOSURE = (0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 1.0, 1.2, 1.4)
# Another microscope's optics, simulated on the validation fields: the field resampled (magnification) and
# the lamp/camera's colour (per-channel gains R, G, B).
RESCALE = (0.75, 2.0, 3.0, 4.0)
TINTS = {
    "warm": (1.12, 1.0, 0.88),
    "cool": (0.88, 1.0, 1.12),
    "green": (0.92, 1.08, 0.92),
    "magenta": (1.08, 0.9, 1.08),
}
JPEG = (95, 70, 50, 30, 15)


@dataclass
class Outcome:
    refused: bool
    label: Optional[str] = None
    score: Optional[float] = None
    verdict: Optional[str] = None
    # The model's review band, a cell the search had to carve or found pale, or clipped glass.
    needs_review: bool = False
    reason: str = ""
    outside: str = ""  # the domain monitor's reasons (a :class:`Judge` given the card's validated range)
    # What the gate measured on the field (focus, brightness), whether or not it passed: a degradation's
    # trials read their metric here rather than normalising the field a second time.
    gate_report: Optional[quality.QualityReport] = None

    @property
    def flagged(self) -> bool:
        """Sent to a person on the device: by the model and the cell search, or by the domain monitor."""
        return self.needs_review or bool(self.outside)

    @property
    def confident_malignant(self) -> bool:
        return not self.refused and self.verdict == "malignant" and not self.needs_review


class Judge:
    """The device's answer for a field, in the pipeline's order: exposure and focus, preprocessing, stain
    content, the cells and the model (edge/pipeline/stages.py)."""

    def __init__(
        self, classifier: Classifier, gate: Optional[QualityConfig] = None, validated: Optional[ValidatedRange] = None
    ):
        """``validated``: also check each answered field against this range, as the device's domain monitor
        does (:attr:`Outcome.outside`); None: the model and the cell search alone."""
        self.clf = classifier
        self.gate = gate or quality.stricter(QualityConfig(), classifier.card.quality_gate)
        self.validated = validated

    def measure(self, rgb: np.ndarray):
        """(working field, optics record, quality report) as the pipeline computes them."""
        params = self.clf.preprocessing
        fld, optics = working_field(rgb, params)
        return fld, optics, quality.measure(fld, params, optics)

    def __call__(self, rgb: np.ndarray) -> Outcome:
        params = self.clf.preprocessing
        rgb, optics, q = self.measure(rgb)
        if optics is not None and not optics.supported:
            return Outcome(refused=True, reason=f"magnification {optics.magnification:.1f}x unsupported", gate_report=q)
        q = quality.check_exposure_focus(q, self.gate)
        if not q.passed:
            return Outcome(refused=True, reason=q.reason, gate_report=q)
        pre = preprocess(rgb, params)
        q = quality.check_content(q, pre.stats, self.gate)
        if not q.passed:
            return Outcome(refused=True, reason=q.reason, gate_report=q)
        fp = self.clf.predict_field(pre.model_inputs)
        if fp.prediction is None:
            return Outcome(refused=True, reason=fp.refusal, gate_report=q)
        p = fp.prediction
        # The device sends a carved or pale cell, clipped glass and a cell like an immature granulocyte to
        # review too, whatever the score.
        review = p.needs_review or bool(quality.review_flags(pre.cells, params, optics)) or bool(fp.flags)
        outside = (
            "; ".join(self.validated.check(optics, pre.cell_lab, fp.distances, fp.novelty)) if self.validated else ""
        )
        return Outcome(
            refused=False,
            label=p.label,
            score=p.malignant_score,
            verdict=p.verdict,
            needs_review=review,
            outside=outside,
            gate_report=q,
        )


# Everything the exposure/focus gate could refuse let through, to see where the model itself fails.
OPEN_GATE = QualityConfig(min_focus=0.0, min_brightness=0.0, max_brightness=255.0, max_clipped_fraction=1.0)


def blur(f: np.ndarray, sigma: float) -> np.ndarray:
    return f if sigma == 0 else cv2.GaussianBlur(f, (0, 0), sigma)


def expose(f: np.ndarray, gain: float) -> np.ndarray:
    return np.clip(f.astype(np.float32) * gain, 0, 255).astype(np.uint8)


def load_fields(clf: Classifier, samples: Sequence[Sample], prog: Callable[[str, int, int], None]) -> List[np.ndarray]:
    """Each sample's working field (:func:`field`), the starting point of every test."""
    fields = []
    for i, s in enumerate(samples):
        fields.append(field(decode_file(s.path, target=decode_target(clf.preprocessing)).rgb, clf))
        prog("load fields", i + 1, len(samples))
    return fields


def tint(f: np.ndarray, gains: Sequence[float]) -> np.ndarray:
    """Another lamp or camera white balance: per-channel gains (R, G, B)."""
    return np.clip(f.astype(np.float32) * np.asarray(gains, np.float32), 0, 255).astype(np.uint8)


def field(rgb: np.ndarray, clf: Classifier) -> np.ndarray:
    params = clf.preprocessing
    return remove_scale_bar(working_field(rgb, params)[0], params)


def paint_out(resized: np.ndarray, clf: Classifier) -> np.ndarray:
    return augment.paint_out(resized, segment(resized, clf.preprocessing)[0])


def cell_swap(a: np.ndarray, b: np.ndarray, clf: Classifier) -> np.ndarray:
    params = clf.preprocessing
    if b.shape != a.shape:  # v3 working fields differ in size: the other slide's background is stretched to fit
        b = cv2.resize(b, (a.shape[1], a.shape[0]), interpolation=cv2.INTER_LINEAR)
    return augment.onto_other_slide(a, segment(a, params)[0], b, segment(b, params)[0])


def rate(xs: Sequence[bool]) -> Optional[float]:
    """Share of true values, to 4 places; None for none."""
    return round(float(np.mean(xs)), 4) if len(xs) else None


def _summary(outs: List[Outcome], y_mal: np.ndarray, labels: Optional[List[str]] = None) -> dict:
    classified = [i for i, o in enumerate(outs) if not o.refused]
    mal = [i for i in classified if y_mal[i]]
    d = {
        "n": len(outs),
        "refused": rate([o.refused for o in outs]),
        "sensitivity_among_classified": rate([outs[i].verdict == "malignant" for i in mal]),
        "specificity_among_classified": rate([outs[i].verdict == "benign" for i in classified if not y_mal[i]]),
        "confident_misses": int(sum(outs[i].verdict == "benign" and not outs[i].needs_review for i in mal)),
    }
    if labels is not None:
        d["accuracy_among_classified"] = rate([outs[i].label == labels[i] for i in classified])
    return d


def run(
    clf: Classifier,
    samples: Sequence[Sample],
    progress: Optional[Callable[[str, int, int], None]] = None,
    seed: int = 0,
) -> Dict[str, dict]:
    """Every test on ``samples`` (a labelled folder's fields); returns a JSON-ready dict."""
    judge = Judge(clf)
    prog = progress or (lambda *a: None)
    rng = np.random.default_rng(seed)
    fields = load_fields(clf, samples, prog)
    labels = [s.label for s in samples]
    y_mal = np.array([lab != BENIGN for lab in labels])
    base = [judge(f) for f in fields]
    out: Dict[str, dict] = {"plain": _summary(base, y_mal, labels)}

    painted = []
    for i, f in enumerate(fields):
        painted.append(judge(paint_out(f, clf)))
        prog("cells painted out", i + 1, len(fields))
    out["painted_out"] = {
        "n": len(painted),
        "refused": rate([o.refused for o in painted]),
        "refused_or_flagged": rate([o.refused or o.needs_review for o in painted]),
        "named_the_slide_class": rate([o.label == lab for o, lab in zip(painted, labels)]),
        "confident_malignant": rate([o.confident_malignant for o in painted]),
    }

    # Cell swap: each field's cells onto a field of another class, chosen at random.
    follow, follow_slide, refused, vflip = [], [], [], []
    for i, f in enumerate(fields):
        others = [j for j, lab in enumerate(labels) if lab != labels[i]]
        j = int(rng.choice(others))
        o = judge(cell_swap(f, fields[j], clf))
        refused.append(o.refused)
        if not o.refused:
            follow.append(o.label == labels[i])
            follow_slide.append(o.label == labels[j])
            vflip.append((o.verdict == "malignant") != y_mal[i])
        prog("cell swap", i + 1, len(fields))
    out["cell_swap"] = {
        "n": len(fields),
        "refused": rate(refused),
        "follows_cell": rate(follow),
        "follows_slide": rate(follow_slide),
        "verdict_not_the_cells": rate(vflip),
    }

    # Reinhard onto each other class's mean whole-field statistics.
    stats = {
        lab: np.mean([lab_stats(f) for f, l2 in zip(fields, labels) if l2 == lab], axis=0)
        for lab in sorted(set(labels))
    }
    rein = {}
    for lab, target in stats.items():
        idx = [i for i, l2 in enumerate(labels) if l2 != lab]
        lflip, vf, conf_vf, refused = [], [], [], []
        for k, i in enumerate(idx):
            o = judge(reinhard_to(fields[i], target))
            if not base[i].refused:
                # Flips are counted among the fields still answered: the refusals are reported beside them,
                # or a recolouring that leaves most fields unread would look harmless.
                refused.append(o.refused)
            if not o.refused and not base[i].refused:
                lflip.append(o.label != base[i].label)
                vf.append(o.verdict != base[i].verdict)
                conf_vf.append(o.verdict != base[i].verdict and not o.needs_review)
            prog(f"reinhard onto {lab}", k + 1, len(idx))
        rein[lab] = {
            "n": len(idx),
            "refused": rate(refused),
            "label_flips": rate(lflip),
            "verdict_flips": rate(vf),
            "confident_verdict_flips": rate(conf_vf),
        }
    out["reinhard"] = rein

    open_judge = Judge(clf, OPEN_GATE)
    curves: Dict[str, dict] = {}
    trials: Dict[str, List[Trial]] = {}
    for name, levels, fn, metric in (
        ("blur_sigma", BLUR, blur, "focus"),
        ("exposure_gain", EXPOSURE, expose, "brightness"),
        ("jpeg_quality", JPEG, jpeg_roundtrip, None),
    ):
        curves[name], trials[name] = degrade(fields, y_mal, labels, name, levels, fn, prog, judge, open_judge, metric)
    gate = {"min_focus": knee(trials["blur_sigma"], 0.0, "min"), **exposure_limits(trials["exposure_gain"])}
    gate["curves_at_these_thresholds"] = {
        "blur_sigma": curve_with_gate(trials["blur_sigma"], gate["min_focus"]["threshold"], "min"),
        **exposure_curves(trials["exposure_gain"], gate),
    }
    out["quality_gate"] = gate
    out["curves"] = curves
    out["optics"] = optics_tests(judge, fields, base, y_mal, labels, prog)
    from .nonsmears import ood  # it judges with this module's Judge

    out["ood"] = ood(judge, fields, clf, rng, prog)
    return out


def degrade(
    fields: Sequence[np.ndarray],
    y_mal: np.ndarray,
    labels: List[str],
    name: str,
    levels: Sequence[float],
    fn: Callable[[np.ndarray, float], np.ndarray],
    prog: Callable[[str, int, int], None],
    judge: Optional[Judge] = None,
    open_judge: Optional[Judge] = None,
    metric: Optional[str] = None,
) -> Tuple[Dict[str, dict], List[Trial]]:
    """One degradation ``fn`` at each strength: with ``judge``, the device's answers per level (the curve);
    with ``open_judge`` and ``metric`` (the gate's "focus" or "brightness"), each degraded field judged with
    the gate open as a :class:`Trial`, to see where the model itself fails."""
    curve: Dict[str, dict] = {}
    trials: List[Trial] = []
    for v in levels:
        outs = []
        for i, f in enumerate(fields):
            img = fn(f, v)
            if judge is not None:
                outs.append(judge(img))
            if open_judge is not None and metric is not None:
                o = open_judge(img)
                trials.append(
                    Trial(
                        level=v,
                        metric=getattr(o.gate_report, metric),
                        malignant=bool(y_mal[i]),
                        refused=o.refused,
                        verdict=o.verdict,
                        needs_review=o.needs_review,
                        label=labels[i],
                    )
                )
            prog(f"{name} {v}", i + 1, len(fields))
        if outs:
            curve[str(v)] = _summary(outs, y_mal, labels)
    return curve, trials


def refit_exposure(
    clf: Classifier, samples: Sequence[Sample], tests: dict, progress: Optional[Callable[[str, int, int], None]] = None
) -> dict:
    """A finalized card's exposure tests again at every :data:`EXPOSURE` level, everything else as it was:
    the gate's brightness limits from the open-gate trials, then the exposure curve judged through a gate
    with those limits, as the device will. Returns ``tests`` updated (the card's ``cell_tests``); the card's
    ``quality_gate`` is then set from ``tests["quality_gate"]`` as a finalize does."""
    prog = progress or (lambda *a: None)
    fields = load_fields(clf, samples, prog)
    labels = [s.label for s in samples]
    y_mal = np.array([lab != BENIGN for lab in labels])
    _, trials = degrade(
        fields, y_mal, labels, "exposure_gain trials", EXPOSURE, expose, prog, None, Judge(clf, OPEN_GATE), "brightness"
    )
    gate = dict(tests["quality_gate"])
    gate.update(exposure_limits(trials))
    gate["curves_at_these_thresholds"] = {**gate["curves_at_these_thresholds"], **exposure_curves(trials, gate)}
    limits = dataclasses.replace(
        clf.card.quality_gate,
        min_brightness=gate["min_brightness"]["threshold"],
        max_brightness=gate["max_brightness"]["threshold"],
    )
    judge = Judge(clf, quality.stricter(QualityConfig(), limits))
    curve, _ = degrade(fields, y_mal, labels, "exposure_gain", EXPOSURE, expose, prog, judge)
    return {**tests, "quality_gate": gate, "curves": {**tests["curves"], "exposure_gain": curve}}


def optics_tests(judge: Judge, fields, base: List[Outcome], y_mal: np.ndarray, labels: List[str], prog) -> dict:
    """Another microscope simulated on the validation fields: resampled (RESCALE) and tinted (TINTS).
    Agreement is with the same field's answer at x1 (label and verdict), among fields answered both times."""
    out: Dict[str, dict] = {}
    cases = [(f"rescale_{f:g}", lambda x, f=f: resample(x, f)) for f in RESCALE]
    cases += [(f"tint_{name}", lambda x, g=g: tint(x, g)) for name, g in TINTS.items()]
    for name, fn in cases:
        outs = []
        for i, f in enumerate(fields):
            outs.append(judge(fn(f)))
            prog(name, i + 1, len(fields))
        both = [i for i, o in enumerate(outs) if not o.refused and not base[i].refused]
        d = _summary(outs, y_mal, labels)
        d["label_agreement_with_x1"] = rate([outs[i].label == base[i].label for i in both])
        d["verdict_agreement_with_x1"] = rate([outs[i].verdict == base[i].verdict for i in both])
        out[name] = d
    return out


def resample(rgb: np.ndarray, f: float) -> np.ndarray:
    h, w = rgb.shape[:2]
    return cv2.resize(
        rgb, (int(round(w * f)), int(round(h * f))), interpolation=cv2.INTER_AREA if f < 1 else cv2.INTER_CUBIC
    )

"""The cell tests as a clinic's device answers them: the model, the cell search's flags and the domain monitor.

:mod:`trainer.robustness` measures the model with what preprocessing flags (a carved or pale cell, clipped
glass): its ``confident_*`` figures say what the network does with a recoloured, darker or tinted field.
The device also sends a field to review when its statistics lie outside the card's validated range
(:mod:`edge.pipeline.domain`: magnification, glass, the stained cells' colour, the embedding distance).
Once the range is fitted (:func:`trainer.finalize.domain_and_sources`), the tests that a stain, a lamp or a
camera could fool are run again with it, and the card keeps both: the model's figures (what it knows) and
the device's (``device_confident_*``: what reaches a clinic without a person looking), beside the share of
answered fields the monitor sent to review (what that protection costs on each test).

Contract: :func:`run_monitored` takes the finalized classifier, the validation samples and the range the
card ships; it returns a JSON-ready dict and changes nothing.
"""

from __future__ import annotations

from typing import Callable, Dict, List, Mapping, Optional, Sequence

import numpy as np

from edge.imaging.decode import decode_file
from edge.inference.classifier import BENIGN, Classifier
from edge.pipeline.domain import ValidatedRange

from .augment import lab_stats, reinhard_to
from .data import Sample
from .robustness import EXPOSURE, RESCALE, TINTS, Judge, Outcome, expose, load_fields, paint_out, rate, resample, tint

# Another laboratory's stain is taken from about this many of the other sources' held-out images (every n-th),
# as given.
OTHER_LAB_IMAGES = 60


def summary(outs: Sequence[Outcome], y_mal: np.ndarray, base: Optional[Sequence[Outcome]] = None) -> dict:
    """Refusals, sensitivity, misses and false alarms with and without the monitor; with ``base`` (the same
    fields untouched) verdict flips too, among the fields answered both times."""
    answered = [i for i, o in enumerate(outs) if not o.refused]
    mal = [i for i in answered if y_mal[i]]
    ben = [i for i in answered if not y_mal[i]]
    miss = [i for i in mal if outs[i].verdict == "benign"]
    alarm = [i for i in ben if outs[i].verdict == "malignant"]
    d = {
        "n": len(outs),
        "refused": rate([o.refused for o in outs]),
        "flagged_by_monitor": rate([bool(outs[i].outside) for i in answered]),
        "sensitivity_among_classified": rate([outs[i].verdict == "malignant" for i in mal]),
        "confident_misses": sum(not outs[i].needs_review for i in miss),
        "device_confident_misses": sum(not outs[i].flagged for i in miss),
        "confident_false_alarms": sum(not outs[i].needs_review for i in alarm),
        "device_confident_false_alarms": sum(not outs[i].flagged for i in alarm),
    }
    if base is not None:
        both = [i for i in answered if not base[i].refused]
        flips = [i for i in both if outs[i].verdict != base[i].verdict]
        d["verdict_flips"] = rate([i in flips for i in both])
        d["confident_verdict_flips"] = rate([i in flips and not outs[i].needs_review for i in both])
        d["device_confident_verdict_flips"] = rate([i in flips and not outs[i].flagged for i in both])
    return d


def run_monitored(
    clf: Classifier,
    samples: Sequence[Sample],
    validated: ValidatedRange,
    progress: Optional[Callable[[str, int, int], None]] = None,
    others: Optional[Mapping[str, Sequence[Sample]]] = None,
) -> Dict[str, dict]:
    """Untouched fields; Reinhard onto each class's mean statistics (as :func:`trainer.robustness.run`);
    every exposure gain of the curves; the tints of the optics tests; cells painted out; with ``others``
    (held-out images of other laboratories, by source) the fields as each of those laboratories would show
    them (:func:`other_lab_stains`). Each through the device's judgement with ``validated`` as its domain
    monitor."""
    prog = progress or (lambda *a: None)
    judge = Judge(clf, validated=validated)
    fields = load_fields(clf, samples, prog)
    labels = [s.label for s in samples]
    y_mal = np.array([lab != BENIGN for lab in labels])

    def each(name: str, images: Callable[[int], np.ndarray], idx: Sequence[int]) -> List[Outcome]:
        outs = []
        for k, i in enumerate(idx):
            outs.append(judge(images(i)))
            prog(f"{name} (monitored)", k + 1, len(idx))
        return outs

    every = list(range(len(fields)))
    base = each("untouched", lambda i: fields[i], every)
    out: Dict[str, dict] = {"plain": summary(base, y_mal)}
    rein = {}
    for lab in sorted(set(labels)):
        target = np.mean([lab_stats(f) for f, l2 in zip(fields, labels) if l2 == lab], axis=0)
        idx = [i for i, l2 in enumerate(labels) if l2 != lab]
        outs = each(f"reinhard onto {lab}", lambda i, t=target: reinhard_to(fields[i], t), idx)
        rein[lab] = summary(outs, y_mal[idx], [base[i] for i in idx])
    out["reinhard"] = rein
    out["exposure_gain"] = {
        str(g): summary(each(f"exposure {g}", lambda i, g=g: expose(fields[i], g), every), y_mal, base)
        for g in EXPOSURE
        if g != 1.0
    }
    out["tint"] = {
        name: summary(each(f"tint {name}", lambda i, g=g: tint(fields[i], g), every), y_mal, base)
        for name, g in TINTS.items()
    }
    painted = each("cells painted out", lambda i: paint_out(fields[i], clf), every)
    out["painted_out"] = {
        "n": len(painted),
        "refused": rate([o.refused for o in painted]),
        "confident_malignant": sum(o.confident_malignant for o in painted),
        "device_confident_malignant": sum(
            not o.refused and o.verdict == "malignant" and not o.flagged for o in painted
        ),
        "answered_unflagged": rate([not o.refused and not o.flagged for o in painted]),
    }
    targets = other_lab_stains(others or {})
    if targets:
        # The trap of training on other laboratories' normal cells: if their look meant "benign", a blast
        # shown in their stain and magnification would be missed. Measured here, on blasts the model never saw.
        zoom = max(RESCALE)
        labs = {}
        for src, t in targets.items():
            stained = each(f"stain of {src}", lambda i, t=t: reinhard_to(fields[i], t), every)
            zoomed = each(f"stain of {src}, x{zoom:g}", lambda i, t=t: resample(reinhard_to(fields[i], t), zoom), every)
            labs[src] = {"stain": summary(stained, y_mal, base), f"stain_x{zoom:g}": summary(zoomed, y_mal, base)}
        out["other_lab_stain"] = labs
    return out


def other_lab_stains(others: Mapping[str, Sequence[Sample]]) -> Dict[str, np.ndarray]:
    """Each other source's mean whole-image LAB statistics (:func:`trainer.augment.lab_stats`), from about
    OTHER_LAB_IMAGES of its images spread over the set, as the laboratory gives them."""
    out = {}
    for src, samples in sorted(others.items()):
        if not samples:
            continue
        step = max(1, len(samples) // OTHER_LAB_IMAGES)
        out[src] = np.mean([lab_stats(decode_file(s.path).rgb) for s in list(samples)[::step]], axis=0)
    return out

"""Quality-gate thresholds set where the model starts failing, not where the training images end.

For each degradation (blur, exposure) every validation field is degraded at increasing strength and run
through the model with the gate open; each result is kept with the gate's own measurement of that field
(focus, brightness). A threshold is then the least strict value at which, among the fields it lets
through at every strength, malignant sensitivity stays >= ``min_sensitivity`` and at most
``max_confident_misses`` malignant fields are called benign outside the review band, provided it refuses
at most ``max_clean_refused`` of the undegraded fields and at most ``max_class_refused`` of any one class's
(issue 13: a refusal must not follow the class; a network that holds up less under heavy blur had its
focus threshold raised until it refused 3 of 119 sharp Pro-B fields, 0.4 % of all).
The chosen values and the curves go into the card.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence

import numpy as np


@dataclass
class Trial:
    level: float  # degradation strength (blur sigma, exposure gain)
    metric: float  # what the gate measures on the degraded field (focus, brightness)
    malignant: bool
    refused: bool  # by the model side (no cell, not a smear), independent of the gate
    verdict: Optional[str]
    needs_review: bool
    label: str = ""  # the field's class, for the per-class cap on clean refusals ("" = one class)


def _ok(trials: Sequence[Trial], min_sensitivity: float, max_confident_misses: int) -> bool:
    by_level: Dict[float, List[Trial]] = {}
    for t in trials:
        by_level.setdefault(t.level, []).append(t)
    for ts in by_level.values():
        mal = [t for t in ts if t.malignant and not t.refused]
        if not mal:
            continue
        sens = np.mean([t.verdict == "malignant" for t in mal])
        misses = sum(t.verdict == "benign" and not t.needs_review for t in mal)
        if sens < min_sensitivity or misses > max_confident_misses:
            return False
    return True


def knee(
    trials: Sequence[Trial],
    clean_level: float,
    side: str,
    min_sensitivity: float = 0.99,
    max_confident_misses: int = 1,
    max_clean_refused: float = 0.02,
    whole_levels: bool = False,
    max_class_refused: float = 0.01,
) -> dict:
    """``side``: "min" (refuse below the threshold, e.g. focus) or "max" (refuse above, e.g. brightness).
    ``whole_levels``: thresholds only at the edge of a strength's fields (for discrete strengths whose
    fields share one metric value, as exposure gains do)."""
    metrics = np.array([t.metric for t in trials])
    clean = np.array([t.metric for t in trials if t.level == clean_level])
    if whole_levels:
        # A strength whose fields hardly differ in the metric (an exposure gain: every field's glass lands
        # within a grey level or two): a threshold inside that spread would keep the few fields that happen
        # to pass and call the level validated. Only a level's own edge (rounded outward) is a candidate.
        edges: Dict[float, List[float]] = {}
        for t in trials:
            edges.setdefault(t.level, []).append(t.metric)
        ends = [min(v) for v in edges.values()] if side == "min" else [max(v) for v in edges.values()]
        rounded = np.floor(np.array(ends) * 100) / 100 if side == "min" else np.ceil(np.array(ends) * 100) / 100
        cands = np.unique(rounded)
    else:
        cands = np.unique(np.round(metrics, 2))
    cands = cands if side == "min" else cands[::-1]
    limit = np.quantile(clean, max_clean_refused if side == "min" else 1 - max_clean_refused)
    # Per class: the least strict value that still leaves at most floor(share * n) of its clean fields
    # refused, counting those the model side refuses anyway (no white cell): the gate may take only what
    # is left of the class's allowance, from the fields still answered (it refuses below a "min"
    # threshold, above a "max" one).
    by_class: Dict[str, List[Trial]] = {}
    for t in trials:
        if t.level == clean_level and t.label:
            by_class.setdefault(t.label, []).append(t)
    for members in by_class.values():
        k = int(np.floor(max_class_refused * len(members))) - sum(t.refused for t in members)
        answered = sorted(t.metric for t in members if not t.refused)
        if not answered:
            continue
        if side == "max":
            answered.reverse()
        # k < 0 (the model side alone is over the allowance): the gate may take none of the others
        edge = answered[min(max(k, 0), len(answered) - 1)]
        limit = min(limit, edge) if side == "min" else max(limit, edge)
    chosen, met = None, False
    for c in cands:  # least strict first
        if (side == "min" and c > limit) or (side == "max" and c < limit):
            break
        passing = [t for t in trials if (t.metric >= c if side == "min" else t.metric <= c)]
        chosen = float(c)
        if _ok(passing, min_sensitivity, max_confident_misses):
            met = True
            break
    if chosen is None:
        chosen = float(limit)
    clean_refused = float(np.mean(clean < chosen) if side == "min" else np.mean(clean > chosen))
    return {
        "threshold": round(chosen, 2),
        "goal_met": met,
        "clean_refused": round(clean_refused, 4),
        "rule": f"least strict value keeping sensitivity >= {min_sensitivity:.0%} and <= "
        f"{max_confident_misses} confident miss at every strength among the fields it passes, "
        f"refusing at most {max_clean_refused:.0%} of undegraded fields and {max_class_refused:.0%} of any class's"
        + (", at the edge of a whole strength" if whole_levels else ""),
    }


def curve_with_gate(trials: Sequence[Trial], threshold: float, side: str) -> Dict[str, dict]:
    out: Dict[str, dict] = {}
    for lv in sorted({t.level for t in trials}):
        ts = [t for t in trials if t.level == lv]
        gated = [t for t in ts if (t.metric < threshold if side == "min" else t.metric > threshold)]
        kept = [t for t in ts if t not in gated and not t.refused]
        mal = [t for t in kept if t.malignant]
        out[str(lv)] = {
            "refused_by_gate": round(len(gated) / len(ts), 4),
            "refused_by_model": round(sum(t.refused for t in ts if t not in gated) / len(ts), 4),
            "sensitivity_among_classified": round(float(np.mean([t.verdict == "malignant" for t in mal])), 4)
            if mal
            else None,
            "confident_misses": int(sum(t.verdict == "benign" and not t.needs_review for t in mal)),
        }
    return out


def exposure_limits(trials: Sequence[Trial]) -> Dict[str, dict]:
    """The gate's brightness limits from exposure trials (gains, the clean field at 1.0): darker fields
    are judged for ``min_brightness``, brighter ones for ``max_brightness``."""
    return {
        "min_brightness": knee([t for t in trials if t.level <= 1.0], 1.0, "min", whole_levels=True),
        "max_brightness": knee([t for t in trials if t.level >= 1.0], 1.0, "max", whole_levels=True),
    }


def exposure_curves(trials: Sequence[Trial], gate: Dict[str, dict]) -> Dict[str, Dict[str, dict]]:
    """The exposure trials with :func:`exposure_limits`' thresholds applied (the card's
    ``curves_at_these_thresholds``)."""
    return {
        "exposure_gain_dark": curve_with_gate(
            [t for t in trials if t.level <= 1.0], gate["min_brightness"]["threshold"], "min"
        ),
        "exposure_gain_bright": curve_with_gate(
            [t for t in trials if t.level >= 1.0], gate["max_brightness"]["threshold"], "max"
        ),
    }

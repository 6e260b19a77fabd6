"""Per-source figures through the daemon's own pipeline, and the validated range of the domain monitor.

Every image goes through :class:`edge.pipeline.stages.Pipeline` exactly as the daemon runs it (decode, optics,
quality gate, cells, model, domain monitor), without a database. A source's figures are what a clinic
would see: how many fields are refused, called malignant, called malignant with confidence (no review),
sent to review, confidently benign; and, grouped into samples of ``sample_size`` fields, the sample
verdicts by the card's sample rule. For a source of blasts "flagged" (malignant, or sent to review) is the
catch rate and "confidently benign" the miss rate; for normal cells "confidently malignant" is the
false alarm and "flagged" the technologist's extra work.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Sequence

import numpy as np

from edge.config import Config
from edge.inference.classifier import Classifier
from edge.pipeline.domain import fit_range, statistics
from edge.pipeline.results import CLASSIFIED
from edge.pipeline.settings import PipelineSettings
from edge.pipeline.stages import Pipeline
from edge.store.records import ImageRecord
from edge.store.samples import SampleRule, judge

from .data import Sample


@dataclass
class Screened:
    sample: Sample
    result: ImageRecord

    @property
    def blast(self) -> bool:
        return self.sample.label != "Benign"


def screen(
    clf: Classifier,
    samples: Sequence[Sample],
    progress: Optional[Callable[[int, int], None]] = None,
    cfg: Optional[Config] = None,
) -> List[Screened]:
    pipe = Pipeline(PipelineSettings.of(cfg or Config(), clf.card), clf)
    out = []
    for i, s in enumerate(samples):
        out.append(Screened(s, pipe.process(s.path)))
        if progress:
            progress(i + 1, len(samples))
    return out


def field_statistics(res: ImageRecord) -> Dict[str, float]:
    """The domain monitor's statistics of one screened field (empty when it got no answer)."""
    if res.status != CLASSIFIED or not res.quality or "optics" not in res.quality:
        return {}
    o = res.quality["optics"]
    seg = res.segmentation or {}
    return statistics(
        o.get("magnification"),
        o.get("glass_rgb"),
        seg.get("cell_lab"),
        seg.get("ood_distances") or [],
        seg.get("novelty") or [],
    )


def validated_range(screened: Sequence[Screened], sources: Sequence[str]) -> dict:
    rows = [field_statistics(x.result) for x in screened]
    return {
        "ranges": fit_range([r for r in rows if r]),
        "sources": list(sources),
        "rule": "each statistic's 0.5-99.5 % quantiles over the validation fields of these sources, "
        "widened by 5 % of the span",
        "fields": int(sum(1 for r in rows if r)),
    }


def _rate(n: int, d: int) -> Optional[float]:
    return round(n / d, 4) if d else None


def figures(screened: Sequence[Screened], rule: Optional[SampleRule], sample_size: int = 10) -> dict:
    """One source's (or one class's) figures; see the module docstring."""
    n = len(screened)
    res = [x.result for x in screened]
    classified = [r for r in res if r.status == CLASSIFIED]
    malignant = [r for r in classified if r.verdict == "malignant"]
    flagged = [r for r in classified if r.verdict == "malignant" or r.needs_review]
    reasons: Dict[str, int] = defaultdict(int)
    for r in res:
        if r.status != CLASSIFIED:
            reasons[(r.reason or r.status).split(":")[0]] += 1
    out = {
        "fields": n,
        "refused": _rate(n - len(classified), n),
        "refused_reasons": dict(sorted(reasons.items(), key=lambda kv: -kv[1])),
        "malignant": _rate(len(malignant), n),
        "confidently_malignant": _rate(sum(1 for r in malignant if not r.needs_review), n),
        "flagged": _rate(len(flagged), n),
        "confidently_benign": _rate(sum(1 for r in classified if r.verdict == "benign" and not r.needs_review), n),
        "outside_validated_range": _rate(sum(1 for r in classified if r.domain), n),
        "labels": dict(sorted(_count(r.label for r in classified).items())),
    }
    # Against the truth, among the fields that got an answer (a refusal is counted above, not here).
    answered = [x for x in screened if x.result.status == CLASSIFIED]
    blasts = [x for x in answered if x.blast]
    normal = [x for x in answered if not x.blast]
    out["sensitivity"] = _rate(sum(x.result.verdict == "malignant" for x in blasts), len(blasts))
    out["specificity"] = _rate(sum(x.result.verdict == "benign" for x in normal), len(normal))
    out["accuracy"] = _rate(sum(x.result.label == x.sample.label for x in answered), len(answered))
    # Samples of `sample_size` consecutive fields, as a clinic would send them.
    verdicts = []
    for i in range(0, n - sample_size + 1, sample_size):
        chunk = res[i : i + sample_size]
        v = judge([r.status for r in chunk], [r.malignant_score for r in chunk], rule, [r.domain for r in chunk])
        verdicts.append(v)
    if verdicts:
        out["samples"] = {
            "size": sample_size,
            "n": len(verdicts),
            "malignant": sum(v.verdict == "malignant" for v in verdicts),
            "benign": sum(v.verdict == "benign" for v in verdicts),
            "no_verdict": sum(v.verdict is None for v in verdicts),
            "needs_review": sum(v.needs_review for v in verdicts),
            "benign_without_review": sum(v.verdict == "benign" and not v.needs_review for v in verdicts),
        }
    return out


def _count(xs) -> Dict[str, int]:
    d: Dict[str, int] = defaultdict(int)
    for x in xs:
        d[str(x)] += 1
    return d


def per_source(screened: Sequence[Screened], rule: Optional[SampleRule], sample_size: int = 10) -> dict:
    """Figures per source, and within a source per class (benign / each blast label)."""
    by: Dict[str, List[Screened]] = defaultdict(list)
    for x in screened:
        by[x.sample.source].append(x)
    out = {}
    for src, xs in sorted(by.items()):
        d = figures(xs, rule, sample_size)
        labels = sorted({x.sample.label for x in xs})
        if len(labels) > 1:
            d["by_class"] = {
                lab: figures([x for x in xs if x.sample.label == lab], rule, sample_size) for lab in labels
            }
        out[src] = d
    return out


def ood_auroc(inside: Sequence[float], outside: Sequence[float]) -> Optional[float]:
    """P(a random ``outside`` distance > a random ``inside`` one) (ties half): the AUROC of the distance
    as a detector of cells from elsewhere."""
    a, b = np.asarray(inside, np.float64), np.asarray(outside, np.float64)
    if not a.size or not b.size:
        return None
    allv = np.concatenate([a, b])
    ranks = np.empty(len(allv))
    order = np.argsort(allv, kind="mergesort")
    ranks[order] = np.arange(1, len(allv) + 1)
    # average ranks for ties
    _, inv, counts = np.unique(allv, return_inverse=True, return_counts=True)
    sums = np.bincount(inv, weights=ranks)
    ranks = (sums / counts)[inv]
    rb = ranks[len(a) :].sum()
    return round(float((rb - len(b) * (len(b) + 1) / 2) / (len(a) * len(b))), 4)


def cell_values(screened: Sequence[Screened], key: str = "ood_distances") -> List[float]:
    """Every cell's recorded per-cell figure ``key`` (``ood_distances``, ``novelty``) over these fields."""
    out: List[float] = []
    for x in screened:
        out.extend((x.result.segmentation or {}).get(key) or [])
    return out


def source_aurocs(every: Sequence[Screened], primary: str, key: str) -> Dict[str, Optional[float]]:
    """Per other source: the AUROC of the per-cell figure ``key`` as a detector of its held-out cells
    against the primary source's validation cells."""
    inside = cell_values([x for x in every if x.sample.source == primary], key)
    return {
        src: ood_auroc(inside, cell_values([x for x in every if x.sample.source == src], key))
        for src in sorted({x.sample.source for x in every} - {primary})
    }

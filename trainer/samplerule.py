"""The card's ``sample_rule``: how a sample's field scores become one verdict, chosen on validation blocks.

The device judges a patient smear from many fields (edge/store/samples.py). The dataset has no patient ids, but
neighbouring file numbers come from the same slide, so each held-out block of the trainer's split stands in
for one sample. Candidate statistics are scored on those blocks through ``edge.store.samples`` itself, so the
rule measured here is the rule the device runs. No TensorFlow.
"""

from __future__ import annotations

import csv
import math
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from edge.inference.classifier import BENIGN, card_path_for, load_card
from edge.store.samples import SampleRule, judge

from .data import Sample, Split

# (statistic, q) pairs tried; q only matters for "quantile".
CANDIDATES: Tuple[Tuple[str, float], ...] = (
    ("mean", 0.5),
    ("quantile", 0.5),
    ("quantile", 0.75),
    ("quantile", 0.9),
    ("fraction_malignant", 0.5),
)
SUBSAMPLE_K = (3, 5, 10)
MIN_READABLE_GOAL = 0.99
DRAWS = 2000
MD_HEADING = "## Sample verdict (validation blocks as samples)"


@dataclass
class Block:
    """One held-out block of consecutive file numbers of one class: the stand-in for one sample."""

    label: str
    index: int  # file number // block_size
    numbers: Tuple[int, int]  # first and last file number present
    scores: List[Optional[float]]  # per field; None = the device refused the field

    @property
    def malignant(self) -> bool:
        return self.label != BENIGN

    @property
    def readable(self) -> List[float]:
        return [s for s in self.scores if s is not None]

    @property
    def name(self) -> str:
        return f"{self.label}#{self.index}"


def group_blocks(samples: Sequence[Sample], scores: Sequence[Optional[float]], block_size: int) -> List[Block]:
    by: Dict[Tuple[str, int], list] = defaultdict(list)
    for s, sc in zip(samples, scores):
        by[(s.label, s.number // block_size)].append((s.number, None if sc is None or math.isnan(sc) else float(sc)))
    return [
        Block(
            label=lab,
            index=b,
            numbers=(min(n for n, _ in rows), max(n for n, _ in rows)),
            scores=[sc for _, sc in sorted(rows)],
        )
        for (lab, b), rows in sorted(by.items())
    ]


def scores_from_csv(path: str | Path, samples: Sequence[Sample]) -> List[Optional[float]]:
    """Per-field malignant scores of ``samples`` from an `evaluate --predictions` CSV (refused: None)."""
    rows = {}
    with open(path, newline="") as f:
        for r in csv.DictReader(f):
            rows[str(Path(r["path"]).resolve())] = float(r["malignant_score"]) if r["malignant_score"] else None
    missing = [s.path for s in samples if str(Path(s.path).resolve()) not in rows]
    if missing:
        raise ValueError(
            f"{path} has no row for {len(missing)} validation field(s), e.g. {missing[0]}: "
            "was it written with the same dataset and --block-size?"
        )
    return [rows[str(Path(s.path).resolve())] for s in samples]


def _rule(
    statistic: str,
    q: float,
    threshold: float,
    field_threshold: float,
    band=(0.0, 0.0),
    min_readable: int = 1,
    disagreement: float = 1.0,
) -> SampleRule:
    return SampleRule(
        statistic=statistic,
        q=q,
        threshold=threshold,
        review_band=tuple(band),
        min_readable=min_readable,
        disagreement=disagreement,
        field_threshold=field_threshold,
    )


def _stat(rule: SampleRule, scores: Sequence[float]) -> float:
    return round(rule.statistic_of(scores), 6)  # as judge() rounds it, so the threshold test agrees


def score_candidate(blocks: Sequence[Block], statistic: str, q: float, field_threshold: float) -> dict:
    """The threshold and margin of one statistic over the blocks.

    The threshold never exceeds the lowest malignant block's statistic, so no validation sample is missed
    whatever happens to the benign ones; separable classes get the midpoint of the gap.
    """
    probe = _rule(statistic, q, 0.5, field_threshold)
    stats = {b.name: _stat(probe, b.readable) for b in blocks if b.readable}
    mal = [stats[b.name] for b in blocks if b.malignant and b.name in stats]
    ben = [stats[b.name] for b in blocks if not b.malignant and b.name in stats]
    lo_mal, hi_ben = min(mal), max(ben) if ben else 0.0
    margin = lo_mal - hi_ben
    thr = (lo_mal + hi_ben) / 2 if margin > 0 else lo_mal
    thr = math.floor(thr * 1e6) / 1e6
    return {
        "statistic": statistic,
        "q": q,
        "threshold": thr,
        "margin": round(margin, 6),
        "lowest_malignant": lo_mal,
        "highest_benign": hi_ben,
        "malignant_missed": sum(1 for v in mal if v < thr),
        "benign_wrong": sum(1 for v in ben if v >= thr),
        "all_right": all(v >= thr for v in mal) and all(v < thr for v in ben),
        "stats": stats,
    }


def choose_statistic(
    blocks: Sequence[Block], field_threshold: float, candidates: Sequence[Tuple[str, float]] = CANDIDATES
) -> Tuple[dict, List[dict]]:
    """No missed malignant sample first, then fewest wrong benign samples, then the widest margin."""
    scored = [score_candidate(blocks, s, q, field_threshold) for s, q in candidates]
    best = min(scored, key=lambda c: (c["malignant_missed"], c["benign_wrong"], -c["margin"]))
    return best, scored


def review_band(best: dict) -> Tuple[float, float]:
    """Separable: the gap between the classes' nearest validation samples, less a tenth of it at each end
    (a new sample whose statistic lies where no validation sample did is for a human). Overlapping: the
    whole overlap, so every sample that validation could not tell apart is reviewed."""
    thr, m = best["threshold"], best["margin"]
    if m > 0:
        lo, hi = best["highest_benign"] + 0.1 * m, best["lowest_malignant"] - 0.1 * m
    else:
        lo, hi = best["lowest_malignant"], best["highest_benign"]
    lo, hi = math.floor(min(lo, thr) * 1e4) / 1e4, math.ceil(max(hi, thr) * 1e4) / 1e4
    return max(lo, 0.0), min(hi, 1.0)


def disagreement_share(blocks: Sequence[Block], rule: SampleRule) -> Tuple[float, float]:
    """(largest share of fields against the verdict in a validation block, the flag level): the next 5 %
    step above it, so the validation samples' ordinary stray fields raise no flag and more than that does."""
    worst = 0.0
    for b in blocks:
        r = b.readable
        if not r:
            continue
        v = judge(["classified"] * len(r), r, rule)
        against = sum(1 for s in r if (s >= rule.field_threshold) != (v.verdict == "malignant"))
        worst = max(worst, against / len(r))
    return worst, max(0.1, (math.floor(worst * 20 + 1e-9) + 1) / 20)


def subsample(blocks: Sequence[Block], rule: SampleRule, k: int, draws: int = DRAWS, seed: int = 0) -> dict:
    """Sample-level sensitivity/specificity when each block is seen through only ``k`` fields.

    Fields are drawn with replacement (bootstrap): a five-field block still gives ten-field samples, and
    the spread is, if anything, wider than that of distinct fields of one slide."""
    rng = np.random.default_rng(seed + k)
    right = {True: [0, 0], False: [0, 0]}
    review = 0
    for b in blocks:
        r = np.array(b.readable)
        if not len(r):
            continue
        for _ in range(draws):
            pick = [float(x) for x in rng.choice(r, size=k, replace=True)]
            v = judge(["classified"] * k, pick, rule)
            right[b.malignant][0] += (v.verdict == "malignant") == b.malignant
            right[b.malignant][1] += 1
            review += v.needs_review
    tot = right[True][1] + right[False][1]
    return {
        "k": k,
        "sensitivity": round(right[True][0] / max(right[True][1], 1), 4),
        "specificity": round(right[False][0] / max(right[False][1], 1), 4),
        "needs_review": round(review / max(tot, 1), 4),
        "draws_per_block": draws,
    }


def min_readable(
    blocks: Sequence[Block], rule: SampleRule, goal: float = MIN_READABLE_GOAL, k_max: int = 25, draws: int = DRAWS
) -> Tuple[int, List[dict]]:
    """Smallest k at which k-field sub-samples get both sensitivity and specificity >= ``goal``."""
    curve = []
    for k in range(1, k_max + 1):
        s = subsample(blocks, rule, k, draws)
        curve.append(s)
        if s["sensitivity"] >= goal and s["specificity"] >= goal:
            return k, curve
    return k_max, curve


def choose_rule(blocks: Sequence[Block], field_threshold: float, draws: int = DRAWS) -> Tuple[SampleRule, dict]:
    """The rule and the validation figures that justify it (goes under ``sample_rule["validation"]``)."""
    if not any(b.malignant for b in blocks) or not any(b.readable for b in blocks):
        raise ValueError("need at least one malignant validation block with readable fields")
    best, scored = choose_statistic(blocks, field_threshold)
    band = review_band(best)
    base = _rule(best["statistic"], best["q"], best["threshold"], field_threshold, band)
    worst, dis = disagreement_share(blocks, base)
    base = _rule(best["statistic"], best["q"], best["threshold"], field_threshold, band, 1, dis)
    k_min, curve = min_readable(blocks, base, draws=draws)
    rule = _rule(best["statistic"], best["q"], best["threshold"], field_threshold, band, k_min, dis)
    per_block = []
    for b in blocks:
        v = judge(["classified" if s is not None else "unreadable" for s in b.scores], b.scores, rule)
        per_block.append(
            {
                "block": b.name,
                "files": f"{b.numbers[0]}-{b.numbers[1]}",
                "fields": len(b.scores),
                "readable": len(b.readable),
                "statistic": v.score,
                "verdict": v.verdict,
                "right": v.verdict == ("malignant" if b.malignant else "benign"),
                "needs_review": v.needs_review,
            }
        )
    mal = [p for p, b in zip(per_block, blocks) if b.malignant]
    ben = [p for p, b in zip(per_block, blocks) if not b.malignant]
    info = {
        "method": "each held-out block of the trainer's split (consecutive file numbers of one class, i.e. "
        "about one slide) treated as one sample; candidates scored through edge.store.samples on the int8 "
        "model's field scores; chosen: no missed malignant sample, then fewest wrong benign samples, "
        "then the widest margin between the classes",
        "blocks": len(blocks),
        "malignant_blocks": len(mal),
        "benign_blocks": len(ben),
        "fields_per_block": {
            "min": min(p["fields"] for p in per_block),
            "max": max(p["fields"] for p in per_block),
            "median": float(np.median([p["fields"] for p in per_block])),
        },
        "sensitivity": round(sum(p["right"] for p in mal) / max(len(mal), 1), 4),
        "specificity": round(sum(p["right"] for p in ben) / max(len(ben), 1), 4),
        "all_right": all(p["right"] for p in per_block),
        "margin": best["margin"],
        "candidates": [
            {
                k: c[k]
                for k in ("statistic", "q", "threshold", "margin", "malignant_missed", "benign_wrong", "all_right")
            }
            for c in scored
        ],
        "review_band_rule": "the gap between the nearest benign and malignant validation samples' statistics, "
        "less a tenth of it at each end",
        "disagreement_rule": f"next 5 % step above the largest share of fields against the verdict in a "
        f"validation block ({worst:.3f}), at least 10 %",
        "min_readable_rule": f"smallest k at which bootstrapped k-field sub-samples of every block keep "
        f"sensitivity and specificity >= {MIN_READABLE_GOAL:.0%}",
        "min_readable_curve": [{k: c[k] for k in ("k", "sensitivity", "specificity")} for c in curve],
        "subsamples": [subsample(blocks, rule, k, draws) for k in SUBSAMPLE_K],
        "per_block": per_block,
    }
    return rule, info


def rule_card(rule: SampleRule, info: dict) -> dict:
    return {**rule.to_dict(), "validation": info}


def blocks_for(split: Split, scores: Sequence[Optional[float]]) -> List[Block]:
    return group_blocks(split.val, scores, split.block_size)


def markdown_lines(sr: Optional[dict]) -> List[str]:
    """The model card .md section (also used by trainer/report.py)."""
    if not sr:
        return []
    v = sr["validation"]
    stat = f"{sr['statistic']} (q = {sr['q']})" if sr["statistic"] == "quantile" else sr["statistic"]
    out = [
        MD_HEADING,
        "",
        f"Rule: a sample is malignant when the **{stat}** of its readable fields' malignant scores "
        f"(field threshold {sr['field_threshold']}) is >= **{sr['threshold']}**; review band "
        f"{sr['review_band'][0]} – {sr['review_band'][1]}, at least {sr['min_readable']} readable fields, "
        f"review when >= {sr['disagreement']:.0%} of fields disagree.",
        "",
        f"On {v['blocks']} held-out blocks ({v['malignant_blocks']} malignant, {v['benign_blocks']} benign; "
        f"{v['fields_per_block']['min']}–{v['fields_per_block']['max']} fields each, one block ≈ one slide): "
        f"sensitivity {v['sensitivity']:.2%}, specificity {v['specificity']:.2%}, margin between the classes "
        f"{v['margin']:.3f}.",
        "",
        "| candidate | threshold | margin | malignant missed | benign wrong |",
        "|---|---|---|---|---|",
    ]
    for c in v["candidates"]:
        name = f"quantile {c['q']}" if c["statistic"] == "quantile" else c["statistic"]
        out.append(f"| {name} | {c['threshold']} | {c['margin']} | {c['malignant_missed']} | {c['benign_wrong']} |")
    out += ["", "| fields per sample (bootstrap) | sensitivity | specificity | needs review |", "|---|---|---|---|"]
    for s in v["subsamples"]:
        out.append(f"| {s['k']} | {s['sensitivity']:.2%} | {s['specificity']:.2%} | {s['needs_review']:.2%} |")
    out += [
        "",
        "The validation blocks are few (the public dataset has no patient ids) and the benign ones are "
        "fewest, so these figures bound what the rule does on this dataset, not on new patients.",
        "",
    ]
    return out


def write_markdown(md_path: Path, sr: dict) -> None:
    """Put the section into an existing card .md, replacing an older one (before "## Limits" if new)."""
    section = "\n".join(markdown_lines(sr))
    text = md_path.read_text() if md_path.exists() else ""
    if MD_HEADING in text:
        head, _, rest = text.partition(MD_HEADING)
        nxt = rest.find("\n## ")
        text = head + section + (rest[nxt + 1 :] if nxt >= 0 else "")
    elif "\n## Limits" in text:
        head, _, rest = text.partition("\n## Limits")
        text = head + "\n" + section + "\n## Limits" + rest
    else:
        text = text.rstrip("\n") + "\n\n" + section
    md_path.write_text(text)


def update_card(tflite: Path, rule: SampleRule, info: dict) -> dict:
    """Write ``sample_rule`` into the model's card .json and its .md; returns the card entry."""
    card = load_card(card_path_for(tflite))
    card.set_section("sample_rule", rule_card(rule, info))
    # The device reads it back through the same parser, so a format slip fails here, not on a Pi.
    if SampleRule.from_card(card.extra, card.threshold) != rule:
        raise ValueError("sample_rule does not read back through edge.store.samples.SampleRule.from_card")
    card.save(card_path_for(tflite))
    write_markdown(tflite.with_suffix(".md"), card.extra["sample_rule"])
    return card.extra["sample_rule"]


__all__ = [
    "Block",
    "CANDIDATES",
    "blocks_for",
    "choose_rule",
    "choose_statistic",
    "group_blocks",
    "markdown_lines",
    "rule_card",
    "scores_from_csv",
    "subsample",
    "update_card",
    "write_markdown",
]

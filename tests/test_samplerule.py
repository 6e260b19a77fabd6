"""The sample verdict rule: chosen on validation blocks, read back by the device, right on the shipped model."""

from __future__ import annotations

import json
import shutil

import pytest
from shared_data import DATASET, HAVE_DATASET, NO_DATASET

from edge.inference.classifier import DEFAULT_MODEL, card_path_for, load_card
from edge.store.samples import SampleRule, judge
from trainer.samplerule import MD_HEADING, Block, choose_rule, choose_statistic, rule_card, update_card

FIELD_T = 0.4


def _block(label: str, i: int, scores) -> Block:
    return Block(label=label, index=i, numbers=(25 * i, 25 * i + len(scores) - 1), scores=list(scores))


def _verdicts(blocks, rule):
    return [judge(["classified"] * len(b.readable), b.readable, rule).verdict for b in blocks]


def test_separable_blocks_all_right_with_a_margin():
    blocks = [
        _block("Benign", 0, [0.01, 0.05, 0.1, 0.2, 0.02]),
        _block("Benign", 1, [0.0, 0.3, 0.05, 0.1]),
        _block("Pre-B", 0, [0.9, 0.95, 0.7, 0.99, 0.8]),
        _block("Pro-B", 3, [0.85, 0.6, 0.97, None, 0.9]),
    ]
    rule, info = choose_rule(blocks, FIELD_T, draws=200)
    assert info["all_right"] and info["sensitivity"] == 1.0 and info["specificity"] == 1.0
    assert _verdicts(blocks, rule) == ["benign", "benign", "malignant", "malignant"]
    assert info["margin"] > 0
    lo, hi = rule.review_band
    assert lo <= rule.threshold <= hi
    # The band lies in the gap, so none of the (well separated) validation samples is sent to review.
    assert not any(p["needs_review"] for p in info["per_block"])
    assert [s["k"] for s in info["subsamples"]] == [3, 5, 10]
    assert info["per_block"][3]["fields"] == 5 and info["per_block"][3]["readable"] == 4


def test_a_stray_high_field_in_a_benign_sample_picks_a_robust_statistic():
    # Three wildly malignant-looking fields in a benign sample drag the mean, the upper quantiles and the
    # share of malignant fields up; the median is unmoved, so it separates with the widest margin and wins.
    blocks = [
        _block("Benign", 0, [0.02] * 8 + [1.0, 1.0, 1.0]),
        _block("Benign", 1, [0.05] * 10),
        _block("Early Pre-B", 0, [0.55] * 6 + [0.3] * 4),
        _block("Pre-B", 1, [0.9] * 10),
    ]
    best, scored = choose_statistic(blocks, FIELD_T)
    by = {(c["statistic"], c["q"]): c for c in scored}
    assert not by[("quantile", 0.9)]["all_right"]  # q0.9 of the benign block is 1.0
    assert (best["statistic"], best["q"]) == ("quantile", 0.5) and best["all_right"]


def test_a_threshold_that_misses_a_malignant_sample_is_never_chosen():
    # Overlap: the first malignant sample scores below a benign one under every statistic. Sensitivity
    # comes first, so the benign sample is called malignant rather than the malignant one missed.
    blocks = [
        _block("Benign", 0, [0.5, 0.6, 0.55, 0.65]),
        _block("Benign", 1, [0.0, 0.1]),
        _block("Pro-B", 0, [0.3, 0.35, 0.32, 0.31]),
        _block("Pre-B", 1, [0.95, 0.9]),
    ]
    best, scored = choose_statistic(blocks, FIELD_T)
    assert all(c["malignant_missed"] == 0 for c in scored)
    rule, info = choose_rule(blocks, FIELD_T, draws=200)
    assert info["sensitivity"] == 1.0 and info["specificity"] < 1.0 and not info["all_right"]
    assert _verdicts(blocks, rule)[2:] == ["malignant", "malignant"]
    lo, hi = rule.review_band
    # Every sample inside the overlap is for a human.
    assert lo <= best["lowest_malignant"] and hi >= best["highest_benign"]


def test_card_round_trip_and_markdown_section(tmp_path):
    for suffix in (".json", ".md"):
        shutil.copyfile(DEFAULT_MODEL.with_suffix(suffix), tmp_path / f"m{suffix}")
    model = tmp_path / "m.tflite"  # update_card needs only the card beside it, never the network
    blocks = [_block("Benign", 0, [0.01, 0.2]), _block("Pre-B", 0, [0.9, 0.8, 0.99])]
    rule, info = choose_rule(blocks, FIELD_T, draws=100)
    entry = rule_card(rule, info)
    assert SampleRule.from_card(json.loads(json.dumps({"sample_rule": entry})), 0.9) == rule
    update_card(model, rule, info)
    update_card(model, rule, info)  # a second run replaces the section instead of adding another
    card = load_card(card_path_for(model))
    assert SampleRule.from_card(card.extra, card.threshold) == rule
    assert card.extra["sample_rule"]["validation"]["blocks"] == 2
    md = (tmp_path / "m.md").read_text()
    assert md.count(MD_HEADING) == 1 and md.index(MD_HEADING) < md.index("## Limits")


# ------------------------------------------------------------------------------ the shipped model
@pytest.fixture(scope="session")
def validation_blocks():
    if not HAVE_DATASET:
        print(f"skipping: {NO_DATASET}")
        pytest.skip(NO_DATASET)
    from edge.inference.classifier import Classifier
    from trainer.data import load_split
    from trainer.evaluate import evaluate
    from trainer.metrics import malignant_scores
    from trainer.samplerule import blocks_for

    clf = Classifier(DEFAULT_MODEL, num_threads=2)
    split = load_split(DATASET, int(clf.card.extra["split"]["block_size"]))
    ev = evaluate(clf, split.val, ("plain",))
    scores = [
        None if r else round(float(s), 6)
        for s, r in zip(malignant_scores(ev.probs["plain"], clf.labels), ev.refused["plain"])
    ]
    return clf.card, blocks_for(split, scores)


def test_shipped_card_rule_gets_every_validation_block_right(validation_blocks):
    card, blocks = validation_blocks
    rule = SampleRule.from_card(card.extra, card.threshold)
    assert rule is not None, "the shipped card has no sample_rule: run edge-screen-train sample-rule"
    assert len(blocks) == card.extra["sample_rule"]["validation"]["blocks"]
    for b in blocks:
        v = judge(["classified" if s is not None else "unreadable" for s in b.scores], b.scores, rule)
        assert v.verdict == ("malignant" if b.malignant else "benign"), (b.name, v)
        # A block smaller than the rule's minimum (the card's min_readable) is right and goes to review.
        assert v.readable >= rule.min_readable or v.needs_review, (b.name, v)

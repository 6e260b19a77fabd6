"""The model card's typed sections: parsed once on load, defaults for older cards, written back unchanged."""

import json

import pytest

from edge.inference.card import (
    DEFAULT_CELL_RULE,
    DEFAULT_MODEL,
    GranulocyteSpec,
    ModelCard,
    ModelLoadError,
    NoveltySpec,
    OodSpec,
    QualityGate,
    card_path_for,
    load_card,
)


def _shipped() -> dict:
    return json.loads(card_path_for(DEFAULT_MODEL).read_text())


def test_shipped_card_sections_are_typed():
    d = _shipped()
    card = ModelCard.from_dict(d)
    assert card.quality_gate == QualityGate(**{k: float(v) for k, v in d["quality_gate"].items()})
    assert card.sample_rule is not None and card.sample_rule.threshold == d["sample_rule"]["threshold"]
    assert card.cell_rule == d["cell_rule"]
    assert card.cell_views == d.get("cell_views", 1)
    assert card.ood == OodSpec(file=d["ood"]["file"], sha256=d["ood"]["sha256"])
    g = d["granulocyte_check"]
    assert card.granulocyte_check == GranulocyteSpec(file=g["file"], sha256=g["sha256"], threshold=g["threshold"])
    assert card.novelty == NoveltySpec(file=d["novelty"]["file"], sha256=d["novelty"]["sha256"])
    assert card.validated_range is not None and set(card.validated_range.ranges) == set(d["validated_range"]["ranges"])


def test_shipped_card_says_what_reaches_a_clinic_without_review():
    """The cell tests judged with the card's own domain monitor (trainer/monitored.py) are in the card, and
    they are consistent: the device flags at least what the model does, so its confident errors are never
    more than the model's, and on untouched validation fields the monitor's cost is stated."""
    t = _shipped()["cell_tests_with_monitor"]
    rows = [t["plain"], *t["reinhard"].values(), *t["exposure_gain"].values(), *t["tint"].values()]
    assert len(rows) >= 1 + 4 + 4 + 4
    # The blasts shown as each other laboratory in training would show them (its stain, and magnified).
    others = t["other_lab_stain"]
    assert set(others) == {"pbc", "bccd"}
    rows += [r for lab in others.values() for r in lab.values()]
    for r in rows:
        assert r["device_confident_misses"] <= r["confident_misses"]
        assert r["device_confident_false_alarms"] <= r["confident_false_alarms"]
        if r.get("confident_verdict_flips") is not None:
            assert r["device_confident_verdict_flips"] <= r["confident_verdict_flips"]
    assert 0.0 <= t["plain"]["flagged_by_monitor"] < 0.05
    assert t["painted_out"]["device_confident_malignant"] <= t["painted_out"]["confident_malignant"]


def test_shipped_gate_refuses_dim_fields_where_the_model_failed_not_where_testing_stopped():
    """The card's darkest glass is an edge the exposure tests found: every level the gate answers holds
    (sensitivity >= 99 %, at most one confident miss), and the darkest level tested, beyond that edge, is
    refused whole. (3.7.0's 149 was the darkest level tested, x0.6, which the model held.)"""
    d = _shipped()
    gate = d["cell_tests"]["quality_gate"]
    assert d["quality_gate"]["min_brightness"] == gate["min_brightness"]["threshold"]
    dark = gate["curves_at_these_thresholds"]["exposure_gain_dark"]
    darkest = min(dark, key=float)
    assert dark[darkest]["refused_by_gate"] == 1.0
    answered = [c for c in dark.values() if c["refused_by_gate"] < 1.0]
    assert len(answered) >= 4
    for c in answered:
        assert c["sensitivity_among_classified"] >= 0.99 and c["confident_misses"] <= 1, c


def test_shipped_card_says_what_the_granulocyte_check_flags_on_held_out_fields():
    """Fitted on training cells only; the card carries what it sends to review on every held-out part: most
    of PBC's immature granulocytes, no more than one in a hundred validation fields of any class."""
    g = _shipped()["granulocyte_check"]
    flagged = g["held_out_fields_flagged"]
    assert flagged["other sources, by type"]["pbc ig"] >= 0.5
    assert set(flagged["taleqani validation, by class"]) == {"Benign", "Early Pre-B", "Pre-B", "Pro-B"}
    assert max(flagged["taleqani validation, by class"].values()) <= 0.01
    assert g["auroc_held_out"]["ig vs other pbc types"] > 0.9


def test_shipped_card_says_how_well_novelty_tells_other_labs_cells_apart():
    """The novelty reference holds the primary source's training cells only; the card carries its AUROC
    against each other laboratory's held-out cells, better than the embedding distance the OOD reference
    gives (whose training cells include theirs), and the validated range monitors it."""
    d = _shipped()
    assert d["novelty"]["source"] == "taleqani" and d["novelty"]["k"] <= d["novelty"]["cells"]
    for src in ("pbc", "bccd"):
        assert d["novelty_auroc"][src] > max(0.85, d["ood_auroc"][src])
    assert "cell_novelty" in d["validated_range"]["ranges"]


def test_shipped_card_keeps_the_leave_one_source_out_figures():
    """The README quotes the leave-PBC-out run from the card; a re-finalize that rebuilds the card from a
    run's own must carry it over (3.2.0's dropped it until 3.5.2)."""
    loso = _shipped()["leave_one_source_out"]
    pbc = loso["pbc"]
    assert pbc["left_out"] == "pbc" and "pbc" not in pbc["trained_on"]
    assert pbc["per_source"]["pbc"]["fields"] == 3200 and 0.5 < pbc["ood_auroc"] <= 1.0
    assert "Trained without pbc" in loso["summary"]


def test_card_without_sections_gets_the_defaults():
    d = {
        k: v
        for k, v in _shipped().items()
        if k not in ("quality_gate", "sample_rule", "cell_rule", "cell_views", "ood", "novelty", "validated_range")
    }
    card = ModelCard.from_dict(d)
    assert card.quality_gate == QualityGate()
    assert (card.sample_rule, card.ood, card.novelty, card.validated_range) == (None, None, None, None)
    assert card.cell_rule == DEFAULT_CELL_RULE
    assert card.cell_views == 1  # a card from before orientations were scored: the crop as it lies


def test_card_round_trips_unchanged(tmp_path):
    d = _shipped()
    d["some_future_key"] = {"kept": [1, 2]}
    d["quality_gate"]["note"] = "documentation the device does not read"
    card = ModelCard.from_dict(d)
    card.save(tmp_path / "c.json")
    assert json.loads((tmp_path / "c.json").read_text()) == d
    assert load_card(tmp_path / "c.json").quality_gate == card.quality_gate


def test_bad_section_fails_the_load():
    d = _shipped()
    d["cell_rule"] = "majority"
    with pytest.raises(ModelLoadError, match="unknown cell_rule 'majority'"):
        ModelCard.from_dict(d)
    for bad in (3, True, "4"):
        d = _shipped()
        d["cell_views"] = bad
        with pytest.raises(ModelLoadError, match="cell_views"):
            ModelCard.from_dict(d)
    d = _shipped()
    d["sample_rule"]["statistic"] = "mode"
    with pytest.raises(ModelLoadError, match="malformed"):
        ModelCard.from_dict(d)


def test_set_section_and_replaced_sections_are_parsed_again():
    card = ModelCard.from_dict(_shipped())
    card.set_section("quality_gate", {"min_focus": 3})
    assert card.quality_gate == QualityGate(min_focus=3.0)
    card.set_section("ood", None)
    assert card.ood is None and "ood" not in card.to_dict()
    card.extra["validated_range"] = {"ranges": {"magnification": [0.3, 1.2]}}  # as the trainer and tests do
    assert card.validated_range is not None and card.validated_range.ranges == {"magnification": (0.3, 1.2)}

"""The domain monitor (edge/pipeline/domain.py): a field outside the card's validated range is sent to a person
with a plain reason, its sample needs review, and status says the microscope is outside the range."""

from __future__ import annotations

from edge.imaging.optics import Optics
from edge.pipeline.domain import ValidatedRange, fit_range, statistics
from edge.store.samples import SampleRule, judge

RANGE = ValidatedRange.from_card(
    {
        "validated_range": {
            "ranges": {
                "magnification": [0.7, 1.5],
                "glass_level": [200, 255],
                "glass_rg": [0.9, 1.1],
                "glass_bg": [0.9, 1.1],
                "cell_l": [55, 80],
                "cell_a": [10, 30],
                "cell_b": [-45, -20],
                "embedding_distance": [0, 2.0],
            },
            "sources": ["taleqani"],
        }
    }
)

RULE = SampleRule(
    statistic="quantile",
    q=0.5,
    threshold=0.5,
    review_band=(0.2, 0.8),
    min_readable=3,
    disagreement=0.3,
    field_threshold=0.5,
)


def _optics(mag=1.0, glass=(245.0, 250.0, 248.0), source="measured"):
    return Optics(
        rbc_diameter_px=21.0 * mag,
        rbc_count=20,
        magnification=mag,
        scale_source=source,
        glass_rgb=glass,
        gains=(1.0, 1.0, 1.0),
        px_per_um=2.7 * mag,
    )


def test_inside_the_range_adds_nothing():
    assert RANGE.check(_optics(), (70.0, 20.0, -33.0), [1.0, 1.2]) == []


def test_each_statistic_outside_gives_its_own_plain_reason():
    (mag,) = RANGE.check(_optics(mag=4.8), (70.0, 20.0, -33.0), [1.0])
    assert mag.startswith("magnification 4.8x the training scale") and "validated 0.7-1.5x" in mag
    (glass,) = RANGE.check(_optics(glass=(180.0, 250.0, 248.0)), (70.0, 20.0, -33.0), [1.0])
    assert "glass unlike" in glass and "red/green 0.72" in glass
    (stain,) = RANGE.check(_optics(), (70.0, 45.0, -33.0), [1.0])
    assert stain.startswith("stain unlike the validated slides") and "45.0" in stain
    (cells,) = RANGE.check(_optics(), (70.0, 20.0, -33.0), [3.0, 3.5, 1.0])
    assert "embedding distance 3.0 > 2.0" in cells
    assert len(RANGE.check(_optics(mag=3.0, glass=(150.0, 150.0, 150.0)), (90.0, 45.0, 0.0), [9.0])) == 4


def test_cards_without_a_range_are_not_checked():
    assert ValidatedRange.from_card({}) is None


def test_fit_range_holds_the_validation_fields_and_widens_a_little():
    rows = [
        statistics(1.0 + i / 100, (240.0, 250.0, 245.0 + i / 10), (70.0, 20.0, -33.0), [1.0 + i / 50])
        for i in range(50)
    ]
    r = fit_range(rows)
    vr = ValidatedRange(ranges={k: tuple(v) for k, v in r.items()})
    for i in (0, 25, 49):
        assert (
            vr.check(
                _optics(mag=1.0 + i / 100, glass=(240.0, 250.0, 245.0 + i / 10)), (70.0, 20.0, -33.0), [1.0 + i / 50]
            )
            == []
        )
    assert vr.check(_optics(mag=1.8), None, []) != []


def test_a_sample_with_fields_outside_the_range_needs_review_even_when_clearly_benign():
    statuses, scores = ["classified"] * 5, [0.01] * 5
    inside = judge(statuses, scores, RULE, [None] * 5)
    assert inside.verdict == "benign" and not inside.needs_review
    outside = judge(statuses, scores, RULE, [None, "magnification 4.8x the training scale", None, None, None])
    assert outside.verdict == "benign" and outside.needs_review
    assert outside.reasons[0].startswith("outside the validated range on 1 of 5 readable fields: magnification")


def test_carved_fields_are_shown_but_do_not_decide_the_sample():
    from edge.vocabulary import CARVED

    statuses = ["classified"] * 5
    # Three carved fields called malignant among two benign ones: counted, they would make it malignant.
    scores = [0.01, 0.02, 0.97, 0.98, 0.99]
    domains = [None, None, CARVED, "magnification 4.8x the training scale; " + CARVED, CARVED]
    got = judge(statuses, scores, RULE, domains)
    assert got.readable == 2 and got.verdict == "benign" and got.needs_review
    assert got.reasons[0].startswith("3 field(s) with a white cell carved from red cells")
    assert any(r.startswith("only 2 readable field(s), the rule needs 3") for r in got.reasons)
    assert not any(r.startswith("outside the validated range") for r in got.reasons)
    assert judge(statuses, scores, RULE, [None] * 5).verdict == "malignant"
    from edge.web.plain import sample_reasons

    assert sample_reasons(got.reasons)[0].text.startswith("3 field(s) whose white cell had to be cut out")


def test_pale_fields_are_shown_but_do_not_decide_the_sample():
    from edge.vocabulary import CARVED, PALE
    from edge.web.plain import sample_reasons

    statuses = ["classified"] * 6
    # Four washed-out fields called benign beside two malignant ones: counted, they would make it benign.
    scores = [0.97, 0.98, 0.02, 0.03, 0.01, 0.02]
    domains = [None, None, PALE, PALE, "magnification 4.8x the training scale; " + PALE, CARVED]
    got = judge(statuses, scores, RULE, domains)
    assert got.readable == 2 and got.needs_review
    assert got.reasons[1].startswith("3 field(s) with a white cell paler than on the validated slides")
    assert not any(r.startswith("outside the validated range") for r in got.reasons)
    assert judge(statuses, scores, RULE, [None] * 6).verdict == "benign"
    assert sample_reasons(got.reasons)[1].text.startswith("3 field(s) whose white cell was too pale")


def test_a_scale_that_was_not_measured_is_always_a_reason():
    (r,) = RANGE.check(_optics(source="cell"), (70.0, 20.0, -33.0), [1.0])
    assert "no red cells" in r and "white cell" in r
    (r,) = RANGE.check(_optics(source="assumed"), (70.0, 20.0, -33.0), [1.0])
    assert "px_per_um" in r
    assert RANGE.check(_optics(source="config"), (70.0, 20.0, -33.0), [1.0]) == []


def test_clipped_glass_fields_count_in_the_verdict_and_send_the_sample_to_review():
    from edge.vocabulary import CLIPPED

    statuses = ["classified"] * 4
    scores = [0.97, 0.98, 0.99, 0.02]
    got = judge(statuses, scores, RULE, [CLIPPED, CLIPPED, None, None])
    assert got.readable == 4 and got.verdict == "malignant" and got.needs_review
    assert got.reasons[0].startswith("outside the validated range on 2 of 4 readable fields: glass clipped white")
    from edge.web.plain import sample_reasons

    assert sample_reasons(got.reasons)[0].text.startswith("overexposed: the camera clips the glass white on 2 of 4")


def test_the_monitors_reasons_in_plain_words_and_a_darker_stain_warns_about_benign_answers():
    """The review page re-tells each of the monitor's reasons; cells stained darker than every validated
    slide carry a warning of their own, because the model reads a darker cell as benign."""
    from edge.vocabulary import CARVED, CLIPPED
    from edge.web.plain import domain_reasons

    vr = ValidatedRange(ranges={"cell_l": (64.1, 87.6), "magnification": (0.5, 1.6)})
    dark = "; ".join(vr.check(_optics(mag=4.0), (52.9, 20.0, -30.0), []))
    words = [r.text for r in domain_reasons(dark)]
    assert words[0] == "another magnification: 4.0× where the model was validated at 0.5–1.6×"
    assert words[1].startswith("cells stained darker than on any validated slide") and "rule out blasts" in words[1]
    assert [r.detail for r in domain_reasons(dark)] == dark.split("; ")  # the figures stay one hover away
    pale = "; ".join(vr.check(_optics(), (95.0, 20.0, -30.0), []))
    assert [r.text for r in domain_reasons(pale)] == ["cells stained paler than on any validated slide"]
    words = [r.text for r in domain_reasons(f"{CARVED}; {CLIPPED}; a reason from a newer device")]
    assert words[0].startswith("the white cell had to be cut out") and words[1].startswith("overexposed")
    assert words[2] == "a reason from a newer device"  # shown as it is, never hidden
    guessed, assumed = (
        domain_reasons("; ".join(vr.check(_optics(mag=3.5, source=src), (70.0, 20.0, -30.0), [])))[0].text
        for src in ("cell", "assumed")
    )
    assert "guessed from the white cell's size" in guessed and "guessed" not in assumed
    assert assumed.startswith("the magnification could not be measured")


def test_a_cell_like_an_immature_granulocyte_is_counted_and_sends_the_sample_to_review():
    """A finding about the patient, not the microscope: the field's score counts, the sample goes to a person
    with its own reason, and no "outside the validated range" is claimed for it."""
    from edge.vocabulary import GRANULOCYTE
    from edge.web.plain import domain_reasons, sample_reasons

    statuses = ["classified"] * 4
    scores = [0.01, 0.02, 0.01, 0.03]
    flag = f"{GRANULOCYTE} (read-out 21.3, flagged from 16.8)"
    assert judge(statuses, scores, RULE, [None] * 4).needs_review is False
    got = judge(statuses, scores, RULE, [flag, None, None, None])
    assert got.readable == 4 and got.verdict == "benign" and got.needs_review
    assert got.reasons == [
        "1 field(s) with a cell like an immature granulocyte: myeloid cells were not validated",
    ]
    assert sample_reasons(got.reasons)[0].text.startswith("1 field(s) with a cell like an immature granulocyte (")
    both = judge(statuses, scores, RULE, ["magnification 4.8x the training scale; " + flag, flag, None, None])
    assert both.reasons[0].startswith("2 field(s) with a cell like an immature granulocyte")
    assert (
        both.reasons[1]
        == "outside the validated range on 1 of 4 readable fields: magnification 4.8x the training scale"
    )
    (r,) = domain_reasons(flag)
    assert r.text.startswith("a cell looks like an immature granulocyte") and r.detail == flag

"""The quality gate: real smears pass, blurred/black/white/flat/noise frames are refused with a reason."""

from __future__ import annotations

import pytest
from daemon_support import real_images

from edge.config import QualityConfig
from edge.imaging import synthetic
from edge.imaging.decode import decode_file
from edge.imaging.preprocess import PreprocessParams, preprocess
from edge.pipeline import quality

P = PreprocessParams()
T = QualityConfig()


def _assess(rgb, t=T):
    return quality.assess(rgb, P, t, preprocess(rgb, P).stats)


def test_real_or_synthetic_smears_pass_the_default_gate():
    images = [decode_file(p).rgb for p in real_images(150)] or [synthetic.smear(s) for s in range(40)]
    refused = [r.reason for r in map(_assess, images) if not r.passed]
    assert refused == []


@pytest.mark.parametrize(
    "kind, words",
    [
        ("blurred", "out of focus: Laplacian variance"),
        ("black", "too dark"),
        ("white", "overexposed"),
        ("uniform", "out of focus"),
        ("gray-noise", "no stain"),
    ],
)
def test_bad_frames_are_refused_with_a_one_line_reason(kind, words):
    r = _assess(synthetic.bad_image(kind, seed=3))
    assert not r.passed and words in r.reason and "\n" not in r.reason


def test_thresholds_come_from_config_and_the_report_carries_the_metrics():
    rgb = synthetic.smear(1)
    ok = _assess(rgb)
    assert ok.passed and ok.reason == "" and ok.focus > 0 and 0 < ok.brightness < 255
    assert ok.cell_fraction is not None and ok.stain_contrast is not None
    strict = QualityConfig(min_focus=ok.focus + 1)
    r = _assess(rgb, strict)
    assert not r.passed and f"< {strict.min_focus:g}" in r.reason
    r = _assess(rgb, QualityConfig(min_cell_fraction=0.99))
    assert not r.passed and "no stained cells" in r.reason


def test_the_scale_bar_label_does_not_make_a_blurred_field_look_sharp():
    rgb = synthetic.bad_image("blurred", seed=1).copy()
    h, w = rgb.shape[:2]
    rgb[h - 15 : h - 5, w - 30 : w - 5] = 0  # a sharp black label in the bottom-right box
    rgb[h - 12 : h - 8, w - 28 : w - 8] = 255
    assert not _assess(rgb).passed

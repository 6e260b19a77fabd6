"""Training augmentations that stand for another laboratory (trainer/augment.py): what each one changes."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from edge.imaging import synthetic
from trainer.augment import CaptureAugment, stain_amount


def test_stain_amount_darkens_the_stained_cells_and_leaves_the_glass_white():
    field = synthetic.smear(7, 224, n_wbc=2)
    assert np.abs(stain_amount(field, 1.0).astype(int) - field).max() <= 1  # k = 1: the slide as it is
    grey = field.astype(np.float32).mean(axis=2)
    glass, stained = grey >= np.percentile(grey, 90), grey <= np.percentile(grey, 5)
    heavy = stain_amount(field, 1.6).astype(np.float32).mean(axis=2)
    light = stain_amount(field, 0.65).astype(np.float32).mean(axis=2)
    drop_stained = (grey - heavy)[stained].mean()
    assert drop_stained > 15 and drop_stained > 5 * (grey - heavy)[glass].mean()
    assert (light - grey)[stained].mean() > 10 and (light >= grey - 1).all()


@pytest.mark.parametrize("p", [0.0, 1.0])
def test_capture_augment_applies_the_stain_amount_only_when_asked(p):
    field = synthetic.smear(8, 224, n_wbc=2)
    off = dict(p_hed=0.0, p_stain=0.0, p_blur=0.0, p_exposure=0.0, p_noise=0.0, p_jpeg=0.0)
    out = CaptureAugment(p_stain_amount=p, **off)(field, np.random.default_rng(0))
    assert np.array_equal(out, field) == (p == 0.0)


def test_the_training_recipe_augments_with_the_shipped_defaults_and_exposure_max_only_widens_the_lamp():
    from trainer.train import TrainConfig

    assert TrainConfig().capture_augment() == CaptureAugment()  # the shipped recipe's augmentation, field for field
    wide = TrainConfig(exposure_max=1.6).capture_augment()
    assert wide == dataclasses.replace(CaptureAugment(), exposure=(0.7, 1.6))
    # Exposure alone, the same draws: the wider range reaches brighter fields than the recipe ever makes.
    field = np.full((32, 32, 3), 100, np.uint8)
    off = dict(p_hed=0.0, p_stain=0.0, p_blur=0.0, p_exposure=1.0, p_noise=0.0, p_jpeg=0.0)
    top = [
        max(float(dataclasses.replace(a, **off)(field, np.random.default_rng(s)).mean()) for s in range(200))
        for a in (CaptureAugment(), wide)
    ]
    assert top[0] <= 145.0 < top[1] <= 160.0


def test_per_source_colour_targets_give_a_small_laboratory_the_same_share_of_recoloured_copies():
    from trainer.cellset import colour_target_picker

    # 70 fields of one laboratory, 7 of another: every 7th field gives 10 and 1 colour targets.
    fields = [np.full((16, 16, 3), 200, np.uint8)] * 70 + [np.full((16, 16, 3), 120, np.uint8)] * 7
    sources = ["taleqani"] * 70 + ["bccd"] * 7
    for mode, share in (("fields", 1 / 11), ("per-source", 1 / 2)):
        pick = colour_target_picker(fields, sources, mode)
        rng = np.random.default_rng(0)
        dark = np.mean([pick(rng)[0] < 70 for _ in range(2000)])  # the second laboratory's L mean is lower
        assert abs(dark - share) < 0.04, (mode, dark)
    with pytest.raises(ValueError, match="per-source"):
        colour_target_picker(fields, sources, "by-class")

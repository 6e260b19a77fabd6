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


def test_per_source_slide_targets_give_a_small_laboratory_the_same_share_and_skip_slides_without_cells():
    from trainer.cellset import slide_picker

    sources = ["taleqani"] * 70 + ["bccd"] * 7 + ["pbc"] * 3
    usable = [True] * 77 + [False] * 3  # no white cell found in the third laboratory's fields
    pick = slide_picker(sources, usable)
    rng = np.random.default_rng(0)
    got = [pick(rng) for _ in range(3000)]
    assert max(got) < 77, "a slide whose white cells were not found is never lent"
    assert abs(np.mean([g >= 70 for g in got]) - 0.5) < 0.04  # 7 fields against 70, drawn as often


def test_cells_onto_another_laboratorys_slide_keep_their_pixels_and_size_and_the_device_finds_them():
    from edge.imaging.preprocess import PreprocessParams, preprocess
    from edge.imaging.segmentation import scale_bar_slice
    from trainer.augment import cells_onto_slide, white_cell_regions

    # The device's version 3: the whole field of any shape, no centre square.
    params = PreprocessParams(field_scale="optical", crop="none", stain_fit="cells", input_mode="cell")
    field, slide = synthetic.smear(3, 224, n_wbc=2), synthetic.smear(11, (200, 150), n_wbc=1)

    def regions(img):
        pre = preprocess(img, params)
        return white_cell_regions(pre.mask, [(c.y, c.x) for c in pre.cells]), pre.cells

    own, own_cells = regions(field)
    other, other_cells = regions(slide)
    assert len(own_cells) == 2 and len(other_cells) == 1
    keep_out = np.zeros(slide.shape[:2], bool)
    keep_out[scale_bar_slice(params, slide.shape)] = True
    out = cells_onto_slide(field, own, slide, other, np.random.default_rng(0), keep_out)
    assert out is not None and out.shape == slide.shape  # the other laboratory's field, its size
    moved, moved_cells = regions(out)
    # Both cells moved whole and nothing else: the slide's own white cell was painted out, and the stained
    # pixels found are the field's own, pixel for pixel (same count: same size, no resampling).
    assert len(moved_cells) == 2
    assert abs(int(moved.sum()) - int(own.sum())) <= 0.05 * own.sum()
    assert not (moved & keep_out).any()
    assert not other[moved].all(), "the cells were placed at new places, not only where the slide's cell was"
    # A field with no white cell lends nothing.
    assert cells_onto_slide(slide, np.zeros(slide.shape[:2], bool), field, own, np.random.default_rng(0)) is None

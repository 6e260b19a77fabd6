"""Optical normalisation (edge/imaging/optics.py): scale from the red cells, glass to the reference, and the
preprocessing v3 that uses them. Real fields from ../shared where present, synthetic smears otherwise."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from edge.imaging import optics
from edge.imaging.decode import decode_file
from edge.imaging.preprocess import (
    OpticsSettings,
    PreprocessParams,
    UnknownPreprocessing,
    preprocess_image,
    working_field,
)
from edge.imaging.synthetic import smear
from tests.shared_data import BCCD, HAVE_DATASET, NO_BCCD, NO_PBC, PBC, pbc_held_out, real_images

V3 = PreprocessParams(field_scale="optical", crop="none", stain_fit="cells", input_mode="cell", rbc_diameter_px=21.0)


def _resample(rgb, f):
    h, w = rgb.shape[:2]
    return cv2.resize(
        rgb, (int(round(w * f)), int(round(h * f))), interpolation=cv2.INTER_AREA if f < 1 else cv2.INTER_CUBIC
    )


def test_synthetic_red_cells_measure_their_drawn_size():
    # synthetic.smear draws red cells of radius 8-12 px at 224 (diameter ~20), their pallor inside.
    d, n = optics.measure_rbc_diameter(smear(3, 448))
    assert n >= optics.MIN_RBC_COUNT
    assert 32 <= d <= 48  # 448 px: twice the 224 size


@pytest.mark.parametrize("factor", [0.75, 2.0, 3.0])
def test_measured_scale_follows_a_rescaled_field(factor):
    fields = (
        [decode_file(p, target=448).rgb for p in real_images(2)] if HAVE_DATASET else [smear(s, 224) for s in range(4)]
    )
    ratios = []
    for f in fields:
        base = optics.measure_rbc_diameter(f)[0]
        moved = optics.measure_rbc_diameter(_resample(f, factor))[0]
        assert base is not None and moved is not None
        ratios.append(moved / base / factor)
    assert 0.8 <= float(np.median(ratios)) <= 1.2, ratios


def test_a_field_at_another_magnification_comes_back_to_the_training_scale():
    f = smear(7, 224)
    d0 = optics.measure_rbc_diameter(f)[0]
    p = PreprocessParams(field_scale="optical", crop="none", input_mode="cell", rbc_diameter_px=d0)
    out, rec = working_field(_resample(f, 3.0), p)
    assert rec is not None and rec.scale_source == "measured"
    assert 2.4 <= rec.magnification <= 3.6
    assert abs(out.shape[0] - 224) <= 0.2 * 224  # resampled back near the original size
    same, rec1 = working_field(f, p)
    assert same.shape == f.shape and 0.8 <= rec1.magnification <= 1.25


def test_glass_is_balanced_to_the_reference_whatever_the_tint():
    f = smear(2, 224)
    tinted = np.clip(f.astype(np.float32) * np.float32([0.8, 0.95, 1.1]), 0, 255).astype(np.uint8)
    ref = (240.0, 240.0, 240.0)
    out, glass, gains = optics.balance_glass(tinted, ref, 2.5)
    after = optics.glass_colour(out)
    assert np.all(np.abs(after - np.array(ref)) <= 4), after
    assert gains[0] > gains[2]  # the red channel was the dimmed one


def test_unmeasurable_field_uses_the_configured_scale_and_says_so():
    blank = np.full((300, 400, 3), 235, np.uint8)
    cv2.circle(blank, (200, 150), 30, (120, 60, 160), -1)  # one stained blob, no red cells
    _, rec = working_field(blank, V3, OpticsSettings(px_per_um=8.0))
    assert rec.rbc_diameter_px is None and rec.scale_source == "config"
    assert rec.magnification == pytest.approx(8.0 * optics.RBC_DIAMETER_UM / V3.rbc_diameter_px, rel=1e-3)
    _, rec = working_field(blank, V3)
    assert rec.scale_source == "assumed" and rec.magnification == pytest.approx(1.0)


def test_a_magnified_single_cell_image_without_red_cells_is_scaled_by_its_white_cell():
    """Another laboratory's single-cell image: a white cell filling a third of the picture, red cells only
    as slivers cut by the border. Assuming the training scale left the cell 3-4x too large (validation
    blasts cut that way were all called benign); its size now stands in, said so, and only where it says
    the field is clearly magnified (the single small blob above stays "assumed")."""
    img = np.full((300, 300, 3), 235, np.uint8)
    for cx, cy in ((0, 0), (300, 40), (20, 300)):
        cv2.circle(img, (cx, cy), 40, (225, 150, 160), -1)  # red cells, most of each outside the picture
    cv2.circle(img, (150, 150), 60, (200, 165, 225), -1)  # cytoplasm
    cv2.circle(img, (150, 150), 45, (105, 45, 150), -1)  # nucleus
    _, rec = working_field(img, V3)
    assert rec.rbc_diameter_px is None and rec.scale_source == "cell"
    # Its stained part (the 90-px nucleus; this pale cytoplasm falls with the glass) up to the 120-px whole,
    # taken as 1.6 red cells of the training's 21 px: 2.7-3.6x, where "assumed" would say 1.0.
    size = optics.CELL_IN_RBC_DIAMETERS * 21.0
    assert 90 / size * 0.95 <= rec.magnification <= 120 / size * 1.05
    # a configured scale still comes first
    _, rec = working_field(img, V3, OpticsSettings(px_per_um=8.0))
    assert rec.scale_source == "config"


@pytest.mark.skipif(not PBC.is_dir(), reason=NO_PBC)
def test_real_cells_cut_too_tight_for_their_red_cells_get_a_scale_near_the_measured_one():
    """Held-out PBC cells cut to 160 px: most lose the red cells Hough needs. The white cell's guess lands
    near what the whole image's red cells measure (a lymphocyte or neutrophil is smaller than the
    1.6 red cells a blast is taken to be, so the guess runs low, never at the training scale)."""
    ratios = []
    for path in pbc_held_out("lymphocyte", 12) + pbc_held_out("monocyte", 12):
        rgb = decode_file(path, target=448).rgb
        _, whole = working_field(rgb, V3)
        h, w = rgb.shape[:2]
        _, cut = working_field(
            np.ascontiguousarray(rgb[(h - 160) // 2 : (h + 160) // 2, (w - 160) // 2 : (w + 160) // 2]), V3
        )
        assert whole.scale_source == "measured"
        if cut.scale_source == "cell":
            ratios.append(cut.magnification / whole.magnification)
        else:
            assert cut.scale_source == "measured", cut.scale_source
    assert len(ratios) >= 6, ratios
    assert 0.6 <= min(ratios) and max(ratios) <= 1.2 and 0.7 <= float(np.median(ratios)) <= 1.05, ratios


def test_config_scale_source_overrides_the_measurement():
    f = smear(4, 224)
    _, rec = working_field(f, V3, OpticsSettings(px_per_um=4.0, scale_source="config"))
    # The configured scale decides, and the field's red cells are not measured (most of a field's cost).
    assert rec.scale_source == "config" and rec.rbc_diameter_px is None and rec.rbc_count == 0
    assert rec.magnification == pytest.approx(4.0 * optics.RBC_DIAMETER_UM / V3.rbc_diameter_px, rel=1e-3)
    _, auto = working_field(f, V3, OpticsSettings(px_per_um=4.0))
    assert auto.scale_source == "measured" and auto.rbc_diameter_px is not None


def test_optical_scale_needs_version_3_without_crop():
    with pytest.raises(UnknownPreprocessing):
        PreprocessParams(field_scale="optical", crop="center-square")
    with pytest.raises(UnknownPreprocessing):
        PreprocessParams(version="lab-kmeans-2", field_scale="optical", crop="none")


def test_whole_field_is_searched_and_cut_cells_are_not_scored():
    # A 4:3 field whose white cells sit in the outer quarters (the centre square would drop them), and one
    # cut by the left border.
    f = smear(11, (448, 224), n_wbc=0)
    for x, y in ((40, 112), (400, 112)):
        cv2.circle(f, (x, y), 20, (200, 170, 225), -1)
        cv2.circle(f, (x, y), 14, (105, 45, 150), -1)
    cv2.circle(f, (0, 60), 20, (200, 170, 225), -1)
    cv2.circle(f, (0, 60), 14, (105, 45, 150), -1)
    p = PreprocessParams(
        field_scale="optical", crop="none", input_mode="cell", rbc_diameter_px=optics.measure_rbc_diameter(f)[0] or 20.0
    )
    pre = preprocess_image(f, p)
    xs = sorted(c.x for c in pre.cells)
    h, w = pre.resized.shape[:2]
    assert any(x < w * 0.25 for x in xs) and any(x > w * 0.75 for x in xs), xs
    assert all(min(c.x, c.y, w - 1 - c.x, h - 1 - c.y) > c.radius + 1 for c in pre.cells)


@pytest.mark.skipif(not (PBC.is_dir() and BCCD.is_dir()), reason=f"{NO_PBC}; {NO_BCCD}")
def test_other_labs_red_cells_measure_at_their_stated_magnification():
    """PBC (CellaVision) red cells are ~70 px, BCCD's ~90 px, Taleqani's ~18-22 (shared/README)."""
    pbc = sorted((PBC / "neutrophil").glob("*.jpg"))[:10]
    bccd = sorted(BCCD.glob("*.jpg"))[:10]
    d_pbc = np.median([optics.measure_rbc_diameter(decode_file(p, target=448).rgb)[0] for p in pbc])
    d_bccd = np.median([optics.measure_rbc_diameter(decode_file(p, target=448).rgb)[0] for p in bccd])
    assert 55 <= d_pbc <= 90 and 70 <= d_bccd <= 115, (d_pbc, d_bccd)


def test_a_sample_s_agreed_scale_stands_in_only_for_a_field_that_cannot_be_measured():
    mem = optics.ScaleMemory(need=3, spread=1.2)  # tighter than the default, to test with round numbers
    key = ("PAT-1", 640, 480)

    def rec(mag, source="measured"):
        return optics.Optics(
            rbc_diameter_px=21.0 * mag,
            rbc_count=9,
            magnification=mag,
            scale_source=source,
            glass_rgb=(240.0, 240.0, 240.0),
            gains=(1.0, 1.0, 1.0),
            px_per_um=2.7 * mag,
        )

    for m in (4.0, 4.2):
        mem.add(key, rec(m))
        assert mem.known(key) is None
    mem.add(key, rec(3.9, source="config"))  # not a measurement: does not count
    assert mem.known(key) is None
    mem.add(key, rec(4.1))
    assert mem.known(key) == pytest.approx(4.1)
    assert mem.known(("PAT-2", 640, 480)) is None and mem.known(None) is None
    other = ("PAT-3", 640, 480)
    for m in (1.0, 2.0, 1.1):  # a sample whose fields disagree keeps being measured...
        mem.add(other, rec(m))
    assert mem.known(other) is None
    mem.add(other, rec(1.05))  # ...until its last three agree
    assert mem.known(other) is None
    mem.add(other, rec(1.08))
    assert mem.known(other) == pytest.approx(1.08)
    # A field with red cells is measured whatever its sample says (the card was validated that way)...
    f = _resample(smear(5, 224), 2.0)
    _, alone = working_field(f, V3)
    _, in_sample = working_field(f, V3, known_magnification=1.0)
    assert in_sample.scale_source == "measured" and in_sample.magnification == alone.magnification
    assert 1.6 <= in_sample.magnification <= 2.4
    # ...and one without takes the sample's scale, not the assumed training scale.
    blank = np.full((300, 400, 3), 235, np.uint8)
    cv2.circle(blank, (200, 150), 30, (120, 60, 160), -1)
    _, r = working_field(blank, V3, known_magnification=3.0)
    assert r.scale_source == "sample" and r.rbc_diameter_px is None and r.magnification == pytest.approx(3.0)
    # A configured microscope scale still comes before the sample's for an unmeasurable field.
    _, r = working_field(blank, V3, OpticsSettings(px_per_um=8.0), known_magnification=3.0)
    assert r.scale_source == "config"


def test_a_cell_cut_out_onto_black_is_put_on_glass_and_its_scale_guessed_from_the_cell():
    img = np.zeros((300, 300, 3), np.uint8)
    cv2.circle(img, (150, 150), 70, (200, 170, 225), -1)
    cv2.circle(img, (150, 150), 50, (105, 45, 150), -1)
    assert optics.black_surround(img) is not None and optics.black_surround(smear(1, 224)) is None
    out, rec = working_field(img, V3)
    assert rec.scale_source == "cell" and rec.clipped_fraction < 0.05
    # the 140-px cell is taken as 1.6 red cells: the field shrinks so that it spans ~1.6 x 21 px
    assert rec.magnification == pytest.approx(140 / (optics.CELL_IN_RBC_DIAMETERS * 21.0), rel=0.1)
    assert out[0, 0].tolist() == [round(v) for v in V3.glass_reference]
    pre = preprocess_image(img, V3)
    assert len(pre.cells) == 1

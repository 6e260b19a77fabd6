"""The model's inputs are the same bytes on every CPU: stored digests of real fields, and the arithmetic
(edge/imaging/pixels.py, resampling.py) that makes them so. scripts/pi_check.sh compares the same digests
on emulated Pis."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
from shared_data import HAVE_DATASET, real_images

from edge.imaging import pixels, resampling
from edge.imaging.decode import decode_file
from edge.imaging.preprocess import preprocess_image

ROOT = Path(__file__).resolve().parents[1]
REFERENCE = ROOT / "tests" / "data" / "model_inputs.json"


def test_model_inputs_of_real_fields_match_the_stored_digests():
    """Any drift of the preprocessing (a library upgrade, a float path, a changed constant) fails here;
    with ../shared absent the generated smears are checked instead."""
    ref = json.loads(REFERENCE.read_text())
    assert len(ref["fields"]) >= 24 and len(ref["synthetic"]) >= 4
    out = subprocess.run(
        [sys.executable, "scripts/model_inputs.py", "check"], cwd=ROOT, capture_output=True, text=True, timeout=600
    )
    assert out.returncode == 0, out.stdout + out.stderr
    n = len(ref["fields"]) + len(ref["synthetic"]) if HAVE_DATASET else len(ref["synthetic"])
    assert f"{n}/{n} fields identical" in out.stdout, out.stdout


def test_the_digest_check_fails_when_an_input_moves_by_one_grey_level(tmp_path):
    ref = json.loads(REFERENCE.read_text())
    key = next(iter(ref["synthetic"]))
    ref["synthetic"][key]["inputs"][0] = "0" * 64
    bad = tmp_path / "ref.json"
    bad.write_text(json.dumps(ref))
    out = subprocess.run(
        [sys.executable, "scripts/model_inputs.py", "check", "--ref", str(bad)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert out.returncode == 1 and f"drift: {key}" in out.stdout, out.stdout


def test_a_field_gives_the_same_inputs_run_after_run():
    """OpenCV's multithreaded Hough transform once gave 3 of 60 fields two different scales on the same
    machine; the measurement now runs on one thread."""
    fields = real_images(2) or []
    images = [decode_file(p, target=448).rgb for p in fields]
    if not images:
        from edge.imaging.synthetic import smear

        images = [smear(s, 320) for s in range(3)]
    from edge.inference.classifier import DEFAULT_MODEL, card_path_for, load_card

    params = load_card(card_path_for(DEFAULT_MODEL)).preprocessing
    for rgb in images:
        runs = {tuple(x.tobytes() for x in preprocess_image(rgb, params).model_inputs) for _ in range(4)}
        assert len(runs) == 1


# ------------------------------------------------------------------------------- the arithmetic itself


def _random_rgb(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, 3)).astype(np.uint8)


def test_lab_is_opencv_lab_to_within_its_own_approximation():
    rgb = _random_rgb(20000)
    ours = pixels.rgb_to_lab(rgb)
    cv = cv2.cvtColor(rgb.reshape(1, -1, 3).astype(np.float32) / 255.0, cv2.COLOR_RGB2LAB).reshape(-1, 3)
    # OpenCV's float LAB interpolates a table (errors up to ~0.4); ours is the formula itself.
    assert np.abs(ours - cv).max() < 0.5
    back = pixels.lab_to_rgb8(ours)
    assert np.abs(back.astype(int) - rgb).max() <= 1  # the round trip loses at most the last level


def test_lab_to_rgb8_matches_opencv_to_one_level():
    rng = np.random.default_rng(1)
    lab = np.stack([rng.uniform(0, 100, 30000), rng.uniform(-60, 60, 30000), rng.uniform(-60, 60, 30000)], 1)
    ours = pixels.lab_to_rgb8(lab)
    cv = cv2.cvtColor(lab.reshape(1, -1, 3).astype(np.float32), cv2.COLOR_LAB2RGB).reshape(-1, 3)
    cv8 = np.clip(cv * 255.0 + 0.5, 0, 255).astype(np.uint8)
    d = np.abs(ours.astype(int) - cv8)
    assert d.max() <= 1 and (d > 0).mean() < 0.001


def test_encoding_by_buckets_equals_a_binary_search_over_the_thresholds():
    thr = pixels._tables()[1]
    rng = np.random.default_rng(2)
    lin = np.concatenate([rng.uniform(-0.1, 1.1, 200000), thr, np.nextafter(thr, -1), np.nextafter(thr, 2)])
    expected = np.minimum(np.searchsorted(thr, lin, side="right"), 255)
    assert np.array_equal(pixels._encode(lin), expected)


def test_statistics_do_not_depend_on_the_order_of_the_pixels():
    lab = pixels.rgb_to_lab(_random_rgb(50000, 3))
    perm = np.random.default_rng(4).permutation(len(lab))
    m1, s1 = pixels.masked_mean_std(lab)
    m2, s2 = pixels.masked_mean_std(lab[perm])
    assert m1.tobytes() == m2.tobytes() and s1.tobytes() == s2.tobytes()
    assert np.allclose(m1, lab.mean(0), atol=1e-3) and np.allclose(s1, lab.std(0), atol=1e-3)


def test_crop_enlargement_is_opencv_bilinear_byte_for_byte():
    """72 -> 112 (the cell crops): the same bytes as cv2.resize INTER_LINEAR on x86, computed in numpy
    integers so that no CPU's SIMD tail or HAL decides them."""
    rng = np.random.default_rng(5)
    for _ in range(5):
        crop = rng.integers(0, 256, (72, 72, 3)).astype(np.uint8)
        assert np.array_equal(
            resampling.resize(crop, 112, 112), cv2.resize(crop, (112, 112), interpolation=cv2.INTER_LINEAR)
        )


def test_area_shrink_is_the_exact_average():
    img = np.random.default_rng(6).integers(0, 256, (90, 120, 3)).astype(np.uint8)
    half = resampling.resize(img, 60, 45)
    exact = img.reshape(45, 2, 60, 2, 3).astype(int).sum(axis=(1, 3))
    assert np.array_equal(half, (exact + 2) // 4)
    odd = resampling.resize(img, 47, 31)
    cv = cv2.resize(img, (47, 31), interpolation=cv2.INTER_AREA)
    assert np.abs(odd.astype(int) - cv).max() <= 1


def test_gray_and_otsu_are_opencv_s():
    rgb = np.random.default_rng(7).integers(0, 256, (64, 80, 3)).astype(np.uint8)
    assert np.array_equal(pixels.gray(rgb), cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY))
    images = [decode_file(p).rgb for p in real_images(2)] or [rgb]
    for im in images:
        g = cv2.GaussianBlur(pixels.gray(im), (0, 0), 1.0)
        assert pixels.otsu_threshold(g) == int(cv2.threshold(g, 0, 255, cv2.THRESH_OTSU)[0])


def test_tables_refuse_an_entry_on_a_rounding_boundary():
    with pytest.raises(ArithmeticError):
        pixels._grid_round(np.array([0.5 / 2**32]), 32)

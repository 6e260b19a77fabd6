"""The faster paths of issue 16 compute exactly what the plain ones did (the model's inputs may not move).

Each fast path is checked against the straightforward computation it replaced, on real fields where
../shared is present and on generated and adversarial inputs otherwise; tests/test_reproducible.py checks
the end result (the model inputs' digests) and tests/test_batched_invoke.py the batched interpreter run.
"""

import cv2
import numpy as np
import pytest

from edge.imaging import pixels, resampling, synthetic
from edge.imaging.decode import decode_file
from edge.imaging.preprocess import (
    PreprocessParams,
    _median_u8,
    decode_target,
    preprocess_image,
    working_field,
)
from edge.imaging.segmentation import kmeans_1d, kmeans_hist, whole_quantiles
from tests.shared_data import real_images

PARAMS = PreprocessParams(input_mode="cell")


def _a_samples() -> list:
    """The KMeans samples of real fields (generated ones where ../shared is absent) plus odd ones."""
    fields = [decode_file(p, target=448).rgb for p in real_images(4)] or [synthetic.smear(s) for s in range(12)]
    out = []
    for rgb in fields:
        a = cv2.GaussianBlur(cv2.cvtColor(rgb, cv2.COLOR_RGB2LAB)[:, :, 1], (5, 5), 0)
        out.append(a[::4, ::4].ravel())
    rng = np.random.default_rng(3)
    out += [rng.integers(120, 120 + w, 3136).astype(np.uint8) for w in (1, 2, 3, 5, 40)]
    out.append(np.r_[np.full(3000, 128), np.full(136, 200)].astype(np.uint8))
    return out


def _cv2_kmeans(sample: np.ndarray) -> np.ndarray:
    s = sample.astype(np.float32)
    qs = np.quantile(s, np.linspace(0.1, 0.95, 3))
    init = np.argmin(np.abs(s[:, None] - qs[None, :]), axis=1).astype(np.int32).reshape(-1, 1)
    crit = (cv2.TERM_CRITERIA_EPS + cv2.TERM_CRITERIA_MAX_ITER, 20, 0.1)
    _, _, centres = cv2.kmeans(s.reshape(-1, 1), 3, init, crit, 1, cv2.KMEANS_USE_INITIAL_LABELS)
    return np.sort(centres.ravel())


def test_kmeans_on_the_histogram_gives_opencv_s_centres_bit_for_bit():
    """Guards the re-implementation against another OpenCV: its centres are what the model was trained on."""
    histogram_runs = 0
    for sample in _a_samples():
        assert np.array_equal(kmeans_1d(sample, PARAMS), _cv2_kmeans(sample))
        s = sample.astype(np.float32)
        histogram_runs += kmeans_hist(s, np.quantile(s, np.linspace(0.1, 0.95, 3)), 3, 20, 0.1) is not None
    assert histogram_runs >= len(_a_samples()) // 2, "the fast path is hardly ever taken"


def test_quantiles_from_the_histogram_are_numpy_s_bit_for_bit():
    """KMeans starts from these quantiles; a last-bit difference could break a tie the other way."""
    rng = np.random.default_rng(5)
    samples = _a_samples() + [np.array([7], np.uint8), np.array([0, 255], np.uint8)]
    odd = ((0, 256, 4999), (90, 3, 2), (200, 56, 77))  # (lowest value, how many values, how many samples)
    samples += [rng.integers(lo, lo + w, n).astype(np.uint8) for lo, w, n in odd]
    qsets = (np.linspace(0.1, 0.95, 3), np.linspace(0.1, 0.95, 5), np.array([0.0, 0.5, 1.0]), rng.random(16))
    for sample in samples:
        for q in qsets:
            want = np.quantile(sample.astype(np.float32), q)
            got = whole_quantiles(sample, q)
            assert got.dtype == want.dtype and np.array_equal(got, want), (sample.size, q)


def test_the_median_helper_is_numpy_s_bit_for_bit():
    rng = np.random.default_rng(6)
    for n in [1, 2, 3, 4, 5, 40, 41, 1000]:
        for _ in range(20):
            v = (rng.random(n) * 40).astype(np.float32)
            assert pixels.median(v) == float(np.median(v))


def _otsu_loop(img: np.ndarray) -> int:
    """The plain loop over all levels (what pixels.otsu_threshold was)."""
    hist = np.bincount(img.ravel(), minlength=256).astype(np.int64)
    n, total = int(hist.sum()), int((hist * np.arange(256)).sum())
    best, best_num, best_den, n0, s0 = 0, -1, 1, 0, 0
    for t in range(255):
        n0 += int(hist[t])
        s0 += t * int(hist[t])
        n1 = n - n0
        if n0 == 0 or n1 == 0:
            continue
        num, den = (n * s0 - n0 * total) ** 2, n0 * n1
        if num * best_den > best_num * den:
            best, best_num, best_den = t, num, den
    return best


def test_otsu_finds_the_first_best_level_as_the_loop_did():
    rng = np.random.default_rng(11)
    images = [np.array([0, 255], np.uint8), np.full(50, 9, np.uint8), np.array([3, 3, 200, 200], np.uint8)]
    for _ in range(300):
        h = np.zeros(256, np.int64)
        for _ in range(int(rng.integers(1, 5))):
            c, w = int(rng.integers(0, 256)), int(rng.integers(0, 30))
            h[max(0, c - w) : c + w + 1] += int(rng.integers(1, 3000))
        images.append(np.repeat(np.arange(256, dtype=np.uint8), h))
    for im in images:
        assert pixels.otsu_threshold(im) == _otsu_loop(im)


def test_histogram_median_is_numpy_s():
    rng = np.random.default_rng(5)
    for n in (1, 2, 3, 10, 11, 1000, 1001):
        px = rng.integers(0, 256, (n, 3)).astype(np.uint8)
        assert np.array_equal(_median_u8(px), np.median(px, axis=0))


@pytest.mark.parametrize("shape", [(72, 72, 3), (139, 139, 3), (31, 47), (5, 9, 3)])
def test_enlarging_over_whole_rows_is_the_per_channel_arithmetic(shape):
    """resampling.resize_linear (rows of interleaved channels, bytes widened by the multiplication, no
    clip) against the same steps written per axis in int64 with OpenCV's clip: on random pixels, on white
    (the largest sums: each pass's rounded weights may add up to 2049/2048) and on a white/black grid."""
    rng = np.random.default_rng(1)
    grid = (np.indices(shape).sum(axis=0) % 2 * 255).astype(np.uint8)
    for img in (rng.integers(0, 256, shape).astype(np.uint8), np.full(shape, 255, np.uint8), grid):
        h, w = shape[:2]
        for H, W in ((2 * h + 3, int(1.5 * w) + 1), (h + 1, w), (3 * h, 3 * w + 2)):
            iy, by = resampling._cv_linear_weights(h, H, clamp_fraction=False)
            ix, ax = resampling._cv_linear_weights(w, W, clamp_fraction=True)
            src = img.astype(np.int64)
            ex = (None, slice(None), None) if img.ndim == 3 else (None, slice(None))
            ey = (slice(None), None, None) if img.ndim == 3 else (slice(None), None)
            rows = (np.take(src, ix[:, 0], axis=1) * ax[:, 0][ex] + np.take(src, ix[:, 1], axis=1) * ax[:, 1][ex]) >> 4
            acc = (np.take(rows, iy[:, 0], axis=0) * by[:, 0][ey]) >> 16
            acc += (np.take(rows, iy[:, 1], axis=0) * by[:, 1][ey]) >> 16
            want = np.clip((acc + 2) >> 2, 0, 255).astype(np.uint8)
            assert np.array_equal(resampling.resize(img, W, H), want), (H, W)


@pytest.mark.parametrize("shape", [(224, 224, 3), (480, 640, 3), (97, 61), (33, 250, 3), (40, 9, 1)])
def test_shrinking_over_whole_rows_is_the_per_axis_arithmetic(shape):
    """resampling.resize when shrinking (rows of interleaved channels, bytes widened by the multiplication)
    against the exact sums written per axis in int64 on the H x W x C image: random pixels, white (the
    largest sums) and a white/black grid; sizes that shrink both axes, one of them by a large factor, and
    one axis only (the other enlarged by the same exact weights)."""
    rng = np.random.default_rng(2)
    grid = (np.indices(shape).sum(axis=0) % 2 * 255).astype(np.uint8)
    h, w = shape[:2]
    for img in (rng.integers(0, 256, shape).astype(np.uint8), np.full(shape, 255, np.uint8), grid):
        for H, W in ((h * 6 // 7, w * 6 // 7), (max(1, h // 5) + 1, max(1, w // 3)), (h - 1, w + 5), (h + 4, w // 2)):
            iy, wy, dy = resampling._cached_weights(h, H)
            ix, wx, dx = resampling._cached_weights(w, W)
            src = img.astype(np.int64)
            ex = (None, slice(None), None) if img.ndim == 3 else (None, slice(None))
            ey = (slice(None), None, None) if img.ndim == 3 else (slice(None), None)
            rows = sum(np.take(src, ix[:, t], axis=1) * wx[:, t][ex] for t in range(ix.shape[1]))
            acc = sum(np.take(rows, iy[:, t], axis=0) * wy[:, t][ey] for t in range(iy.shape[1]))
            want = ((acc + dy * dx // 2) // (dy * dx)).astype(np.uint8)
            assert np.array_equal(resampling.resize(img, W, H), want), (H, W)


def _one_conversion_per_crop(
    rgb: np.ndarray,
    mask: np.ndarray,
    cells,
    window: int,
    out_size: int,
    fill,
    stain,
) -> list:
    """What the device did before :func:`edge.imaging.stain.normalised_cells` and ``crops_of``: for each cell
    a ``window``-square crop around its centre, only its cell pixels stain-normalised (each crop converted
    alone), the rest ``fill``, resized to ``out_size``. Kept here as the reference the fast path must match."""
    half = window // 2
    pad = half + 1
    fill_px = np.asarray(fill, np.uint8)
    padded = cv2.copyMakeBorder(rgb, pad, pad, pad, pad, cv2.BORDER_CONSTANT, value=0)
    msk = cv2.copyMakeBorder(mask.astype(np.uint8), pad, pad, pad, pad, cv2.BORDER_CONSTANT, value=0)
    crops = []
    for c in cells:
        y0, x0 = c.y + pad - half, c.x + pad - half
        on = msk[y0 : y0 + window, x0 : x0 + window] != 0
        crop = np.empty((window, window, 3), np.uint8)
        crop[:] = fill_px
        # Only the cell's pixels are converted: the rest is the fill, and the conversion is the costly part.
        crop[on] = stain.apply(padded[y0 : y0 + window, x0 : x0 + window][on])
        if window != out_size:
            crop = resampling.resize(crop, out_size, out_size)
        crops.append(np.ascontiguousarray(crop))
    return crops


def test_the_field_in_one_pass_gives_the_crops_of_one_conversion_per_crop():
    """normalised_cells + crops_of against StainTransform.fit + the per-crop conversion above."""
    from edge.imaging.preprocess import preprocess, remove_scale_bar
    from edge.imaging.segmentation import scale_bar_slice
    from edge.imaging.stain import StainTransform
    from edge.inference.classifier import DEFAULT_MODEL, card_path_for, load_card

    p = load_card(card_path_for(DEFAULT_MODEL)).preprocessing  # the shipped card (stain fitted on the cells)
    fields = [decode_file(f, target=decode_target(p)) for f in real_images(2)]
    rgbs = [working_field(d.rgb, p, decode_factor=d.scale)[0] for d in fields] or [synthetic.smear(s) for s in range(4)]
    for rgb in rgbs:
        pre = preprocess(rgb, p)
        if not pre.cells:
            continue
        resized = remove_scale_bar(rgb, p)
        valid = np.ones(pre.mask.shape, bool)
        valid[scale_bar_slice(p, pre.mask.shape)] = False
        chroma = p.stain_fit == "cells-chroma"
        stain = StainTransform.fit(resized, pre.mask & valid, p.stain_reference, p.stain_max_gain, chroma)
        want = _one_conversion_per_crop(resized, pre.mask, pre.cells, p.cell_window, p.cell_input, p.background, stain)
        assert len(want) == len(pre.model_inputs)
        assert all(np.array_equal(a, b) for a, b in zip(want, pre.model_inputs))
        assert pre.cell_lab == tuple(round(float(v), 2) for v in stain.source)


def test_preprocess_image_is_unchanged_by_the_warm_lab_tables():
    from edge.imaging.segmentation import start_lab_tables

    rgb = synthetic.smear(2)
    before = preprocess_image(rgb, PARAMS).model_inputs
    start_lab_tables()
    after = preprocess_image(rgb, PARAMS).model_inputs
    assert len(before) == len(after) and all(np.array_equal(a, b) for a, b in zip(before, after))


def test_a_process_that_ends_while_the_lab_tables_build_exits_with_its_own_code():
    # The build runs on a thread started when `classify` is imported; a process that ended before it
    # finished (a bad config: exit 2) was aborted inside OpenCV instead (exit 134, "exception not rethrown").
    import subprocess
    import sys

    for code in (0, 2, 0, 2, 0, 2):
        done = subprocess.run(
            [sys.executable, "-c", f"import sys, edge.pipeline.classify; sys.exit({code})"],
            capture_output=True,
            text=True,
        )
        assert done.returncode == code, done.stderr[-300:]

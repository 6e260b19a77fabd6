"""Resizing that gives the same bytes on every CPU (why: :mod:`edge.imaging.pixels`).

:func:`resize`: area average when shrinking, bilinear (OpenCV's half-pixel centres) when enlarging, as
``cv2.resize`` does, with exact rational weights in integer arithmetic; :func:`resize_linear` is the
enlarging half, OpenCV's own fixed-point bilinear steps in numpy integers.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Tuple

import numpy as np


def _axis_weights(n: int, m: int) -> Tuple[np.ndarray, np.ndarray, int]:
    """Source indices (m x k), integer weights (m x k) and their common denominator for resampling one
    axis from n to m pixels: area overlap when shrinking, OpenCV's bilinear when enlarging."""
    if m == n:
        return np.arange(m)[:, None], np.ones((m, 1), np.int64), 1
    if m < n:
        # Output i covers [i*n, (i+1)*n) and source j covers [j*m, (j+1)*m), in 1/m-th source pixels.
        k = -(-n // m) + 1
        idx = np.zeros((m, k), np.int64)
        wts = np.zeros((m, k), np.int64)
        for i in range(m):
            lo, hi = i * n, (i + 1) * n
            j0 = lo // m
            for t in range(k):
                j = j0 + t
                if j >= n:
                    break
                ov = min(hi, (j + 1) * m) - max(lo, j * m)
                if ov > 0:
                    idx[i, t], wts[i, t] = j, ov
        return idx, wts, n
    # Bilinear: source x = ((2i+1) n - m) / (2m), clamped at the borders.
    den = 2 * m
    idx = np.zeros((m, 2), np.int64)
    wts = np.zeros((m, 2), np.int64)
    for i in range(m):
        num = (2 * i + 1) * n - m
        x0 = num // den
        frac = num - x0 * den
        if x0 < 0:
            idx[i] = (0, 0)
            wts[i] = (den, 0)
        elif x0 >= n - 1:
            idx[i] = (n - 1, n - 1)
            wts[i] = (den, 0)
        else:
            idx[i] = (x0, x0 + 1)
            wts[i] = (den - frac, frac)
    return idx, wts, den


@lru_cache(maxsize=64)
def _cached_weights(n: int, m: int):
    return _axis_weights(n, m)


def _cv_linear_weights(n: int, m: int, clamp_fraction: bool) -> Tuple[np.ndarray, np.ndarray]:
    """OpenCV's INTER_LINEAR taps for enlarging n -> m: two source indices and two weights in 1/2048ths,
    each rounded on its own as OpenCV does (from the exact rational position, so no float decides them).
    Along x OpenCV moves a position beyond the border onto it (weight 1, 0); along y it keeps the fraction
    and repeats the border row (``clamp_fraction`` False)."""
    den = 2 * m
    num = (2 * np.arange(m, dtype=np.int64) + 1) * n - m
    x0 = num // den
    frac = num - x0 * den
    if clamp_fraction:
        out = (x0 < 0) | (x0 >= n - 1)
        frac = np.where(out, 0, frac)
        x0 = np.clip(x0, 0, n - 1)
    idx = np.stack([np.clip(x0, 0, n - 1), np.clip(x0 + 1, 0, n - 1)], axis=1)
    w = np.stack([((den - frac) * 4096 + den) // (2 * den), (frac * 4096 + den) // (2 * den)], axis=1)
    return idx, w


def resize_linear(img: np.ndarray, width: int, height: int) -> np.ndarray:
    """Enlarge a uint8 image with OpenCV's fixed-point bilinear arithmetic (what ``cv2.resize(...,
    INTER_LINEAR)`` computes in its SIMD loops on x86 and NEON alike), in numpy integers: the same bytes
    on every CPU, where OpenCV itself rounds its row tails and ARM HAL paths differently."""
    h, w = img.shape[:2]
    out = _linear(np.ascontiguousarray(img).reshape(1, h, w, -1), width, height)
    return out.reshape((height, width) + img.shape[2:])


@lru_cache(maxsize=64)
def _columns(n: int, m: int, c: int) -> Tuple[Tuple[np.ndarray, np.ndarray], ...]:
    """Per tap: the source columns and weights (int32) for rows of ``n`` pixels of ``c`` interleaved
    channels enlarged to ``m`` pixels (OpenCV's bilinear taps in 1/2048ths, clamped at the borders as its
    x pass does). Laid out as whole rows, every numpy operation below runs over a row at a time instead of
    3-value channel runs."""
    return _row_taps(*_cv_linear_weights(n, m, clamp_fraction=True), c)


def _row_taps(idx: np.ndarray, wts: np.ndarray, c: int) -> Tuple[Tuple[np.ndarray, np.ndarray], ...]:
    """One axis's taps (source indices and weights, one row per output pixel) laid out over rows of ``c``
    interleaved channels: per tap, the source columns and the int32 weights, one per output value."""
    ch = np.arange(c)
    return tuple(
        ((idx[:, t, None] * c + ch).ravel().astype(np.intp), np.repeat(wts[:, t], c).astype(np.int32))
        for t in range(idx.shape[1])
    )


@lru_cache(maxsize=64)
def _rows(n: int, m: int) -> Tuple[Tuple[np.ndarray, np.ndarray], ...]:
    """Per tap: the source rows (the platform's index type: np.take wants it on 32-bit ARM) and weights
    (int32, one per output row) for enlarging ``n`` rows to ``m`` (OpenCV's y pass: no clamping)."""
    idx, wts = _cv_linear_weights(n, m, clamp_fraction=False)
    return tuple((idx[:, t].astype(np.intp), wts[:, t].astype(np.int32)[:, None]) for t in range(idx.shape[1]))


def _x_pass(src: np.ndarray, taps: Tuple[Tuple[np.ndarray, np.ndarray], ...], dtype=np.int32) -> np.ndarray:
    """Rows of interleaved channels (``src``: rows x n*c, uint8) -> the exact integer weighted sums of
    ``taps`` (:func:`_row_taps`; no rounding), in ``dtype``. The taps are gathered as bytes and widened by
    the multiplication itself (a quarter of the memory traffic of widening first)."""
    cols, wts = taps[0]
    out = np.multiply(src[:, cols], wts, dtype=dtype)
    for cols, wts in taps[1:]:
        out += np.multiply(src[:, cols], wts, dtype=dtype)
    return out


def _linear(imgs: np.ndarray, width: int, height: int) -> np.ndarray:
    """:func:`resize_linear` of each of n images (n x H x W x C): OpenCV's fixed-point steps, in order.
    (One image at a time is faster: its int32 rows stay in the cache.)"""
    n, h, w, c = imgs.shape
    (iy0, by0), (iy1, by1) = _rows(h, height)
    # int32 is enough: a row value is at most 255 * 2049 (two taps, each rounded on its own), a product
    # (255 * 2049 >> 4) * 2049.
    rows = _x_pass(imgs.reshape(n * h, w * c), _columns(w, width, c))
    rows >>= 4
    rows = rows.reshape(n, h, width * c)
    acc = np.take(rows, iy0, axis=1)
    acc *= by0
    acc >>= 16  # int16 "multiply high" (OpenCV's SIMD)
    tmp = np.take(rows, iy1, axis=1)
    tmp *= by1
    tmp >>= 16
    acc += tmp
    acc += 2
    acc >>= 2
    # No clip needed: each pass's two weights sum to at most 2049 (of 2048), so a row value is at most
    # 255 * 2049 >> 4 = 32655, the two y terms together at most 32655 * 2049 >> 16 = 1020, and
    # (1020 + 2) >> 2 = 255 (tests/test_fast_paths.py checks white against the clipping arithmetic);
    # nothing is negative.
    return acc.astype(np.uint8).reshape(n, height, width, c)


def resize(img: np.ndarray, width: int, height: int) -> np.ndarray:
    """uint8 image (H x W or H x W x C) -> ``height`` x ``width``: :func:`resize_linear` when enlarging,
    exact area averages (rounded to nearest, halves up) when shrinking, as ``cv2.resize`` with INTER_AREA."""
    h, w = img.shape[:2]
    if (h, w) == (height, width):
        return img.copy()
    if height >= h and width >= w:
        return resize_linear(img, width, height)
    iy, wy, dy = _cached_weights(h, height)
    c = img.shape[2] if img.ndim == 3 else 1
    taps, dx = _area_columns(w, width, c)
    den = dy * dx
    # Exact sums: int32 while the largest (255 * den) fits, else int64. Nothing is rounded before the
    # end, so the order of the two passes does not matter.
    it = np.int32 if 255 * den < 2**31 else np.int64
    # Along x over whole rows of interleaved channels: a third of the time of widening the image first.
    tmp = _x_pass(np.ascontiguousarray(img).reshape(h, w * c), taps, it)
    iy = iy.astype(np.intp)  # np.take wants the platform's index type (32-bit ARM)
    acc = np.take(tmp, iy[:, 0], axis=0)
    acc *= wy[:, 0].astype(it)[:, None]
    for t in range(1, iy.shape[1]):  # along y: (height, width * c)
        part = np.take(tmp, iy[:, t], axis=0)
        part *= wy[:, t].astype(it)[:, None]
        acc += part
    acc += den // 2
    acc //= den
    return acc.astype(np.uint8).reshape((height, width) + img.shape[2:])


@lru_cache(maxsize=64)
def _area_columns(n: int, m: int, c: int) -> Tuple[Tuple[Tuple[np.ndarray, np.ndarray], ...], int]:
    """Per tap of :func:`_axis_weights` (n -> m): the source columns of rows of ``c`` interleaved channels
    and their weights (int32: at most 2 * max(n, m)), one per output value; and the weights' common
    denominator."""
    idx, wts, den = _cached_weights(n, m)
    return _row_taps(idx, wts, c), den

"""Pixel arithmetic that gives the same bytes on every CPU (x86-64, aarch64, armv7l).

A clinic's devices must give one field one answer. OpenCV's float colour conversions and resizers take
different SIMD paths on each CPU (SSE/AVX, NEON, ARM's Carotene HAL) and the compiler may fuse a*b+c into
one rounding (FMA) on one and not another, so float LAB and ``cv2.resize`` moved the model's 112-pixel
cell inputs by up to 2 grey levels between x86 and an emulated Pi. Everything here is built from
operations IEEE 754 defines to the last bit on every CPU (one numpy ufunc each: +, -, *, /, sqrt, so
nothing can be fused), integer arithmetic, and tables whose entries are rounded onto a coarse grid that
no libm's last-bit difference can move (``_grid_round`` checks the margin when the table is built).

- :func:`rgb_to_lab` / :func:`lab_to_rgb8`: CIE L*a*b* (D65, sRGB gamma; OpenCV's constants and scale:
  L 0..100) of uint8 RGB pixels and back to uint8 RGB;
- :func:`masked_mean_std`: per-channel mean and spread, summed exactly on a 1/4096 grid.

Resizing, by the same rules, is :mod:`edge.imaging.resampling`.
"""

from __future__ import annotations

import math
from functools import cache
from typing import Sequence, Tuple

import numpy as np

# OpenCV's sRGB -> XYZ (D65) matrix and white point (imgproc/src/color_lab.cpp), so the numbers stay
# those the model was trained on.
_RGB2XYZ = ((0.412453, 0.357580, 0.180423), (0.212671, 0.715160, 0.072169), (0.019334, 0.119193, 0.950227))
_WHITE = (0.950456, 1.0, 1.088754)
_T = 0.008856  # CIE's linear/cube-root switch
_K = 903.3
_SLOPE = 7.787
_F0 = 16.0 / 116.0
STATS_GRID = 4096  # LAB values are summed as integers in 1/4096ths: exact, in any order


def _grid_round(values: np.ndarray, bits: int) -> np.ndarray:
    """``values`` (all <= ~1.2) rounded to multiples of 2**-bits. A libm may return the last bit of pow()
    or cbrt() differently, which moves a value by a few 1e-16; that changes the rounding only if the value
    lies that close to a rounding boundary, so the margin is checked: >= 2e-5 grid steps, i.e. > 20 units
    in the last place at 2**-32."""
    scaled = np.asarray(values, np.float64) * float(2**bits)
    frac = np.abs(scaled - np.floor(scaled) - 0.5)
    if float(frac.min()) < 2e-5:
        raise ArithmeticError("table entry too close to a rounding boundary for a CPU-independent table")
    return np.floor(scaled + 0.5) / float(2**bits)


@cache
def _tables() -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(uint8 -> linear light, 255 thresholds linear -> uint8 sRGB, cube-root seeds)."""
    c = np.arange(256, dtype=np.float64) / 255.0
    lin = np.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4)
    lin = _grid_round(lin, 32)
    # Output byte k = round(255 * gamma(v)) is the number of thresholds at or below v: a threshold is the
    # linear value whose sRGB value is exactly (k - 0.5) / 255.
    mid = (np.arange(1, 256, dtype=np.float64) - 0.5) / 255.0
    thr = np.where(mid <= 0.04045, mid / 12.92, ((mid + 0.055) / 1.055) ** 2.4)
    thr = _grid_round(thr, 32)
    # Cube-root seeds on 1/256 steps of t (bucket centres): Newton's method refines them exactly.
    centres = (np.arange(300, dtype=np.float64) + 0.5) / 256.0
    seeds = _grid_round(np.cbrt(centres), 20)
    return lin, thr, seeds


def _cbrt(t: np.ndarray) -> np.ndarray:
    """Cube root of t in [0, ~1.2] from a table seed and three Newton steps (each step one ufunc per
    operation, so no CPU can fuse them): seed error < 2 % -> < 1e-15 relative. In place, operation by
    operation: y = (2.0 * y + t / (y * y)) / 3.0, the same roundings as the expression."""
    _, _, seeds = _tables()
    idx = (t * 256.0).astype(np.int64)
    np.clip(idx, 0, len(seeds) - 1, out=idx)
    y = seeds[idx]
    q = np.empty_like(y)
    for _ in range(4):
        np.multiply(y, y, out=q)
        np.divide(t, q, out=q)
        y *= 2.0
        y += q
        y /= 3.0
    return y


def _f(t: np.ndarray) -> np.ndarray:
    """CIE's f(t): the cube root above _T, the linear segment below (each pixel by its own value)."""
    lin = t * _SLOPE
    lin += _F0
    return np.where(t > _T, _cbrt(t), lin)


@cache
def _xyz_rows() -> Tuple[Tuple[float, float, float], ...]:
    return tuple((row[0] / w, row[1] / w, row[2] / w) for row, w in zip(_RGB2XYZ, _WHITE))


def rgb_to_lab(rgb: np.ndarray) -> np.ndarray:
    """uint8 RGB (..., 3) -> float64 L*a*b* (..., 3), L in 0..100 (OpenCV's float scale)."""
    lin_tab = _tables()[0]
    rgb = np.asarray(rgb)
    shape = rgb.shape[:-1]
    flat = rgb.reshape(-1, 3)
    r, g, b = (lin_tab[flat[:, i]] for i in range(3))
    # X, Y, Z as rows of one array, so f() below is one pass over all three: ((r*c0 + g*c1) + b*c2).
    xyz = np.empty((3, flat.shape[0]))
    tmp = np.empty(flat.shape[0])
    for i, (c0, c1, c2) in enumerate(_xyz_rows()):
        v = xyz[i]
        np.multiply(r, c0, out=v)
        np.multiply(g, c1, out=tmp)
        v += tmp
        np.multiply(b, c2, out=tmp)
        v += tmp
    f = _f(xyz)
    y, fx, fy, fz = xyz[1], f[0], f[1], f[2]
    out = np.empty((flat.shape[0], 3))
    L = fy * 116.0
    L -= 16.0
    out[:, 0] = np.where(y > _T, L, y * _K)
    np.subtract(fx, fy, out=tmp)
    tmp *= 500.0
    out[:, 1] = tmp
    np.subtract(fy, fz, out=tmp)
    tmp *= 200.0
    out[:, 2] = tmp
    return out.reshape(*shape, 3)


_FTHRESH = _SLOPE * _T + _F0  # OpenCV's switch back (arithmetic, not a pow(), so no libm decides it)
# OpenCV's XYZ -> sRGB (D65) matrix; times the white point per column (products: exact on every CPU).
_XYZ2RGB = ((3.240479, -1.53715, -0.498535), (-0.969256, 1.875991, 0.041556), (0.055648, -0.204043, 1.057311))


def _finv(f: np.ndarray) -> np.ndarray:
    cube = f * f
    cube *= f
    big = f > _FTHRESH
    if big.all():  # the usual case: np.where would pick every cube
        return cube
    return np.where(big, cube, (f - _F0) / _SLOPE)


def lab_to_rgb8(lab: np.ndarray) -> np.ndarray:
    """float L*a*b* (..., 3) -> uint8 RGB, out-of-gamut colours clipped (as OpenCV does)."""
    lab = np.asarray(lab, np.float64)
    L, a, b = lab[..., 0], lab[..., 1], lab[..., 2]
    lthr = _T * _K
    low = L <= lthr
    if low.any():
        y = np.where(low, L / _K, 0.0)
        fy = np.where(low, y * _SLOPE + _F0, (L + 16.0) / 116.0)
        y = np.where(low, y, (fy * fy) * fy)
    else:  # no pixel that dark: every np.where above picks its second branch
        fy = L + 16.0
        fy /= 116.0
        y = fy * fy
        y *= fy
    x = _finv(fy + a / 500.0)
    z = _finv(fy - b / 200.0)
    out = np.empty(lab.shape, np.uint8)
    lin = np.empty(L.shape)
    tmp = np.empty(L.shape)
    for i, row in enumerate(_XYZ2RGB):
        np.multiply(x, row[0] * _WHITE[0], out=lin)
        np.multiply(y, row[1] * _WHITE[1], out=tmp)
        lin += tmp
        np.multiply(z, row[2] * _WHITE[2], out=tmp)
        lin += tmp
        out[..., i] = _encode(lin)
    return out


@cache
def _buckets() -> Tuple[np.ndarray, np.ndarray, int]:
    """For 1/4096 buckets of linear light: how many thresholds lie below the bucket (a start), the
    thresholds with +inf appended, and the most any bucket holds (the steps left to take)."""
    thr = _tables()[1]
    edges = np.arange(4097, dtype=np.float64) / 4096.0
    start = np.searchsorted(thr, edges[:-1], side="right")
    most = int((np.searchsorted(thr, edges[1:], side="right") - start).max())
    return start.astype(np.int64), np.append(thr, np.inf), most


def _encode(lin: np.ndarray) -> np.ndarray:
    """Linear light -> sRGB byte: the number of thresholds at or below ``lin`` (exact comparisons, so the
    same on every CPU), found from its bucket's start in a few steps instead of a binary search."""
    start, thr, most = _buckets()
    b = np.clip((lin * 4096.0).astype(np.int64), 0, 4095)
    k = start[b]
    for _ in range(most):
        k += lin >= thr[k]
    return np.minimum(k, 255).astype(np.uint8)


def masked_mean_std(values: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """Per-channel mean and population spread of ``values`` (N x C float) as float64: the values are put
    on a 1/4096 grid and summed as integers (exact, whatever order a CPU's SIMD adds them in)."""
    q = np.rint(np.asarray(values, np.float64) * STATS_GRID).astype(np.int64)
    n = q.shape[0]
    if n == 0:
        return np.zeros(q.shape[1]), np.zeros(q.shape[1])
    means, stds = [], []
    for c in range(q.shape[1]):
        s1 = int(q[:, c].sum())
        s2 = int((q[:, c] * q[:, c]).sum())
        means.append(s1 / (n * STATS_GRID))
        var = (n * s2 - s1 * s1) / (n * n)  # exact integers until this one division
        stds.append(math.sqrt(max(var, 0.0)) / STATS_GRID)
    return np.array(means), np.array(stds)


def gray(rgb: np.ndarray) -> np.ndarray:
    """uint8 RGB -> uint8 grey with OpenCV's fixed-point coefficients (0.299, 0.587, 0.114 in 1/32768):
    the same bytes as ``cv2.cvtColor(RGB2GRAY)`` on x86, without depending on a CPU's HAL."""
    flat = np.ascontiguousarray(rgb).reshape(-1, 3)
    v = flat[:, 0].astype(np.int32)
    v *= 9798
    t = flat[:, 1].astype(np.int32)
    t *= 19235
    v += t
    np.multiply(flat[:, 2], 3735, out=t, dtype=np.int32)
    v += t
    v += 16384
    v >>= 15
    return v.astype(np.uint8).reshape(rgb.shape[:-1])


def otsu_threshold(img: np.ndarray) -> int:
    """Otsu's threshold of a uint8 image, the between-class variance compared in exact integers (OpenCV's
    float version can pick a different level of two near-equal ones on another CPU); pixels <= the
    threshold are the dark class, as with ``cv2.THRESH_BINARY``.

    The first level of greatest ``(n * s0 - n0 * total)**2 / (n0 * n1)`` (below, ``s0``/``n0``: sum and
    count of the levels up to t): found in float64 for all levels at once, then decided in exact
    integers among the levels that float64 cannot tell from the greatest."""
    hist = np.bincount(img.ravel(), minlength=256).astype(np.int64)
    n = int(hist.sum())
    total = int((hist * np.arange(256)).sum())
    n0 = np.cumsum(hist)[:255]
    s0 = np.cumsum(hist * np.arange(256))[:255]
    n1 = n - n0
    ok = (n0 > 0) & (n1 > 0)
    if not ok.any():
        return 0
    diff = (n * s0 - n0 * total).astype(np.float64)  # exact int64: |n * s0| <= n * n * 255
    den = np.where(ok, n0 * n1, 1).astype(np.float64)
    val = np.where(ok, diff * diff / den, -1.0)
    near = np.flatnonzero(ok & (val >= val.max() * (1.0 - 1e-9)))
    best, best_num, best_den = 0, -1, 1
    for t in near.tolist():
        num = (n * int(s0[t]) - int(n0[t]) * total) ** 2
        den_t = int(n0[t]) * int(n1[t])
        if num * best_den > best_num * den_t:
            best, best_num, best_den = t, num, den_t
    return best


def filled(shape: Tuple[int, ...], fill: Sequence[int]) -> np.ndarray:
    """A uint8 image of ``shape`` (... x 3) filled with the colour ``fill`` (a memset when it is a grey)."""
    if len(set(fill)) == 1:
        return np.full(shape, fill[0], np.uint8)
    out = np.empty(shape, np.uint8)
    for i, v in enumerate(fill):
        out[..., i] = v
    return out


def median(values: np.ndarray) -> float:
    """``float(np.median(values))`` of a 1-D array, the same bits: the middle value, or numpy's mean of
    the two middle ones. Not np.median itself: its NaN check imports numpy.ma (~10 ms of a one-image
    ``classify``) for an array that never holds a NaN."""
    v = np.sort(np.asarray(values).ravel())
    n = v.size
    if n == 0:
        raise ValueError("median of an empty array")
    k = n // 2
    return float(v[k]) if n % 2 else float(np.mean(v[k - 1 : k + 1]))

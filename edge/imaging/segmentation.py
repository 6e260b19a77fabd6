"""Segmentation: the stained (white) cells of a field, by KMeans on the LAB A channel.

The A channel (green-magenta) separates the Wright-Giemsa-stained nuclei from red cells and glass on any
of the microscopes seen so far; a 1-D KMeans on it gives the stain clusters, and the pixels nearer the
most magenta centre than the next are the mask. Everything here is byte-reproducible (OpenCV's integer
paths and exact arithmetic), because the trainer and every device must cut the same cells.
"""

from __future__ import annotations

import dataclasses
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING, Optional, Tuple

import cv2
import numpy as np

if TYPE_CHECKING:
    from edge.imaging.preprocess import PreprocessParams


@dataclass
class SegmentationStats:
    cell_fraction: float  # share of pixels in the stained-cell mask
    n_components: int  # connected cell regions after cleaning
    centers: list  # KMeans cluster centres in the A channel, ascending
    stain_contrast: float  # top centre minus lowest centre

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def scale_bar_slice(params: PreprocessParams, shape: Optional[Tuple[int, ...]] = None) -> Tuple[slice, slice]:
    """The label box of a field of ``shape`` (default: the fixed ``size`` square)."""
    fx, fy = params.scale_bar_box
    h, w = (shape[0], shape[1]) if shape is not None else (params.size, params.size)
    return slice(h - int(round(fy * h)), h), slice(w - int(round(fx * w)), w)


def kmeans_1d(sample: np.ndarray, params: PreprocessParams) -> np.ndarray:
    """Deterministic KMeans on the A channel: initial labels from quantiles, fitted on a sample (uint8)."""
    k = params.kmeans_k
    qs = whole_quantiles(sample, np.linspace(0.1, 0.95, k))
    sample = sample.astype(np.float32)
    if params.kmeans_iters >= 1:
        centers = kmeans_hist(sample, qs, k, params.kmeans_iters, 0.1)
        if centers is not None:
            return np.sort(centers)
    init = np.argmin(np.abs(sample[:, None] - qs[None, :]), axis=1).astype(np.int32).reshape(-1, 1)
    crit = (cv2.TERM_CRITERIA_EPS + cv2.TERM_CRITERIA_MAX_ITER, params.kmeans_iters, 0.1)
    _, _, centers = cv2.kmeans(
        sample.reshape(-1, 1).astype(np.float32), k, init, crit, 1, cv2.KMEANS_USE_INITIAL_LABELS
    )
    return np.sort(centers.ravel())


def whole_quantiles(sample: np.ndarray, q: np.ndarray) -> np.ndarray:
    """``np.quantile(sample.astype(np.float32), q)`` (its default "linear" method) of uint8 values, the
    same float64 bits, from their 256-bin histogram. Not np.quantile itself: it calls np.unique, whose
    masked-array check imports numpy.ma (~10 ms of a one-image ``classify``); other inputs go to it.

    numpy's arithmetic: the virtual index ``(n - 1) * q``, its floor and fractional part ``t``, the two
    order statistics ``a`` and ``b`` (the last one past the end), then ``a + (b - a) * t``, or
    ``b - (b - a) * (1 - t)`` where ``t >= 0.5`` (exact for whole numbers below 2**24 until the products)."""
    q = np.asarray(q, np.float64)
    if sample.dtype != np.uint8 or sample.size == 0:
        return np.quantile(sample.astype(np.float32), q)
    n = sample.size
    cum = np.cumsum(np.bincount(sample.ravel(), minlength=256))
    vi = (n - 1) * q
    lo = np.floor(vi)
    t = vi - lo
    i = np.where(vi >= n - 1, n - 1, lo).astype(np.intp)
    j = np.where(vi >= n - 1, n - 1, lo + 1).astype(np.intp)
    a = np.searchsorted(cum, i, side="right").astype(np.float64)  # the i-th smallest value
    b = np.searchsorted(cum, j, side="right").astype(np.float64)
    diff = b - a
    return np.where(t >= 0.5, b - diff * (1 - t), a + diff * t)


def kmeans_hist(sample: np.ndarray, qs: np.ndarray, k: int, max_iter: int, eps: float) -> Optional[np.ndarray]:
    """``cv2.kmeans`` (1 attempt, initial labels, "eps + max iter") on whole-number samples 0..255, run on
    their 256-bin histogram: the same centres, bit for bit, in a fraction of the time.

    OpenCV's arithmetic, step by step: a centre is the float32 sum of its samples (whole numbers below
    2**24, so exact in any order) times float32 ``1/count``; a sample goes to the first centre of least
    float32 ``(x - c)**2``, which depends only on its value, so every sample of one value goes together;
    it stops after ``max_iter`` centre updates or when no centre moved more than ``eps`` (squared, in
    double). None where OpenCV would repair an empty cluster (it moves one sample, by position): the
    caller then runs ``cv2.kmeans`` itself."""
    hist = np.bincount(sample.astype(np.uint8), minlength=256)
    if hist.sum() != sample.size or not np.array_equal(sample, np.rint(sample)):
        return None
    present = np.flatnonzero(hist)  # only the values that occur: a few dozen
    values = present.astype(np.float32)
    count = hist[present].astype(np.float64)
    weighted = count * present  # whole numbers: every sum below is exact in float64
    labels = np.argmin(np.abs(values[:, None] - qs[None, :]), axis=1)
    eps2 = max(eps, 0.0) ** 2
    iters = min(max(max_iter, 2), 100)
    ks = np.arange(k)
    old: Optional[np.ndarray] = None
    it = 0
    while True:
        onehot = labels[:, None] == ks[None, :]
        counts = count @ onehot
        if not counts.all():
            return None
        centers = (weighted @ onehot).astype(np.float32) * (np.float32(1.0) / counts.astype(np.float32))
        it += 1
        if old is not None:
            d = (centers - old).astype(np.float64)
            if float((d * d).max()) <= eps2:
                return centers
        if it == iters:
            return centers
        t = values[:, None] - centers[None, :]
        labels = np.argmin(t * t, axis=1)
        old = centers


_LAB_TABLES: Optional[threading.Thread] = None


def start_lab_tables() -> None:
    """Have OpenCV build its RGB -> LAB tables now, on another thread (its first 8-bit LAB conversion
    costs ~0.1 s, once per process): a command that classifies one image overlaps it with loading the
    model. :func:`to_lab` waits for it, so no conversion runs while the tables are being built."""
    global _LAB_TABLES
    if _LAB_TABLES is None:
        # Not a daemon thread: the interpreter waits for it at exit (at most the ~0.1 s build). A daemon
        # thread killed inside OpenCV at exit aborted the process ("FATAL: exception not rethrown", exit
        # 134) whenever a command ended early, e.g. `classify` with a bad config, instead of its exit code.
        _LAB_TABLES = threading.Thread(
            target=cv2.cvtColor, args=(np.zeros((1, 1, 3), np.uint8), cv2.COLOR_RGB2LAB), daemon=False
        )
        _LAB_TABLES.start()


def to_lab(rgb: np.ndarray) -> np.ndarray:
    """OpenCV's uint8 LAB of uint8 RGB (after :func:`start_lab_tables`' table build, if one was started)."""
    if _LAB_TABLES is not None and _LAB_TABLES.is_alive():
        _LAB_TABLES.join()
    return cv2.cvtColor(rgb, cv2.COLOR_RGB2LAB)


def segment(
    rgb: np.ndarray, params: PreprocessParams, lab: Optional[np.ndarray] = None
) -> Tuple[np.ndarray, SegmentationStats]:
    """Stained-cell mask and statistics; ``lab`` (uint8 LAB of ``rgb``) when the caller has it already."""
    mask, stats, _ = segment_with_components(rgb, params, lab)
    return mask, stats


def segment_with_components(
    rgb: np.ndarray, params: PreprocessParams, lab: Optional[np.ndarray] = None
) -> Tuple[np.ndarray, SegmentationStats, Optional[Tuple[int, np.ndarray]]]:
    """:func:`segment` plus the mask's connected components (count with the background, labels) when it
    has any: :func:`edge.imaging.cells.find_cells` needs the same ones."""
    if lab is None:
        lab = to_lab(rgb)
    a = lab[:, :, 1]
    if params.blur_ksize > 1:
        a = cv2.GaussianBlur(a, (params.blur_ksize, params.blur_ksize), 0)
    st = params.kmeans_stride
    centers = kmeans_1d(a[::st, ::st].ravel(), params)
    contrast = float(centers[-1] - centers[0])
    if contrast < params.min_stain_contrast:
        mask = np.zeros(a.shape, dtype=bool)
    else:
        # Nearest centre for every pixel reduces to a threshold halfway between the top two centres; the
        # pixels are whole numbers, so "at or above it" is "at or above its ceiling".
        thr = (centers[-1] + centers[-2]) / 2.0
        m: np.ndarray = (a >= int(np.ceil(thr))).view(np.uint8)
        if params.morph_open > 1:
            m = cv2.morphologyEx(m, cv2.MORPH_OPEN, _ellipse(params.morph_open))
        if params.morph_close > 1:
            m = cv2.morphologyEx(m, cv2.MORPH_CLOSE, _ellipse(params.morph_close))
        n, labels, cc_stats, _ = cv2.connectedComponentsWithStats(m, connectivity=8)
        keep = np.zeros(n, dtype=np.uint8)
        keep[1:] = cc_stats[1:, cv2.CC_STAT_AREA] >= params.min_component_px
        m = keep[labels]
        if params.mask_dilate > 0:
            # The pale cytoplasm around a blast's nucleus sits below the A threshold but matters for
            # the subtype, so the mask grows a little beyond the stained region.
            m = cv2.dilate(m, _ellipse(2 * params.mask_dilate + 1))
        mask = m.view(bool)
    ys, xs = scale_bar_slice(params, mask.shape)
    mask[ys, xs] = False
    components = None
    if mask.any():
        n_lab, labels = cv2.connectedComponents(mask.view(np.uint8), connectivity=8)
        components = (int(n_lab), labels)
    stats = SegmentationStats(
        cell_fraction=float(np.count_nonzero(mask) / mask.size),
        n_components=components[0] - 1 if components else 0,
        centers=[round(float(c), 2) for c in centers],
        stain_contrast=round(contrast, 2),
    )
    return mask, stats, components


def _ellipse(k: int) -> np.ndarray:
    return cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (k, k))

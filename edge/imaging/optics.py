"""Optical normalisation: bring any microscope's field to the training scale and the training glass.

Every clinic's microscope, camera and lamp differ. A red cell is ~7.5-8 um across everywhere, so its size
in pixels measures the field's scale; the glass between cells is white light through an empty slide, so
its colour measures the lamp and the camera's white balance. Both are measured on every field and undone
before the quality gate and the segmentation see it:

1. :func:`measure_rbc_diameter` -- the median diameter of the red cells (circles of a Hough transform,
   in two passes so that its bias does not depend on the optics), in pixels of the decoded image;
2. :func:`to_training_scale` -- the field resampled so that a red cell has the training diameter
   (``PreprocessParams.rbc_diameter_px``); a per-microscope ``[optics] px_per_um`` is used when the field
   cannot be measured (or always, when the config says so), and says so in the record;
3. :func:`balance_glass` -- a per-channel gain that brings the glass to the reference white, so that a
   brighter lamp or a bluish camera does not move the cells' colours; the gain is recorded, and fields
   whose glass carries too little signal to be rescued are refused by the quality gate.

Contract: given uint8 RGB of any size and shape, :func:`normalise` returns the field at training scale
with the glass at the reference, plus an :class:`Optics` record (measured diameter, factor, where the
factor came from, glass colour before balancing, gains). It never raises on a real image; a field whose
scale is outside ``SUPPORTED_MAGNIFICATION`` is marked so the pipeline refuses it with the figure.
"""

from __future__ import annotations

import dataclasses
import threading
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Dict, List, Optional, Tuple

import cv2
import numpy as np

from edge.imaging import cellsize, pixels, resampling

# A red cell's diameter in micrometres (normal adult blood: 7.5-8 um on a dried smear).
RBC_DIAMETER_UM = 7.8
# Relative magnification (field scale / training scale) the pipeline accepts at all. Below 0.6 a white
# cell is too few pixels to upsample into anything the model has seen; above 8 the field holds too few red
# cells to be a smear field at all. What the model was *validated* on is narrower and lives in the card.
SUPPORTED_MAGNIFICATION = (0.6, 8.0)
# A cell cut out onto black has no red cells beside it; its scale is guessed by taking it to be this many
# red-cell diameters across (a lymphocyte ~1.0-1.5, a blast ~1.5-2.5): "cell", always sent to review.
CELL_IN_RBC_DIAMETERS = 1.6
# A field with no red cells to measure, no configured scale and no sample that knows it: its white cell's
# size (:func:`edge.imaging.cellsize.white_cell_diameter`) stands in for the scale only where it says the
# field is magnified at least this much (another laboratory's single-cell images, 3-5x). Below it the guess
# (good to a quarter either way for a blast) is no better than assuming the training scale.
MIN_GUESSED_MAGNIFICATION = 2.0
# Fewer measured red cells than this and the median is not a measurement.
MIN_RBC_COUNT = 3
# Hough passes (see measure_rbc_diameter): the coarse pass's short side, and the red-cell diameter the
# second pass resamples to.
_COARSE_SIDE = 192
_PASS2_DIAMETER = 30.0
_PASS2_WINDOW = 320


@dataclass
class Optics:
    rbc_diameter_px: Optional[float]  # measured median red-cell diameter in the decoded image; None: not measured
    rbc_count: int  # red cells measured
    magnification: float  # the camera image's scale relative to the training scale (1.0 = as trained)
    scale_source: str  # "measured" | "sample" | "config" | "cell" | "assumed"
    glass_rgb: Tuple[float, float, float]  # median glass colour before balancing
    gains: Tuple[float, float, float]  # per-channel gain applied to reach the reference glass
    px_per_um: float  # of the camera's image, from the scale used
    clipped_fraction: float = 0.0  # share of the cell pixels at <= 8 or >= 254 grey, before any gain
    # The decoded image's scale relative to training (a large JPEG decoded at 1/2 is half the camera's):
    # what the field is resampled by, and what must lie in SUPPORTED_MAGNIFICATION.
    resample_magnification: float = 1.0

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["glass_rgb"] = [round(v, 1) for v in self.glass_rgb]
        d["gains"] = [round(v, 3) for v in self.gains]
        if d["rbc_diameter_px"] is not None:
            d["rbc_diameter_px"] = round(d["rbc_diameter_px"], 2)
        d["px_per_um"] = round(self.px_per_um, 2)
        d["magnification"] = round(self.magnification, 3)
        d["resample_magnification"] = round(self.resample_magnification, 3)
        return d

    @property
    def supported(self) -> bool:
        lo, hi = SUPPORTED_MAGNIFICATION
        return lo <= self.resample_magnification <= hi


def _cells_and_glass(rgb: np.ndarray, gray: Optional[np.ndarray] = None) -> Tuple[np.ndarray, np.ndarray]:
    """Boolean masks of cell pixels and of glass (brighter than any cell), by Otsu on blurred grey
    (``gray``: :func:`edge.imaging.pixels.gray` of ``rgb`` when the caller has it)."""
    gray = pixels.gray(rgb) if gray is None else np.ascontiguousarray(gray)
    blur = cv2.GaussianBlur(gray, (0, 0), max(1.0, min(gray.shape) / 300))  # 8-bit: OpenCV's fixed point
    cells = blur <= pixels.otsu_threshold(blur)
    return cells, ~cells


_HOUGH_LOCK = threading.Lock()
_OPENCV_SINGLE_THREADED = False


def run_opencv_single_threaded() -> None:
    """Make OpenCV single-threaded for the whole process, for good. A caller that runs several fields at
    once in its own threads (edge.pipeline.stages) calls this: each field's Hough passes then run at the
    same time as another's instead of waiting for the lock below, and give the same answer as always."""
    global _OPENCV_SINGLE_THREADED
    with _HOUGH_LOCK:
        cv2.setNumThreads(1)
        _OPENCV_SINGLE_THREADED = True


@contextmanager
def _one_opencv_thread():
    """OpenCV's HOUGH_GRADIENT_ALT splits its work over threads and merges the candidate circles in
    whatever order the threads finish: with 2 threads, 3 of 60 real fields measured differently from one
    run to the next (same machine, same bytes). One thread gives one answer; the lock keeps two callers
    from restoring each other's thread count (not needed once :func:`run_opencv_single_threaded`)."""
    if _OPENCV_SINGLE_THREADED:
        yield
        return
    with _HOUGH_LOCK:
        n = cv2.getNumThreads()
        cv2.setNumThreads(1)
        try:
            yield
        finally:
            cv2.setNumThreads(n)


def _circle_diameters(rgb: np.ndarray, scale: float, r_min: float, r_max: float, sigma: float) -> np.ndarray:
    """Diameters (pixels of ``rgb``) of the circles OpenCV's gradient Hough transform finds in the grey
    image resampled by ``scale``, with radii in [r_min, r_max] there."""
    h, w = rgb.shape[:2]
    if abs(scale - 1.0) > 1e-3:
        size = (max(8, int(round(w * scale))), max(8, int(round(h * scale))))
        rgb = resampling.resize(rgb, *size)
    g = cv2.GaussianBlur(pixels.gray(rgb), (0, 0), sigma)
    with _one_opencv_thread():
        found = cv2.HoughCircles(
            g,
            cv2.HOUGH_GRADIENT_ALT,
            dp=1.5,
            minDist=max(3.0, r_min),
            param1=60,
            param2=0.6,
            minRadius=max(2, int(r_min)),
            maxRadius=max(3, int(np.ceil(r_max))),
        )
    if found is None:
        return np.zeros(0, np.float32)
    return found[0][:, 2] * 2.0 / scale


def measure_rbc_diameter(rgb: np.ndarray) -> Tuple[Optional[float], int]:
    """Median red-cell diameter (pixels of ``rgb``) and how many circles it rests on; (None, n) when too few.

    Red cells are the round things of a smear: their edges, pale centre or not, touching or not, vote
    for circles in OpenCV's gradient Hough transform. The estimate of a circle's size depends on how
    many pixels it spans, so two passes: a coarse one on the field at a 192-pixel short side finds the
    size roughly, a second one resamples the field so that a red cell spans ``_PASS2_DIAMETER`` pixels and
    looks only for radii near it. Whatever the optics, the second pass sees red cells of the same size,
    so its bias is the same for every microscope (``scripts/measure_scale.py``: field rescaled 0.75-4x,
    the estimate moves 0.86-1.16x of the rescale's, 5th-95th percentile). The median ignores white cells
    and the odd clump.
    """
    h, w = rgb.shape[:2]
    coarse = _COARSE_SIDE / min(h, w)
    first = _circle_diameters(rgb, coarse, 2, _COARSE_SIDE // 4, 0.8)
    if first.size < MIN_RBC_COUNT:
        return None, int(first.size)
    scale = _PASS2_DIAMETER / pixels.median(first)
    # The second pass needs a few dozen red cells, not the whole field: a centred window of at most
    # _PASS2_WINDOW pixels after resampling keeps its cost the same for any camera.
    win = int(np.ceil(_PASS2_WINDOW / scale))
    if h > win or w > win:
        y0, x0 = max(0, (h - win) // 2), max(0, (w - win) // 2)
        rgb = rgb[y0 : y0 + win, x0 : x0 + win]
    r = _PASS2_DIAMETER / 2.0
    second = _circle_diameters(rgb, scale, 0.5 * r, 1.6 * r, 0.8)
    if second.size < MIN_RBC_COUNT:
        return None, int(second.size)
    return pixels.median(second), int(second.size)


def glass_colour(rgb: np.ndarray, glass: Optional[np.ndarray] = None) -> np.ndarray:
    """Median RGB of the glass (brighter than every cell), float: the brighter half of the pixels Otsu
    calls glass (the darker half holds cell rims), on every other pixel of every other row (``glass``:
    that Otsu mask of the subsampled field, when the caller has it)."""
    sub = rgb[::2, ::2] if min(rgb.shape[:2]) >= 64 else rgb
    if glass is None:
        _, glass = _cells_and_glass(sub)
    sub = np.ascontiguousarray(sub)
    # The glass pixels (all of them when Otsu found almost none) by flat index, their R+G+B, the median
    # of that from its histogram (np.median's value: the middle one or the mean of the two), and the
    # channels' medians over the pixels at or above it.
    at = np.flatnonzero(glass) if np.count_nonzero(glass) >= 64 else np.arange(sub.shape[0] * sub.shape[1])
    flat = sub.reshape(-1, 3)
    lum = flat[:, 0].astype(np.uint16) + flat[:, 1] + flat[:, 2]
    lum = lum[at]
    cum = np.cumsum(np.bincount(lum, minlength=766))
    n = lum.size
    med = (int(np.searchsorted(cum, (n - 1) // 2, side="right")) + int(np.searchsorted(cum, n // 2, side="right"))) / 2
    top = at[lum >= med]
    return np.array([_hist_median(flat[top, c]) for c in range(3)], np.float32)


def _hist_median(v: np.ndarray) -> float:
    cum = np.cumsum(np.bincount(v, minlength=256))
    return float(np.searchsorted(cum, (cum[-1] + 1) // 2))


def balance_glass(
    rgb: np.ndarray,
    reference: Tuple[float, float, float],
    max_gain: float,
    glass_mask: Optional[np.ndarray] = None,
) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(balanced field, glass colour before, per-channel gains). Gains are bounded by ``max_gain`` either
    way: beyond that the picture has lost the information (the gate refuses it by its raw levels).
    ``glass_mask``: :func:`glass_colour`'s Otsu glass of this field, when the caller has it."""
    glass = glass_colour(rgb, glass_mask)
    gains = np.clip(np.asarray(reference, np.float32) / np.maximum(glass, 1.0), 1.0 / max_gain, max_gain)
    lut = np.stack([np.clip(np.arange(256, dtype=np.float32) * g + 0.5, 0, 255) for g in gains]).astype(np.uint8)
    # One 3-channel table: channel c of every pixel through lut[c], in one pass.
    out = cv2.LUT(np.ascontiguousarray(rgb), np.ascontiguousarray(lut.T).reshape(256, 1, 3))
    return out, glass, gains


def resample(rgb: np.ndarray, factor: float) -> np.ndarray:
    """The field scaled by ``factor`` (< 1 shrinks), area-averaged when shrinking."""
    if abs(factor - 1.0) < 0.02:
        return rgb
    h, w = rgb.shape[:2]
    return resampling.resize(rgb, max(1, int(round(w * factor))), max(1, int(round(h * factor))))


def normalise(
    rgb: np.ndarray,
    rbc_diameter_px: float,
    glass_reference: Tuple[float, float, float],
    max_gain: float = 2.5,
    px_per_um: Optional[float] = None,
    scale_source: str = "auto",
    decode_factor: float = 1.0,
    tolerance: Tuple[float, float] = (0.8, 1.25),
    known_magnification: Optional[float] = None,
) -> Tuple[np.ndarray, Optics]:
    """Field at the training scale with the glass at the reference colour, and what was done to it.

    ``rbc_diameter_px`` is the training scale (a red cell's diameter in training pixels). ``px_per_um``
    is the microscope's configured scale of the *original* image; ``decode_factor`` the decoder's
    reduction (1/2 when a large JPEG was decoded at half size). ``scale_source``: "auto" measures and
    falls back to the configured scale, then to the sample's, then to a guess from the white cell's size
    where that says the field is clearly magnified ("cell"), then to 1.0 ("assumed"); "config" always uses
    the configured one.
    ``known_magnification`` (from :class:`ScaleMemory`: this sample's earlier fields agreed) is used only
    when this field's red cells cannot be measured ("sample"), never instead of measuring them.
    """
    # Grey once: it is per pixel, so the grey of every other pixel is every other pixel of the grey.
    gray = pixels.gray(rgb)
    cut_out = black_surround(rgb, gray)
    cell_diam = None
    if cut_out is not None:
        # A cell already cut out onto black (some analysers and datasets): no glass, no red cells. The black
        # becomes the reference glass, and the scale can only be guessed from the white cell's own size.
        rgb = rgb.copy()
        rgb[cut_out] = np.asarray(glass_reference, np.float32).round().astype(np.uint8)
        gray = pixels.gray(rgb)
        cell_diam = cellsize.largest_blob_diameter(~cut_out)
    # Every field is measured, even when its sample's scale is known: the model's card was validated on
    # each field's own measurement, and a dataset's (or a clinic's) fields of one folder need not share
    # one magnification. Reusing the sample's scale refused 2 of the 75 Benign validation fields with
    # the blocks as samples, and 8 of 75 ("no white cell found", 30 of 494 scores changed) with each
    # class's fields in one folder, where the field's own scale found the cell.
    # A microscope whose scale the clinic has configured (scale_source "config") is not measured: the
    # configured scale decides the factor either way, and the two Hough passes are most of a field's cost.
    if cut_out is not None or (scale_source == "config" and px_per_um):
        measured, count = None, 0
    else:
        measured, count = measure_rbc_diameter(rgb)
        if measured is not None:
            # Hough's float arithmetic may differ in the last bits between CPUs: a coarse grid (1/64 px,
            # far below the measurement's own spread) keeps the factor below, and so every pixel after it,
            # the same on each of them.
            measured = round(measured * 64.0) / 64.0
    # Clipping that matters is clipping of the cells: bright glass at 255 (a lamp turned up) loses nothing
    # the model looks at, so the share is taken over the pixels darker than the glass.
    small_gray = gray[::2, ::2]
    cells, small_glass = _cells_and_glass(rgb[::2, ::2], small_gray)
    if cut_out is not None:
        cells = cells & ~cut_out[::2, ::2]
    cell_gray = small_gray[cells]
    clipped = float(((cell_gray <= 8) | (cell_gray >= 254)).mean()) if cell_gray.size else 1.0
    cfg_diam = px_per_um * RBC_DIAMETER_UM * decode_factor if px_per_um else None
    if scale_source == "config" and cfg_diam:
        diam, source = cfg_diam, "config"
    elif cell_diam is not None and not cfg_diam:
        diam, source = cell_diam / CELL_IN_RBC_DIAMETERS, "cell"
    elif measured is not None:
        diam, source = measured, "measured"
    elif cfg_diam:
        diam, source = cfg_diam, "config"
    elif known_magnification is not None:
        diam, source = known_magnification * decode_factor * rbc_diameter_px, "sample"
    else:
        # Half-size pixels, as ``cells``: a white cell is tens of them across at any magnification guessed.
        white = cellsize.white_cell_diameter(rgb[::2, ::2], cells)
        guess = 2.0 * white / CELL_IN_RBC_DIAMETERS if white is not None else None
        if guess is not None and guess >= MIN_GUESSED_MAGNIFICATION * rbc_diameter_px:
            diam, source = guess, "cell"
        else:
            diam, source = rbc_diameter_px, "assumed"
    decoded_mag = diam / rbc_diameter_px
    mag = decoded_mag / decode_factor
    optics_px_per_um = diam / RBC_DIAMETER_UM / decode_factor
    lo, hi = SUPPORTED_MAGNIFICATION
    # Within the tolerance the field is left at its own scale (the training fields spread that much).
    factor = 1.0 if tolerance[0] <= decoded_mag <= tolerance[1] else 1.0 / decoded_mag
    scaled = resample(rgb, factor) if lo <= decoded_mag <= hi else rgb
    # Not resampled: glass_colour's Otsu split is the one just made for the clipping (same pixels).
    same = scaled is rgb and min(rgb.shape[:2]) >= 64
    balanced, glass, gains = balance_glass(scaled, glass_reference, max_gain, small_glass if same else None)
    return balanced, Optics(
        rbc_diameter_px=measured,
        rbc_count=count,
        magnification=float(mag),
        scale_source=source,
        glass_rgb=(float(glass[0]), float(glass[1]), float(glass[2])),
        gains=(float(gains[0]), float(gains[1]), float(gains[2])),
        px_per_um=float(optics_px_per_um),
        clipped_fraction=clipped,
        resample_magnification=float(decoded_mag),
    )


def black_surround(rgb: np.ndarray, gray: Optional[np.ndarray] = None) -> Optional[np.ndarray]:
    """Mask of a black surround (a cell cut out onto black), or None for an ordinary field: at least a fifth
    of the picture and most of its border near-black (``gray``: the field's grey, when the caller has it)."""
    dark = (pixels.gray(rgb) if gray is None else gray) <= 12
    if dark.mean() < 0.2:
        return None
    border = np.concatenate([dark[0], dark[-1], dark[:, 0], dark[:, -1]])
    return dark if border.mean() >= 0.5 else None


class ScaleMemory:
    """A microscope's magnification does not change within one patient sample: once the last ``need``
    measured fields of a sample (same image size) agree within ``spread``, their median is the scale of
    a later field of that sample whose red cells cannot be measured (too few, a clump), rather than the
    configured or assumed one. Only the last ``keep`` samples are remembered."""

    def __init__(self, need: int = 3, spread: float = 1.35, keep: int = 64):
        self.need, self.spread, self.keep = need, spread, keep
        self._seen: Dict[tuple, List[float]] = {}
        self._lock = threading.Lock()  # fields of a stream are prepared in several threads at once

    def known(self, key: Optional[tuple]) -> Optional[float]:
        with self._lock:
            got = list(self._seen.get(key, ())) if key is not None else None
        if not got or len(got) < self.need:
            return None
        # The last few measurements: one field's estimate moves by up to ~1.35x (5th-95th percentile,
        # scripts/measure_scale.py), so agreement within that is one magnification.
        last = sorted(got[-self.need :])
        if last[-1] / max(last[0], 1e-6) > self.spread:
            return None
        return last[len(last) // 2]

    def add(self, key: Optional[tuple], optics: Optics) -> None:
        if key is None or optics.scale_source != "measured":
            return
        with self._lock:
            self._seen.setdefault(key, []).append(optics.magnification)
            if len(self._seen) > self.keep:
                self._seen.pop(next(iter(self._seen)))

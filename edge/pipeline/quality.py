"""The quality gate: is this image good enough to give a class to?

A confident answer on an unreadable image is the second-worst outcome for a screening aid, so an image
that is out of focus, badly exposed, or has no stained cells in it is recorded as ``unreadable`` with the
reason and never reaches the model. Thresholds come from the ``[quality]`` section of the config; their
defaults were calibrated by ``scripts/calibrate_quality.py`` so that none of the 2,550 real smears in
../shared is refused.

Focus and exposure are measured on the same centre square, at the same working size, as the model sees,
with the scale-bar label box left out (its sharp digital text would make a blurred field look focused).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import List, Optional, Protocol, Sequence

import cv2
import numpy as np

from edge.imaging.cells import Cell
from edge.imaging.optics import Optics
from edge.imaging.preprocess import PreprocessParams, crop_resize
from edge.imaging.segmentation import SegmentationStats, scale_bar_slice
from edge.inference.card import QualityGate
from edge.vocabulary import CARVED, CLIPPED, CLIPPED_GLASS_HINT, NO_CELL, PALE

# Pixels this close to 0 or 255 carry no information (the sensor or the JPEG encoder clipped them).
DARK_LEVEL = 8
BRIGHT_LEVEL = 254


class Thresholds(Protocol):
    """What the gate reads from ``edge.config.QualityConfig`` (read-only: the config is frozen)."""

    @property
    def min_focus(self) -> float: ...
    @property
    def min_brightness(self) -> float: ...
    @property
    def max_brightness(self) -> float: ...
    @property
    def max_clipped_fraction(self) -> float: ...
    @property
    def min_cell_fraction(self) -> float: ...
    @property
    def min_stain_contrast(self) -> float: ...


@dataclass
class QualityReport:
    focus: float  # variance of the Laplacian of the gray working image (optical: over its unclipped pixels)
    brightness: float  # mean gray level, 0..255
    clipped_fraction: float  # share of pixels at or below DARK_LEVEL or at or above BRIGHT_LEVEL
    cell_fraction: Optional[float] = None  # from the segmentation; None until it has run
    stain_contrast: Optional[float] = None  # A-channel spread of the KMeans centres (LAB units)
    passed: bool = True
    reason: str = ""  # empty when passed, else one line naming the failing metric and its limit
    # Optical normalisation (v3 cards): the glass has been brought to the reference white, so brightness
    # is the glass's level *before* that gain (too dark = too little light to rescue) and overexposure is
    # judged by clipping alone: a brighter lamp is normalised, not refused.
    optical: bool = False

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def working_gray(rgb: np.ndarray, params: PreprocessParams) -> tuple[np.ndarray, np.ndarray]:
    """Gray image at the model's working size plus the mask of pixels that count (not the label box)."""
    small = crop_resize(rgb, params)
    gray = cv2.cvtColor(small, cv2.COLOR_RGB2GRAY)
    valid = np.ones(gray.shape, dtype=bool)
    ys, xs = scale_bar_slice(params, gray.shape)
    valid[ys, xs] = False
    return gray, valid


# Fewer unclipped pixels than this and the focus is taken over the whole field as before: what is left is
# too little to judge sharpness on, and the clipping check names the real problem.
MIN_FOCUS_PIXELS = 500


def _unclipped(gray: np.ndarray, inner: np.ndarray) -> np.ndarray:
    """``inner`` without the plateau of the brightest grey level and its neighbours.

    A lamp turned up clips the glass (and pale cell rims) at the sensor's 255; after the glass gain that is
    a flat plateau with no texture, so the variance of the Laplacian over the whole field falls with the
    exposure although the cells are as sharp as before (a +40 % exposure refused 25 of 165 sharp
    validation fields as "out of focus"). Sharpness is therefore judged on what the camera did not clip.
    On an unclipped field the plateau is a few pixels of the brightest glass and changes nothing.
    """
    top = int(gray[inner].max()) - 1 if inner.any() else 255
    plateau = cv2.dilate((gray >= top).astype(np.uint8), np.ones((3, 3), np.uint8)).astype(bool)
    keep = inner & ~plateau
    return keep if int(np.count_nonzero(keep)) >= MIN_FOCUS_PIXELS else inner


def measure(rgb: np.ndarray, params: PreprocessParams, optics: Optional[Optics] = None) -> QualityReport:
    """Focus and exposure metrics; the content metric is added by :func:`check_content`. With ``optics``
    (a v3 field already normalised) brightness is the glass level before normalisation."""
    gray, valid = working_gray(rgb, params)
    lap = cv2.Laplacian(gray, cv2.CV_32F, ksize=1)
    # The Laplacian of a pixel next to the label box sees the box's edge; erode the mask by one.
    inner = cv2.erode(valid.astype(np.uint8), np.ones((3, 3), np.uint8)).astype(bool)
    focus_px = inner
    if optics is not None:
        focus_px = _unclipped(gray, inner)
        # Both are properties of the camera's picture, before the glass gain (which may push a bright but
        # intact glass to 255, or pull a clipped one below it): edge/imaging/optics.py measured them.
        brightness, clipped = float(np.mean(optics.glass_rgb)), optics.clipped_fraction
    else:
        g = gray[valid]
        brightness, clipped = float(g.mean()), float(((g <= DARK_LEVEL) | (g >= BRIGHT_LEVEL)).mean())
    return QualityReport(
        focus=round(float(lap[focus_px].var()), 3),
        brightness=round(brightness, 3),
        clipped_fraction=round(clipped, 5),
        optical=optics is not None,
    )


def check_exposure_focus(report: QualityReport, t: Thresholds) -> QualityReport:
    """Sets ``passed``/``reason`` from focus and exposure; the first failing check wins."""
    # Exposure before focus: a black frame also has no edges, but "too dark" is the useful message.
    checks = (
        (
            report.optical and report.brightness < t.min_brightness,
            f"too dark to correct: glass brightness {report.brightness:.1f} < {t.min_brightness:g}",
        ),
        (
            not report.optical and report.brightness < t.min_brightness,
            f"too dark: mean brightness {report.brightness:.1f} < {t.min_brightness:g}",
        ),
        (
            not report.optical and report.brightness > t.max_brightness,
            f"overexposed: mean brightness {report.brightness:.1f} > {t.max_brightness:g}",
        ),
        (
            report.clipped_fraction > t.max_clipped_fraction,
            f"badly exposed: {report.clipped_fraction:.1%} of {'cell ' if report.optical else ''}pixels clipped "
            f"black or white > {t.max_clipped_fraction:.1%}",
        ),
        (report.focus < t.min_focus, f"out of focus: Laplacian variance {report.focus:.1f} < {t.min_focus:g}"),
    )
    for failed, reason in checks:
        if failed:
            report.passed, report.reason = False, reason
            break
    return report


def check_content(report: QualityReport, stats: SegmentationStats, t: Thresholds) -> QualityReport:
    """Content: is there stain at all (contrast), and are there cells (fraction)?

    Stain contrast is the primary test because the segmentation itself leaves the mask empty below its own
    contrast floor, which a few faintly stained real smears fall under; cell fraction is a second,
    optional floor (calibrated to 0 on the real images for that reason).
    """
    report.cell_fraction = round(float(stats.cell_fraction), 5)
    report.stain_contrast = round(float(stats.stain_contrast), 3)
    if not report.passed:
        return report
    min_contrast = getattr(t, "min_stain_contrast", 0.0)
    if report.stain_contrast < min_contrast:
        report.passed = False
        report.reason = (
            f"no stain: stain contrast {report.stain_contrast:.1f} < {min_contrast:g} (empty field or not a smear)"
        )
    elif report.cell_fraction < t.min_cell_fraction:
        report.passed = False
        report.reason = (
            f"no stained cells: cell fraction {report.cell_fraction:.2%} < {t.min_cell_fraction:.2%}"
            f" (empty field or not a smear)"
        )
    return report


def stricter(t: Thresholds, gate: QualityGate) -> Thresholds:
    """The config's thresholds, tightened to the model card's ``quality_gate`` (set by the trainer where
    the model starts failing); a config can be stricter than the card, never looser."""
    changes = {}
    for key, pick in (("min_focus", max), ("min_brightness", max), ("max_brightness", min)):
        limit = getattr(gate, key)
        if limit is not None:
            changes[key] = pick(getattr(t, key), limit)
    return dataclasses.replace(t, **changes) if changes else t  # type: ignore[type-var]  # a dataclass in practice


def assess(
    rgb: np.ndarray, params: PreprocessParams, t: Thresholds, stats: Optional[SegmentationStats] = None
) -> QualityReport:
    """All checks at once (the pipeline calls the two halves separately to skip preprocessing early)."""
    report = check_exposure_focus(measure(rgb, params), t)
    if stats is None:
        from edge.imaging.segmentation import segment

        stats = segment(crop_resize(rgb, params), params)[1]
    return check_content(report, stats, t)


def clipped_glass(optics: Optional[Optics]) -> bool:
    """The glass is clipped white in every channel before any gain: the camera saturates."""
    return optics is not None and min(optics.glass_rgb) >= BRIGHT_LEVEL


def review_flags(cells: Sequence[Cell], params: PreprocessParams, optics: Optional[Optics]) -> List[str]:
    """Why preprocessing itself sends an answered field to review, whatever its score (the reasons the row's
    ``domain`` carries beside the monitor's): a cell carved out of red cells, a cell found only by its
    contrast to them (neither ever validated), glass the camera clipped white (card ``clipped_glass_review``)."""
    flags = []
    if any(c.carved for c in cells):
        flags.append(CARVED)
    if any(c.pale for c in cells):
        flags.append(PALE)
    if params.clipped_glass_review and clipped_glass(optics):
        flags.append(CLIPPED)
    return flags


def no_cell_reason(optics: Optional[Optics]) -> str:
    """Why a field has no cell to judge, in words a technologist can act on.

    With the glass clipped white before any gain, pale cells' stain is clipped with it (their red and blue
    channels reach 255 and the magenta that segmentation looks for is gone): undoing the exposure exactly
    brings none of them back (measured on the validation fields at +40 %), so the fix is at the microscope.
    """
    if clipped_glass(optics):
        return f"{NO_CELL}: {CLIPPED_GLASS_HINT}"
    return NO_CELL


def gate_reason(report: QualityReport, optics: Optional[Optics]) -> str:
    """The gate's refusal in words a technologist can act on. Focus is judged on the pixels the camera did
    not clip; with the glass clipped white few are left, and the red cells' rims go with it, so a sharp
    field reads as blurred (at +40 % exposure 21 of the 119 Pro-B validation fields were refused "out of
    focus"): refocusing would not help, lowering the lamp would."""
    if report.reason.startswith("out of focus") and clipped_glass(optics):
        return f"{report.reason}; {CLIPPED_GLASS_HINT}"
    return report.reason

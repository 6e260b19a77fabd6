"""Stain normalisation: a field's colours mapped onto the training cells' (Reinhard in LAB).

Another laboratory's stain, lamp or camera moves every colour of its fields; the model should see its white
cells where ours were. :class:`StainTransform` is a per-channel affine map of LAB fitted on a region's
mean and spread and applied pixel by pixel; :func:`normalised_cells` fits it and converts a field's cell
pixels in one pass (what :func:`edge.imaging.preprocess.preprocess` crops from, :mod:`edge.imaging.cells`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence, Tuple

import numpy as np

from edge.imaging import pixels


@dataclass
class StainTransform:
    """Reinhard colour transfer onto a reference: ``lab * gain + offset`` per LAB channel (float LAB).

    Fitted on the background (glass and red cells), not the whole field: the share of white cells varies
    from field to field and would otherwise move every colour with it. Any per-channel affine change of
    LAB (another stain batch, lamp or camera) is undone exactly; the gain is bounded so a nearly uniform
    background cannot blow the cell colours up. The arithmetic is :mod:`edge.imaging.pixels`', so a field gives
    the same bytes on every CPU (OpenCV's float LAB did not).
    """

    gain: np.ndarray
    offset: np.ndarray
    source: np.ndarray  # the fitted pixels' LAB means then spreads (what the domain monitor compares)

    @classmethod
    def fit(
        cls,
        rgb: np.ndarray,
        region: np.ndarray,
        reference: Sequence[float],
        max_gain: float,
        keep_lightness: bool = False,
    ) -> StainTransform:
        """Fitted on the pixels of uint8 RGB ``rgb`` where ``region`` is set. ``keep_lightness``: map only
        the colour (A, B) and leave L alone. Fitted on the cells themselves, a full transfer would also
        erase how dark a nucleus is (its chromatin), which tells a hematogone from a blast; lightness is
        the glass balance's job (edge/imaging/optics.py)."""
        return cls.from_stats(*_lab_stats(rgb, region), reference, max_gain, keep_lightness)

    @classmethod
    def from_stats(
        cls,
        mean: np.ndarray,
        std: np.ndarray,
        reference: Sequence[float],
        max_gain: float,
        keep_lightness: bool = False,
    ) -> StainTransform:
        """The transform from the fitted pixels' LAB means and spreads (:meth:`fit` without the pixels)."""
        ref_mean, ref_std = np.asarray(reference[:3], np.float64), np.asarray(reference[3:], np.float64)
        gain = np.clip(ref_std / np.maximum(std, 1e-3), 1.0 / max_gain, max_gain)
        offset = ref_mean - mean * gain
        if keep_lightness:
            gain[0], offset[0] = 1.0, 0.0
        return cls(gain=gain, offset=offset, source=np.concatenate([mean, std]))

    def apply(self, rgb: np.ndarray) -> np.ndarray:
        """uint8 RGB pixels (any shape ... x 3) -> normalised uint8 RGB. Pixel by pixel, so a window of
        the field comes out exactly as the same window of the normalised field."""
        return self.apply_lab(pixels.rgb_to_lab(rgb))

    def apply_lab(self, lab: np.ndarray) -> np.ndarray:
        """float LAB pixels (:func:`edge.imaging.pixels.rgb_to_lab`, ... x 3) -> normalised uint8 RGB."""
        out = lab * self.gain + self.offset  # two ufuncs: nothing to fuse into one rounding
        np.clip(out[..., 0], 0, 100, out=out[..., 0])
        return pixels.lab_to_rgb8(out)


def stain_normalize(rgb: np.ndarray, background: np.ndarray, reference: Sequence[float], max_gain: float) -> np.ndarray:
    """The whole field through :class:`StainTransform` (the device only converts the cells' pixels)."""
    return StainTransform.fit(rgb, background, reference, max_gain).apply(rgb)


def background_stats(rgb: np.ndarray, background: np.ndarray) -> np.ndarray:
    """(L, A, B means, L, A, B spreads) of a field's background: what :class:`StainTransform` maps."""
    return np.concatenate(_lab_stats(rgb, background))


def _lab_stats(rgb: np.ndarray, region: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """Per-channel LAB mean and spread of a region (the whole field when it has almost none)."""
    return pixels.masked_mean_std(pixels.rgb_to_lab(rgb[_stats_sample(region)]))


def _stats_sample(region: np.ndarray) -> np.ndarray:
    """The pixels :func:`_lab_stats` fits on: ``region``, or the whole field when it has almost none."""
    return region.astype(bool) if np.count_nonzero(region) >= 64 else np.ones(region.shape[:2], bool)


def normalised_cells(
    rgb: np.ndarray,
    mask: np.ndarray,
    region: np.ndarray,
    reference: Sequence[float],
    max_gain: float,
    keep_lightness: bool,
    fill: Tuple[int, int, int],
) -> Tuple[StainTransform, np.ndarray]:
    """:meth:`StainTransform.fit` on ``region`` and the field with the ``mask`` pixels normalised by it,
    every other pixel ``fill``: the same bytes as fitting, then converting each crop's cell pixels, but
    each pixel is converted to LAB once (the fit and the cells share most of their pixels) and the
    transform is applied to the field's cell pixels in one pass instead of once per overlapping crop."""
    sample = _stats_sample(region)
    cells = mask.astype(bool)
    both = sample | cells
    at = np.flatnonzero(both)  # flat indices: row gathers and scatters, much cheaper than boolean masks
    lab = pixels.rgb_to_lab(rgb.reshape(-1, 3)[at])  # pixel by pixel: a pixel's LAB does not depend on the others
    fit = lab if np.array_equal(sample, both) else lab[sample.ravel()[at]]
    stain = StainTransform.from_stats(*pixels.masked_mean_std(fit), reference, max_gain, keep_lightness)
    on = np.array_equal(cells, both)
    out = pixels.filled(rgb.shape, fill)
    out.reshape(-1, 3)[at if on else np.flatnonzero(cells)] = stain.apply_lab(lab if on else lab[cells.ravel()[at]])
    return stain, out

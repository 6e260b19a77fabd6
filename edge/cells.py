"""Cell-grounded model input: the white cells the segmentation found, stain-normalised, one crop each.

In the training data every class comes from its own slides, so the glass, the red cells and the stain of
the whole field identify the class; another clinic's slides will not. The model therefore sees only the
stained (white) cells: each crop is centred on one cell at a fixed scale, everything outside the
segmentation mask is a flat neutral grey, and the colours are first mapped to a fixed reference
(Reinhard: per-channel mean and spread in LAB) so that another laboratory's stain lands where ours did.

Contract: :func:`find_cells` returns the plausible leukocytes of a field, largest first, or none; a field
with none is not given a class ("no white cell found"). :func:`cell_crops` returns one
``cell_input x cell_input x 3`` uint8 array per cell, in the same order.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import List, Sequence, Tuple

import cv2
import numpy as np


@dataclass
class Cell:
    y: int  # centre in the working image (pixels)
    x: int
    radius: float  # distance from the centre to the mask edge: the cell's inscribed radius
    stain: float  # mean A of the cell's mask pixels minus the median A of the background (LAB units)

    def to_dict(self) -> dict:
        return {"y": self.y, "x": self.x, "radius": round(self.radius, 1), "stain": round(self.stain, 1)}


def stain_normalize(rgb: np.ndarray, background: np.ndarray, reference: Sequence[float],
                    max_gain: float) -> np.ndarray:
    """Reinhard colour transfer onto ``reference`` (L, A, B means then spreads, float LAB units).

    The statistics come from the background (glass and red cells), not the whole field: the share of
    white cells varies from field to field and would otherwise move every colour with it. Any per-channel
    affine change of LAB (another stain batch, lamp or camera) is undone exactly; the gain is bounded so a
    nearly uniform background cannot blow the cell colours up.
    """
    lab = cv2.cvtColor(rgb.astype(np.float32) / 255.0, cv2.COLOR_RGB2LAB)
    px = lab[background] if background.sum() >= 64 else lab.reshape(-1, 3)
    mean, std = px.mean(axis=0), px.std(axis=0)
    ref_mean, ref_std = np.asarray(reference[:3], np.float32), np.asarray(reference[3:], np.float32)
    gain = np.clip(ref_std / np.maximum(std, 1e-3), 1.0 / max_gain, max_gain)
    lab = (lab - mean) * gain + ref_mean
    lab[..., 0] = np.clip(lab[..., 0], 0, 100)
    out = cv2.cvtColor(lab, cv2.COLOR_LAB2RGB)
    return np.clip(out * 255.0 + 0.5, 0, 255).astype(np.uint8)


def background_stats(rgb: np.ndarray, background: np.ndarray) -> np.ndarray:
    """(L, A, B means, L, A, B spreads) of a field's background: what :func:`stain_normalize` maps."""
    lab = cv2.cvtColor(rgb.astype(np.float32) / 255.0, cv2.COLOR_RGB2LAB)
    px = lab[background]
    return np.concatenate([px.mean(axis=0), px.std(axis=0)])


def find_cells(lab: np.ndarray, mask: np.ndarray, valid: np.ndarray, params) -> List[Cell]:
    """Plausible leukocytes: greedy maxima of the mask's distance transform, one per ``cell_spacing`` px.

    ``lab`` is the field in OpenCV's uint8 LAB. A maximum is a cell when the stained region around it is
    at least ``cell_min_radius`` deep (platelets, debris and thin red-cell rims are not) and the region
    looks like a stained nucleus on glass: more magenta than the background by ``cell_min_stain`` in A (a
    red-cells-only field's most magenta cluster is not), bluer in B and darker in L (brown, orange or pale
    regions of photographs are not), on a background light enough to be glass. Touching cells give one
    maximum each, so a cluster of blasts is several cells, not one blob.
    """
    if not mask.any():
        return []
    bg = valid & ~mask
    if not bg.any():
        return []
    ref = {k: float(np.median(lab[..., i][bg])) for i, k in enumerate("LAB")}
    if ref["L"] < params.min_glass_lightness:
        return []
    # Zero border: a cell cut by the image edge is measured to the edge, not as if it went on beyond it.
    padded = cv2.copyMakeBorder(mask.astype(np.uint8), 1, 1, 1, 1, cv2.BORDER_CONSTANT, value=0)
    dist = cv2.distanceTransform(padded, cv2.DIST_L2, 5)[1:-1, 1:-1]
    n_lab, labels = cv2.connectedComponents(mask.astype(np.uint8), connectivity=8)
    excess = {k: _label_means(lab[..., i].astype(np.float32), labels, n_lab) - ref[k] for i, k in enumerate("LAB")}
    cells: List[Cell] = []
    work = dist.copy()
    h, w = mask.shape
    yy, xx = np.ogrid[:h, :w]
    while len(cells) < params.max_cells:
        y, x = np.unravel_index(int(np.argmax(work)), work.shape)
        r = float(work[y, x])
        if r < params.cell_min_radius:
            break
        comp = labels[y, x]
        if (excess["A"][comp] >= params.cell_min_stain and excess["B"][comp] <= params.cell_max_b_excess
                and excess["L"][comp] <= params.cell_max_l_excess):
            cells.append(Cell(y=int(y), x=int(x), radius=r, stain=float(excess["A"][comp])))
        # Suppress the whole neighbourhood, kept or not, so the next maximum is another cell.
        work[(yy - y) ** 2 + (xx - x) ** 2 <= params.cell_spacing ** 2] = 0
    return cells


def _label_means(values: np.ndarray, labels: np.ndarray, n: int) -> np.ndarray:
    sums = np.bincount(labels.ravel(), weights=values.ravel(), minlength=n)
    counts = np.bincount(labels.ravel(), minlength=n)
    return sums / np.maximum(counts, 1)


def cell_crops(rgb: np.ndarray, mask: np.ndarray, cells: Sequence[Cell], window: int, out_size: int,
               fill: Tuple[int, int, int]) -> List[np.ndarray]:
    """One crop per cell: ``window`` pixels square around its centre, non-cell pixels ``fill``, resized."""
    h, w = mask.shape
    half = window // 2
    pad = half + 1
    shown = np.empty_like(rgb)
    shown[:] = np.asarray(fill, np.uint8)
    shown[mask] = rgb[mask]
    padded = cv2.copyMakeBorder(shown, pad, pad, pad, pad, cv2.BORDER_CONSTANT, value=tuple(int(v) for v in fill))
    crops = []
    for c in cells:
        y0, x0 = c.y + pad - half, c.x + pad - half
        crop = padded[y0:y0 + window, x0:x0 + window]
        if window != out_size:
            crop = cv2.resize(crop, (out_size, out_size), interpolation=cv2.INTER_LINEAR)
        crops.append(np.ascontiguousarray(crop))
    return crops

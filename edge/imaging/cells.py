"""Cell-grounded model input: the white cells the segmentation found and one crop of each.

In the training data every class comes from its own slides, so the glass, the red cells and the stain of
the whole field identify the class; another clinic's slides will not. The model therefore sees only the
stained (white) cells: each crop is centred on one cell at a fixed scale, everything outside the
segmentation mask is a flat neutral grey, and the colours are first mapped to a fixed reference
(:mod:`edge.imaging.stain`) so that another laboratory's stain lands where ours did.

Contract: :func:`find_cells` returns the plausible leukocytes of a field, largest first, or none; a field
with none is not given a class ("no white cell found") unless :func:`carve_merged` (cards that ask for it)
finds white cells merged with reddish red cells, marked ``carved``. :func:`crops_of` returns one
``cell_input x cell_input x 3`` uint8 array per cell, in the same order.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, List, Optional, Sequence, Tuple

import cv2
import numpy as np

from edge.imaging import pixels, resampling


@dataclass
class Cell:
    y: int  # centre in the working image (pixels)
    x: int
    radius: float  # distance from the centre to the mask edge: the cell's inscribed radius
    stain: float  # mean A of the cell's mask pixels minus the median A of the background (LAB units)
    carved: bool = False  # cut out of a region it shared with red cells (:func:`carve_merged`)
    pale: bool = False  # found by its contrast to the field's red cells, under the stain bar (:func:`find_pale`)

    def to_dict(self) -> dict:
        d = {"y": self.y, "x": self.x, "radius": round(self.radius, 1), "stain": round(self.stain, 1)}
        if self.carved:
            d["carved"] = True
        if self.pale:
            d["pale"] = True
        return d


def find_cells(
    lab: np.ndarray,
    mask: np.ndarray,
    valid: np.ndarray,
    params,
    skip_cut: bool = False,
    components: Optional[Tuple[int, np.ndarray]] = None,
) -> List[Cell]:
    """Plausible leukocytes: greedy maxima of the mask's distance transform, one per ``cell_spacing`` px.

    ``lab`` is the field in OpenCV's uint8 LAB. A maximum is a cell when the stained region around it is
    at least ``cell_min_radius`` deep (platelets, debris and thin red-cell rims are not) and the region
    looks like a stained nucleus on glass: more magenta than the background by ``cell_min_stain`` in A (a
    red-cells-only field's most magenta cluster is not), bluer in B and darker in L (brown, orange or pale
    regions of photographs are not), on a background light enough to be glass. Touching cells give one
    maximum each, so a cluster of blasts is several cells, not one blob. With ``skip_cut`` a cell whose
    disc reaches the image border is passed over: it may be cut, and half a neutrophil can look like
    anything. ``components``: the mask's 8-connected components (count, labels) when the caller has them.
    """
    ref = _glass_reference(lab, mask, valid, params)
    if ref is None:
        return []
    return _cells_at_maxima(
        lab, mask, params, ref, skip_cut, components, lambda a, b, lightness: _nucleus_like(a, b, lightness, params)
    )


def _cells_at_maxima(
    lab: np.ndarray,
    mask: np.ndarray,
    params,
    ref: dict,
    skip_cut: bool,
    components: Optional[Tuple[int, np.ndarray]],
    accept: Callable[[float, float, float], bool],
    pale: bool = False,
) -> List[Cell]:
    """:func:`find_cells`' search with its colour test as ``accept(A, B, L excess over the glass)``, on
    each maximum's region and, with the card's ``local_colour_test``, on the maximum's own disc too."""
    # A cell cut by the image edge is measured to the edge, not as if it went on beyond it.
    dist = _inscribed(mask.astype(np.uint8))
    n_lab, labels = components or cv2.connectedComponents(mask.astype(np.uint8), connectivity=8)
    at = np.flatnonzero(mask)  # flat indices: cheaper gathers than a boolean mask over 3 channels
    ids, px = labels.ravel()[at], np.ascontiguousarray(lab).reshape(-1, 3)[at]
    counts = np.maximum(np.bincount(ids, minlength=n_lab), 1)
    excess = {k: np.bincount(ids, weights=px[:, i], minlength=n_lab) / counts - ref[k] for i, k in enumerate("LAB")}
    cells: List[Cell] = []
    work = dist.copy()
    h, w = mask.shape
    sp = int(np.ceil(params.cell_spacing))
    yy, xx = np.ogrid[-sp : sp + 1, -sp : sp + 1]
    disc = yy**2 + xx**2 <= params.cell_spacing**2
    while len(cells) < params.max_cells:
        y, x = np.unravel_index(int(np.argmax(work)), work.shape)
        r = float(work[y, x])
        if r < params.cell_min_radius:
            break
        comp = labels[y, x]
        cut = skip_cut and min(y, x, h - 1 - y, w - 1 - x) <= r + 1.0
        if (
            not cut
            and accept(excess["A"][comp], excess["B"][comp], excess["L"][comp])
            and (not params.local_colour_test or accept(*_disc_excess(lab, labels, int(y), int(x), r, ref)))
        ):
            cells.append(Cell(y=int(y), x=int(x), radius=r, stain=float(excess["A"][comp]), pale=pale))
        # Suppress the whole neighbourhood, kept or not, so the next maximum is another cell.
        yi, xi = int(y), int(x)
        y0, y1, x0, x1 = max(yi - sp, 0), min(yi + sp + 1, h), max(xi - sp, 0), min(xi + sp + 1, w)
        win = work[y0:y1, x0:x1]
        win[disc[y0 - yi + sp : y1 - yi + sp, x0 - xi + sp : x1 - xi + sp]] = 0
    return cells


def _disc_excess(
    lab: np.ndarray, labels: np.ndarray, y: int, x: int, r: float, ref: dict
) -> Tuple[float, float, float]:
    """Mean (A, B, L) excess over the glass of the pixels of the region at (y, x) within ``r`` of it: the
    colour of one maximum's own disc. A red cell joined to a white cell has the white cell's region mean
    and its own, pinker and paler disc."""
    h, w = labels.shape
    k = int(np.ceil(r))
    y0, y1, x0, x1 = max(y - k, 0), min(y + k + 1, h), max(x - k, 0), min(x + k + 1, w)
    yy, xx = np.ogrid[y0 - y : y1 - y, x0 - x : x1 - x]
    inside = (yy * yy + xx * xx <= r * r) & (labels[y0:y1, x0:x1] == labels[y, x])
    mean = lab[y0:y1, x0:x1][inside].mean(axis=0)  # the centre itself is inside: never empty
    return float(mean[1] - ref["A"]), float(mean[2] - ref["B"]), float(mean[0] - ref["L"])


def find_pale(
    lab: np.ndarray,
    mask: np.ndarray,
    valid: np.ndarray,
    params,
    skip_cut: bool = False,
    components: Optional[Tuple[int, np.ndarray]] = None,
) -> List[Cell]:
    """White cells too pale for the stain bar, found by their contrast to the field's own red cells.

    A washed-out field (overexposed: the pale cells' red and blue clip and their magenta goes) or a stain
    squeezed into another slide's narrower colour spread leaves real nuclei under ``cell_min_stain`` in A,
    while red-cell regions of a field whose white cells were painted out reach it too: no threshold on the
    stain alone tells them apart. Relative to the field's red cells they differ: a nucleus stays several
    times as magenta as the red cells beside it, a red-cell region no more than they are. A region passes
    when its A excess over the glass is at least ``pale_min_stain``, exceeds the red cells' (the median A
    of the dark pixels outside the mask) by ``pale_min_contrast`` and is ``pale_min_ratio`` times it, and
    it is bluer and darker than the glass as any cell. Only asked where no cell was found; the device
    flags such a field (no validation field needed this search) and the sample rule does not count it.
    """
    ref = _glass_reference(lab, mask, valid, params)
    if ref is None:
        return []
    light = lab[..., 0]
    outside = valid & ~mask
    dark = outside & (light <= pixels.otsu_threshold(light[outside][None, :]))
    if np.count_nonzero(dark) < _MIN_RED_CELL_PIXELS:
        return []  # no red cells to compare with: nothing to measure the contrast by
    red = _median_hist(cv2.calcHist([lab], [1], dark.astype(np.uint8), [256], [0, 256]).ravel()) - ref["A"]

    def accept(a: float, b: float, lightness: float) -> bool:
        return (
            a >= params.pale_min_stain
            and a - red >= params.pale_min_contrast
            and a >= params.pale_min_ratio * max(red, 0.5)
            and b <= params.cell_max_b_excess
            and lightness <= params.cell_max_l_excess
        )

    return _cells_at_maxima(lab, mask, params, ref, skip_cut, components, accept, pale=True)


# Fewer dark pixels outside the stained mask than this, and the field has no red cells to compare with.
_MIN_RED_CELL_PIXELS = 50


def _glass_reference(lab: np.ndarray, mask: np.ndarray, valid: np.ndarray, params) -> Optional[dict]:
    """Median L, A, B of the valid pixels outside the stained mask (the glass a cell is compared with), or
    None when there is no mask, no such pixel, or the background is too dark to be glass."""
    if not mask.any():
        return None
    bg = valid & ~mask
    if not bg.any():
        return None
    bg8 = bg.astype(np.uint8)
    ref = {k: _median_hist(cv2.calcHist([lab], [i], bg8, [256], [0, 256]).ravel()) for i, k in enumerate("LAB")}
    return ref if ref["L"] >= params.min_glass_lightness else None


def _nucleus_like(a: float, b: float, lightness: float, params, min_a: float = 0.0) -> bool:
    """A region's mean excess over the glass looks like a stained nucleus: magenta enough (at least
    ``cell_min_stain``, or ``min_a`` if higher), bluer and darker."""
    return (
        a >= max(params.cell_min_stain, min_a)
        and b <= params.cell_max_b_excess
        and lightness <= params.cell_max_l_excess
    )


def _median_hist(hist: np.ndarray) -> float:
    """np.median of the uint8 values a 256-bin histogram counts (a fraction of the time of a sort)."""
    cum = np.cumsum(hist)
    n = int(round(float(cum[-1])))
    lo = int(np.searchsorted(cum, (n - 1) // 2 + 1))
    hi = int(np.searchsorted(cum, n // 2 + 1))
    return (lo + hi) / 2.0


def crops_of(normalised: np.ndarray, cells: Sequence[Cell], window: int, out_size: int, fill) -> List[np.ndarray]:
    """One crop per cell of a field already normalised outside-in
    (:func:`edge.imaging.stain.normalised_cells`: cell pixels normalised, the rest ``fill``): the same bytes
    as fitting the stain, then converting each crop's cell pixels alone (what the device did before;
    ``tests/test_fast_paths.py`` keeps that as the reference)."""
    half = window // 2
    h, w = normalised.shape[:2]
    crops = []
    for c in cells:
        y0, x0 = c.y - half, c.x - half
        ys, xs = slice(max(y0, 0), min(y0 + window, h)), slice(max(x0, 0), min(x0 + window, w))
        if ys.stop - ys.start == window and xs.stop - xs.start == window:
            crop = normalised[ys, xs]
        else:  # beyond the border: the fill
            crop = pixels.filled((window, window, 3), fill)
            crop[ys.start - y0 : ys.stop - y0, xs.start - x0 : xs.stop - x0] = normalised[ys, xs]
        crops.append(np.ascontiguousarray(resampling.resize(crop, out_size, out_size) if window != out_size else crop))
    return crops


def carve_merged(
    lab: np.ndarray,
    mask: np.ndarray,
    valid: np.ndarray,
    params,
    skip_cut: bool = False,
) -> Tuple[List[Cell], Optional[np.ndarray], Optional[np.ndarray]]:
    """White cells merged with red cells into one stained region, carved out by their purple.

    Where a lab's red cells stain reddish (as magenta in A as the nuclei: BCCD's fields), the A-channel
    mask joins a white cell and the red cells touching it into one region whose mean colour is no
    nucleus's, and :func:`find_cells` passes it over (the device asks only when it found no cell at all).
    In every region deep enough to hold a cell, the pixels more purple than the region's Otsu split are a
    candidate (purple = A - B: a nucleus is magenta *and* blue, a red cell magenta and yellow), opened,
    dilated as the mask is, and kept on :func:`find_cells`' own tests (depth, border, stain excess over
    the glass), its A excess held to ``carve_min_stain``. Returns the cells (``carved``, largest first),
    the mask with each carved cell in place of its merged region and the carved cells' pixels alone (both
    None when nothing was carved).
    """
    ref = _glass_reference(lab, mask, valid, params)
    if ref is None:
        return [], None, None
    # The components again, with their bounding boxes: each region is worked on inside its box, grown by
    # what the opening and dilation can reach (the same pixels as on the whole field, a fraction of the work).
    mask8 = mask.astype(np.uint8)
    n_lab, labels, boxes, _ = cv2.connectedComponentsWithStats(mask8, connectivity=8)
    depth_all = _inscribed(mask8)
    purple = np.clip(lab[..., 1].astype(np.int16) - lab[..., 2].astype(np.int16) + 64, 0, 255).astype(np.uint8)
    opening = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (3, 3))
    grow = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * params.mask_dilate + 1,) * 2)
    pad = params.mask_dilate + 3
    h, w = mask.shape
    new_mask: Optional[np.ndarray] = None
    carved_px: Optional[np.ndarray] = None
    extra: List[Cell] = []
    for comp in range(1, n_lab):
        bx, by, bw, bh = (int(v) for v in boxes[comp, :4])
        y0, y1, x0, x1 = max(by - pad, 0), min(by + bh + pad, h), max(bx - pad, 0), min(bx + bw + pad, w)
        box = (slice(y0, y1), slice(x0, x1))
        region = labels[box] == comp
        if depth_all[box][region].max() < params.cell_min_radius:
            continue
        split = pixels.otsu_threshold(purple[box][region][None, :])
        sub = cv2.morphologyEx((region & (purple[box] > split)).astype(np.uint8), cv2.MORPH_OPEN, opening)
        sub = cv2.dilate(sub, grow) & valid[box].astype(np.uint8)
        n_sub, sub_labels = cv2.connectedComponents(sub, connectivity=8)
        depth = _inscribed(sub)  # zeros around it in the box: the same depths as on the whole field
        kept = np.zeros(region.shape, bool)
        for s in range(1, n_sub):
            m = sub_labels == s
            r = float(depth[m].max())
            if r < params.cell_min_radius:
                continue
            yb, xb = np.unravel_index(int(np.argmax(np.where(m, depth, 0))), m.shape)
            y, x = int(yb) + y0, int(xb) + x0
            if skip_cut and min(y, x, h - 1 - y, w - 1 - x) <= r + 1.0:
                continue
            px = lab[box][m]
            ex = {k: float(px[:, i].mean()) - ref[k] for i, k in enumerate("LAB")}
            if _nucleus_like(ex["A"], ex["B"], ex["L"], params, params.carve_min_stain):
                extra.append(Cell(y=y, x=x, radius=r, stain=ex["A"], carved=True))
                kept |= m
        if kept.any():
            new_mask = mask.copy() if new_mask is None else new_mask
            new_mask[box][region] = False
            new_mask[box] |= kept
            carved_px = np.zeros(mask.shape, bool) if carved_px is None else carved_px
            carved_px[box] |= kept
    extra.sort(key=lambda c: -c.radius)
    return extra[: params.max_cells], new_mask, carved_px


def _inscribed(mask8: np.ndarray) -> np.ndarray:
    """Each mask pixel's distance to the nearest pixel outside it, the image border counting as outside."""
    padded = cv2.copyMakeBorder(mask8, 1, 1, 1, 1, cv2.BORDER_CONSTANT, value=0)
    return cv2.distanceTransform(padded, cv2.DIST_L2, 5)[1:-1, 1:-1]

"""Decoding and preprocessing shared by the device and the trainer.

One function, :func:`preprocess`, turns decoded RGB pixels into the model input. The trainer imports it
so that the pixels a model is trained on are, byte for byte, the pixels the device feeds it. Every knob is
in :class:`PreprocessParams`, which is saved in the model card and read back by the device.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import List, Optional, Tuple

import numpy as np

from edge.imaging import resampling
from edge.imaging.cells import Cell, carve_merged, crops_of, find_cells, find_pale
from edge.imaging.decode import decode_file
from edge.imaging.optics import Optics, normalise
from edge.imaging.segmentation import (
    SegmentationStats,
    scale_bar_slice,
    segment_with_components,
    to_lab,
)
from edge.imaging.stain import normalised_cells

PREPROCESS_VERSION = "lab-kmeans-3"
# Version 1 and 2 cards read unchanged: the new parameters default to what those versions did.
KNOWN_VERSIONS = ("lab-kmeans-1", "lab-kmeans-2", PREPROCESS_VERSION)
INPUT_MODES = ("raw", "segmented", "balanced", "cell")


class UnknownPreprocessing(ValueError):
    """A model card asks for preprocessing this code does not implement."""


@dataclass(frozen=True)
class PreprocessParams:
    version: str = PREPROCESS_VERSION
    size: int = 224
    input_mode: str = "segmented"
    # Camera frames are 4:3; cells must keep their shape, so the centre square is used.
    crop: str = "center-square"
    # The slide scale-bar label sits in this bottom-right box (fractions of width/height). Its style (red
    # text, or black text on a white patch that reaches ~14 % up) correlates with class in the training
    # data, so the whole box is painted over before anything else sees it.
    scale_bar_box: Tuple[float, float] = (0.20, 0.17)
    blur_ksize: int = 5
    kmeans_k: int = 3
    kmeans_stride: int = 4  # fit on every 4th pixel in each direction: 3,136 samples at 224x224
    kmeans_iters: int = 20
    # Cells are only "present" when the stained cluster is this far above the background in A.
    min_stain_contrast: float = 10.0
    morph_open: int = 3
    morph_close: int = 7
    mask_dilate: int = 4
    min_component_px: int = 40
    background: Tuple[int, int, int] = (200, 200, 200)
    # "balanced" mode: the brightest pixels (empty glass) are mapped to a neutral grey, removing the slide's
    # tint, which in the training data identifies the slide (and so the class) rather than the cells.
    balance_percentile: float = 95.0
    balance_target: int = 235
    # "cell" mode (edge/imaging/cells.py): one crop per white cell, `cell_window` working pixels square (the largest
    # blasts are ~60 px across at 224), shown to the model at `cell_input` pixels.
    cell_window: int = 72
    cell_input: int = 112
    max_cells: int = 6
    cell_min_radius: float = 10.0  # inscribed radius of the (dilated) stained region, working pixels
    cell_min_stain: float = 11.0  # A-channel excess over the background, LAB units (uint8 scale)
    cell_spacing: float = 20.0  # two maxima closer than this are one cell
    # A stained nucleus is bluer and darker than the glass around it (every one of 2,550 real fields:
    # B excess <= -9, L excess <= -9); a photograph's brown or pink patches are not.
    cell_max_b_excess: float = -6.0
    cell_max_l_excess: float = -6.0
    # True: a maximum of the stained mask is a cell only if the stained pixels of its own disc pass the
    # colour test too, not just its whole region. Another lab's red cells touching a white cell share its
    # region, so each of their maxima passed on the white cell's colour and was scored as a white cell
    # (BCCD: 33 of 203 scored cells outside every annotated white cell). No Taleqani validation field
    # changes (edge/imaging/cells.py _cells_at_maxima).
    local_colour_test: bool = False
    # Another lab's red cells may stain as magenta as the nuclei: the A-channel mask then joins a white cell
    # and the red cells touching it, and no cell is found in the field. True: such regions are carved by
    # their purple (edge/imaging/cells.py carve_merged); the device flags every field that needed it.
    carve_merged: bool = False
    # A carved cell is held to a higher stain bar than `cell_min_stain`: no validation field supports it, and
    # the smudges inpainting leaves where white cells were painted out reach 13.6 (shared sets' carved
    # nuclei: 16.0 and more).
    carve_min_stain: float = 14.5
    # True: in a field whose white cells had to be carved, the stain is fitted on the carved cells' own
    # pixels. The rest of that field's stained mask is its red cells (they stain like nuclei there: that
    # is why the cells were merged), and a fit on all of it (BCCD: A 7, B -1 against the reference's 20,
    # -33) mapped the white cells to a saturated blue no training cell has; on their own pixels they land
    # next to the reference. No Taleqani validation field is carved, so none changes.
    carved_stain_fit: bool = False
    # A washed-out or squeezed stain leaves real nuclei under `cell_min_stain`, where painted-out fields'
    # red-cell regions reach too. True: a field with no cell found (and none carved) is searched again for
    # regions several times as magenta as its own red cells (edge/imaging/cells.py find_pale); the device
    # flags every field that needed it. Figures: README, "Another laboratory's microscope".
    pale_search: bool = False
    pale_min_stain: float = 7.0  # A excess over the glass, as `cell_min_stain`
    pale_min_contrast: float = 7.5  # ... minus the red cells' A excess
    pale_min_ratio: float = 4.0  # ... over the red cells' A excess (taken as at least 0.5)
    # True: a field whose glass is clipped white in every channel before any gain (the camera saturates:
    # pale cells' stain is clipped with it) is answered but sent to review with the reason. No validation
    # field's glass is (its darkest channel 245-247); every one is at +20 % exposure.
    clipped_glass_review: bool = False
    min_glass_lightness: float = 120.0  # median background L (uint8 LAB); real smears >= 200
    # Reinhard reference: background L, A, B means then spreads (float LAB), set by the trainer from its
    # training fields; `stain_max_gain` bounds the spread correction.
    stain_reference: Tuple[float, ...] = (89.5, -1.1, -7.2, 9.7, 4.0, 9.5)
    stain_max_gain: float = 2.0
    # Version 3 (edge/imaging/optics.py): "optical" brings every field to the training scale by its red cells and
    # the glass to `glass_reference`, keeps the whole field (any shape; `crop` must be "none"), scores no
    # cell cut by the border, and fits the stain transform on the stained cells themselves ("cells"):
    # fitted on the background, another lab's white cells land far outside ours.
    field_scale: str = "fixed"  # "fixed": crop and resize to size x size (v1, v2) | "optical"
    rbc_diameter_px: float = 15.0  # a red cell's median diameter in training fields (working pixels)
    # Measured magnifications within this band of 1 are left as they are: the training fields themselves
    # spread this much, and resampling by a measurement's noise would only blur them.
    scale_tolerance: Tuple[float, float] = (0.8, 1.25)
    glass_reference: Tuple[float, float, float] = (235.0, 235.0, 235.0)
    glass_max_gain: float = 2.5
    stain_fit: str = "background"  # "background" (v2) | "cells" | "cells-chroma" (cells, L left alone)

    def __post_init__(self):
        if self.version not in KNOWN_VERSIONS:
            raise UnknownPreprocessing(
                f"preprocessing {self.version!r} is not known to this edge-screen (it knows "
                f"{', '.join(map(repr, KNOWN_VERSIONS))})"
            )
        if self.input_mode not in INPUT_MODES:
            raise UnknownPreprocessing(f"input_mode {self.input_mode!r} is not one of {', '.join(INPUT_MODES)}")
        if self.input_mode == "cell" and self.version == "lab-kmeans-1":
            raise UnknownPreprocessing("input_mode 'cell' needs preprocessing 'lab-kmeans-2'")
        if len(self.stain_reference) != 6:
            raise UnknownPreprocessing("stain_reference must hold 3 means and 3 spreads")
        if self.crop not in ("center-square", "none"):
            raise UnknownPreprocessing(f"crop {self.crop!r} is not 'center-square' or 'none'")
        if self.field_scale not in ("fixed", "optical") or self.stain_fit not in (
            "background",
            "cells",
            "cells-chroma",
        ):
            raise UnknownPreprocessing(f"field_scale {self.field_scale!r} / stain_fit {self.stain_fit!r} unknown")
        if self.field_scale == "optical" and (self.version != PREPROCESS_VERSION or self.crop != "none"):
            raise UnknownPreprocessing("field_scale 'optical' needs preprocessing 'lab-kmeans-3' and crop 'none'")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> PreprocessParams:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise UnknownPreprocessing(f"unknown preprocessing parameter(s): {', '.join(unknown)}")
        kw = dict(d)
        for k in ("scale_bar_box", "background", "stain_reference", "scale_tolerance", "glass_reference"):
            if k in kw:
                kw[k] = tuple(kw[k])
        return cls(**kw)

    def with_mode(self, mode: str) -> PreprocessParams:
        return dataclasses.replace(self, input_mode=mode)

    @property
    def input_size(self) -> int:
        """Side of the model's input tensor: the field, or one cell crop."""
        return self.cell_input if self.input_mode == "cell" else self.size


@dataclass
class Preprocessed:
    model_input: Optional[np.ndarray]  # the first (or only) model input; None: a cell mode found no cell
    resized: np.ndarray  # size x size x 3 uint8 RGB, after crop/resize and label removal
    mask: np.ndarray  # size x size bool, stained cells
    stats: SegmentationStats
    # Everything the model is run on for this field: one array in the whole-field modes, one per cell in
    # "cell" mode (largest first; empty when no plausible white cell was found).
    model_inputs: List[np.ndarray] = field(default_factory=list)
    cells: List[Cell] = field(default_factory=list)
    optics: Optional[Optics] = None  # "optical" field scale: what was measured and undone
    cell_lab: Optional[Tuple[float, ...]] = None  # stained pixels' LAB means and spreads before normalisation


# ------------------------------------------------------------------------------------------ preprocess


@dataclass(frozen=True)
class OpticsSettings:
    """The microscope's side of optical normalisation (config ``[optics]``)."""

    px_per_um: Optional[float] = None  # of the camera's image; None: measure every field
    scale_source: str = "auto"  # "auto": measure, fall back to px_per_um | "config": always px_per_um


def decode_target(params: PreprocessParams) -> int:
    """Short side the decoder must keep: optical scaling needs the red cells at the camera's resolution
    (a large JPEG decoded at 1/8 would leave another microscope's red cells a few pixels across)."""
    return params.size * 2 if params.field_scale == "optical" else params.size


def working_field(
    rgb: np.ndarray,
    params: PreprocessParams,
    optics: OpticsSettings = OpticsSettings(),
    decode_factor: float = 1.0,
    known_magnification: Optional[float] = None,
) -> Tuple[np.ndarray, Optional[Optics]]:
    """The decoded image -> the field every later stage works on, and the optics record ("optical" only).

    "fixed": the centre square resized to ``size`` (v1, v2). "optical": the scale-bar box painted over,
    then :func:`edge.imaging.optics.normalise` (training scale, reference glass), the whole field kept.
    """
    if params.field_scale != "optical":
        return crop_resize(rgb, params), None
    painted = remove_scale_bar(rgb, params)
    out, rec = normalise(
        painted,
        params.rbc_diameter_px,
        params.glass_reference,
        params.glass_max_gain,
        optics.px_per_um,
        optics.scale_source,
        decode_factor,
        params.scale_tolerance,
        known_magnification,
    )
    return np.ascontiguousarray(out), rec


def crop_resize(rgb: np.ndarray, params: PreprocessParams) -> np.ndarray:
    if params.field_scale == "optical":
        return rgb  # :func:`working_field` has already brought it to the working scale
    h, w = rgb.shape[:2]
    if params.crop == "center-square" and h != w:
        s = min(h, w)
        y0, x0 = (h - s) // 2, (w - s) // 2
        rgb = rgb[y0 : y0 + s, x0 : x0 + s]
    if rgb.shape[0] != params.size or rgb.shape[1] != params.size:
        rgb = resampling.resize(rgb, params.size, params.size)  # area / bilinear, the same bytes on every CPU
    return np.ascontiguousarray(rgb)


def remove_scale_bar(rgb: np.ndarray, params: PreprocessParams) -> np.ndarray:
    """Paint the label box with the median colour of the rest of the image.

    The fill must not depend on anything inside or next to the box: the white patch behind one label
    style reaches above the text, and a fill sampled there would itself say which style it was.
    """
    ys, xs = scale_bar_slice(params, rgb.shape)
    out = rgb.copy()
    outside = np.ones(out.shape[:2], bool)
    outside[ys, xs] = False
    sample = out[::4, ::4][outside[::4, ::4]]
    out[ys, xs] = _median_u8(sample).astype(np.uint8)
    return out


def _median_u8(px: np.ndarray) -> np.ndarray:
    """``np.median(px, axis=0)`` of uint8 pixels (N x C), from each channel's 256-bin histogram: the
    middle value, or the mean of the two middle values, as float64 (exactly what np.median returns)."""
    if px.shape[0] == 0:
        return np.median(px, axis=0)
    n = px.shape[0]
    out = np.empty(px.shape[1])
    for c in range(px.shape[1]):
        cum = np.cumsum(np.bincount(px[:, c], minlength=256))
        lo = int(np.searchsorted(cum, (n - 1) // 2, side="right"))
        hi = int(np.searchsorted(cum, n // 2, side="right"))
        out[c] = (lo + hi) / 2.0
    return out


def white_balance(rgb: np.ndarray, params: PreprocessParams) -> np.ndarray:
    """Per-channel gain that makes the bright (glass) end of each channel equal: a white-patch balance."""
    ref = np.percentile(rgb[::4, ::4].reshape(-1, 3), params.balance_percentile, axis=0)
    gain = (params.balance_target / np.maximum(ref, 1.0)).astype(np.float32)
    return np.clip(rgb.astype(np.float32) * gain + 0.5, 0, 255).astype(np.uint8)


def preprocess(rgb: np.ndarray, params: PreprocessParams) -> Preprocessed:
    """RGB uint8 of any size -> model input(s) for ``params.input_mode`` plus segmentation statistics."""
    resized = remove_scale_bar(crop_resize(rgb, params), params)
    field_lab = to_lab(resized)
    mask, stats, components = segment_with_components(resized, params, field_lab)
    cells: List[Cell] = []
    cell_lab = None
    if params.input_mode == "raw":
        inputs = [resized]
    elif params.input_mode == "balanced":
        inputs = [white_balance(resized, params)]
    elif params.input_mode == "cell":
        valid = np.ones(mask.shape, bool)
        valid[scale_bar_slice(params, mask.shape)] = False
        cut = params.field_scale == "optical"
        cells = find_cells(field_lab, mask, valid, params, skip_cut=cut, components=components)
        carved_px: Optional[np.ndarray] = None
        if params.carve_merged and not cells:
            # Only a field that would be refused "no white cell found" is carved: every field with a cell
            # is exactly what it was when the card was validated.
            carved_cells, carved, carved_px = carve_merged(field_lab, mask, valid, params, cut)
            if carved is not None:
                # The carved cell replaces its merged region in the mask: the crop sees the white cell, not
                # the red cells it touched (the stain fit too with `carved_stain_fit`, below).
                cells, mask = carved_cells, carved
        if params.pale_search and not cells:
            cells = find_pale(field_lab, mask, valid, params, skip_cut=cut, components=components)
        inputs = []
        if cells:
            on_cells = params.stain_fit.startswith("cells")
            fit_on = mask & valid if on_cells else valid & ~mask
            if on_cells and params.carved_stain_fit and carved_px is not None:
                fit_on = carved_px & valid
            stain, normalised = normalised_cells(
                resized,
                mask,
                fit_on,
                params.stain_reference,
                params.stain_max_gain,
                params.stain_fit == "cells-chroma",
                params.background,
            )
            cell_lab = tuple(round(float(v), 2) for v in stain.source)
            inputs = crops_of(normalised, cells, params.cell_window, params.cell_input, params.background)
    else:
        seg = np.empty_like(resized)
        seg[:] = np.array(params.background, dtype=np.uint8)
        seg[mask] = resized[mask]
        inputs = [seg]
    return Preprocessed(
        model_input=inputs[0] if inputs else None,
        resized=resized,
        mask=mask,
        stats=stats,
        model_inputs=inputs,
        cells=cells,
        cell_lab=cell_lab,
    )


def preprocess_image(
    rgb: np.ndarray, params: PreprocessParams, optics: OpticsSettings = OpticsSettings(), decode_factor: float = 1.0
) -> Preprocessed:
    """A decoded image of any size -> :func:`working_field` then :func:`preprocess` (what the device runs)."""
    fld, rec = working_field(rgb, params, optics, decode_factor)
    pre = preprocess(fld, params)
    pre.optics = rec
    return pre


def preprocess_file(path: str | Path, params: PreprocessParams) -> Preprocessed:
    """A file as the device reads it (decoded at the card's target size) through :func:`preprocess_image`:
    what `scripts/model_inputs.py` digests."""
    img = decode_file(path, target=decode_target(params))
    return preprocess_image(img.rgb, params, decode_factor=img.scale)

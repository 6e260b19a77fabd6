"""Training data for the cell-grounded model: one crop per white cell, labelled with its field's class.

Every crop comes out of :func:`edge.imaging.preprocess.preprocess`, the function the device runs, so a crop the
model is trained on is byte for byte what the device would show it for that (possibly degraded) field.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Callable, List, Optional, Sequence

import numpy as np

from edge.imaging.decode import decode_file
from edge.imaging.optics import glass_colour, measure_rbc_diameter
from edge.imaging.preprocess import (
    PreprocessParams,
    crop_resize,
    decode_target,
    preprocess,
    preprocess_image,
    remove_scale_bar,
    working_field,
)
from edge.imaging.segmentation import scale_bar_slice, segment
from edge.imaging.stain import background_stats
from edge.inference.classifier import Classifier

from .augment import (
    CaptureAugment,
    cells_onto_slide,
    lab_stats,
    onto_other_slide,
    reinhard_to,
    rescale,
    white_cell_regions,
)
from .data import Sample


@dataclass
class CellSet:
    x: np.ndarray  # N x s x s x 3 uint8: the model inputs
    y: np.ndarray  # N: the field's class
    field: np.ndarray  # N: index into the sample list of the field the crop came from
    copy: np.ndarray  # N: 0 for the clean field, k for its k-th augmented copy
    no_cell: List[int]  # clean fields in which preprocessing found no white cell

    def clean(self) -> CellSet:
        keep = self.copy == 0
        return CellSet(self.x[keep], self.y[keep], self.field[keep], self.copy[keep], self.no_cell)

    def subset(self, idx: np.ndarray) -> CellSet:
        return CellSet(self.x[idx], self.y[idx], self.field[idx], self.copy[idx], self.no_cell)


def _decoded(sample: Sample, params: PreprocessParams) -> np.ndarray:
    return decode_file(sample.path, target=decode_target(params)).rgb


def stain_reference(samples: Sequence[Sample], params: PreprocessParams, n: int = 400) -> dict:
    """The normalisation targets from evenly spaced primary-source training fields.

    Version 2 ("fixed" scale): the background's mean LAB statistics. Version 3 ("optical"): the red
    cells' median diameter (the training scale), the mean glass colour, then the stained cells' own LAB
    statistics measured on fields already brought to that scale and glass.
    """
    primary = [s for s in samples if s.source == "taleqani"] or list(samples)
    pick = np.linspace(0, len(primary) - 1, min(n, len(primary))).astype(int)
    raw = [remove_scale_bar(_decoded(primary[i], params), params) for i in pick]
    out: dict = {}
    if params.field_scale == "optical":
        diam = [d for d, _ in (measure_rbc_diameter(r) for r in raw) if d is not None]
        glass = [glass_colour(r) for r in raw]
        out["rbc_diameter_px"] = round(float(np.median(diam)), 2)
        out["glass_reference"] = tuple(round(float(v), 1) for v in np.mean(glass, axis=0))
        params = dataclasses.replace(params, **out)
    stats = []
    for r in raw:
        fld = working_field(r, params)[0]
        mask, _ = segment(fld, params)
        valid = np.ones(mask.shape, bool)
        valid[scale_bar_slice(params, mask.shape)] = False
        on_cells = params.stain_fit.startswith("cells")
        region = (mask & valid) if on_cells else (valid & ~mask)
        if on_cells and np.count_nonzero(region) < 64:
            continue
        stats.append(background_stats(fld, region))
    out["stain_reference"] = tuple(round(float(v), 3) for v in np.mean(stats, axis=0))
    return out


def colour_target_picker(
    fields: Sequence[np.ndarray], sources: Sequence[str], mode: str = "fields"
) -> Callable[[np.random.Generator], np.ndarray]:
    """Draws the colour statistics a recoloured training copy is moved onto, from every 7th field.

    "fields": any of them, so each laboratory's colours come up as often as it has fields (2,056 Taleqani
    and 2,560 PBC training images against BCCD's 137: a blast is almost never seen in BCCD's pale
    colours, while every BCCD field is benign, which lets "looks like BCCD" mean benign). "per-source": a
    laboratory first, each as likely, then one of its fields, so every laboratory's colours reach every
    class equally often.
    """
    if mode not in ("fields", "per-source"):
        raise ValueError(f"colour targets: {mode!r} is not fields or per-source")
    if mode == "fields":
        stats = [lab_stats(f) for f in fields[::7]]
        return lambda rng: stats[int(rng.integers(len(stats)))]
    groups = [
        [lab_stats(f) for f in [f for f, s in zip(fields, sources) if s == src][::7]] for src in dict.fromkeys(sources)
    ]

    def pick(rng: np.random.Generator) -> np.ndarray:
        group = groups[int(rng.integers(len(groups)))]
        return group[int(rng.integers(len(group)))]

    return pick


def slide_picker(sources: Sequence[str], usable: Sequence[bool]) -> Callable[[np.random.Generator], int]:
    """Draws the field whose slide a training copy's white cells are moved onto: a laboratory first, each
    as likely, then one of its usable fields (``usable``: it has a cell mask), so a laboratory that gave
    few fields (BCCD's ~140 of ~4,800) lends its slide to every class as often as the others."""
    groups = [
        [i for i, (s, ok) in enumerate(zip(sources, usable)) if ok and s == src]
        for src in dict.fromkeys(s for s, ok in zip(sources, usable) if ok)
    ]

    def pick(rng: np.random.Generator) -> int:
        group = groups[int(rng.integers(len(groups)))]
        return group[int(rng.integers(len(group)))]

    return pick


def build_cellset(
    samples: Sequence[Sample],
    params: PreprocessParams,
    copies: int = 0,
    max_cells: Optional[int] = None,
    augment: CaptureAugment = CaptureAugment(),
    seed: int = 0,
    progress: Optional[Callable[[int, int], None]] = None,
    other_copies: Optional[int] = None,
    colour_targets: str = "fields",
    slide_targets: str = "fields",
) -> CellSet:
    """Crops of every field, plus ``copies`` augmented versions of each field (``other_copies`` for the
    other laboratories' images): some with the cells moved onto another field's slide, some resampled to
    another magnification, the colours onto another field's (of any source), all with stain and capture
    changes. Every copy then goes through the device's own :func:`edge.imaging.preprocess.preprocess_image`.

    ``max_cells`` caps the crops taken per field (the largest cells first) so that crowded fields do not
    outweigh sparse ones in training. ``colour_targets``: how a recoloured copy's target is drawn
    (:func:`colour_target_picker`). ``slide_targets``: whose slide a copy's cells are moved onto: "fields"
    (another field of the same size, the recipe's, the cells where they were) or "per-source"
    (:func:`slide_picker`, :func:`trainer.augment.cells_onto_slide`: the cells at random places of a field of
    any laboratory, both at the training scale).
    """
    if slide_targets not in ("fields", "per-source"):
        raise ValueError(f"slide targets: {slide_targets!r} is not fields or per-source")
    if params.input_mode != "cell":
        raise ValueError("build_cellset needs input_mode 'cell'")
    p = dataclasses.replace(params, max_cells=max_cells) if max_cells else params
    rng = np.random.default_rng(seed)
    raws = [_decoded(s, p) for s in samples]
    n_copies = [copies if (s.source == "taleqani" or other_copies is None) else other_copies for s in samples]
    fields, masks = [], []
    for r, k in zip(raws, n_copies):  # working fields and cell masks, for pasting cells onto other slides
        f = remove_scale_bar(r, p) if p.field_scale == "optical" else remove_scale_bar(crop_resize(r, p), p)
        fields.append(f)
        masks.append(segment(f, p)[0] if k else None)
    pick_colour = colour_target_picker(fields, [s.source for s in samples], colour_targets) if copies else None
    # "per-source": the fields at the training scale with the glass at the reference (the device's own
    # working fields), so that a cell moved onto another laboratory's slide keeps its size beside that
    # slide's red cells, and the glass around it matches. Another laboratory's red cells stain into the
    # mask: painting the whole mask out would take the slide away with the white cells, so only the
    # regions holding a found cell move.
    work: List[Optional[np.ndarray]] = [None] * len(fields)
    cells_only: List[Optional[np.ndarray]] = [None] * len(fields)
    pick_slide = None
    if slide_targets == "per-source" and copies:
        for i, (r, k) in enumerate(zip(raws, n_copies)):
            if k:
                work[i] = working_field(r, p)[0]
                pre = preprocess(work[i], p)
                cells_only[i] = white_cell_regions(pre.mask, [(c.y, c.x) for c in pre.cells])
        # A slide lends itself only where the device found its white cells (they are painted out); a field
        # lends its cells only where it has some.
        pick_slide = slide_picker([s.source for s in samples], [m is not None and m.any() for m in cells_only])
    xs, ys, fs, cs, none = [], [], [], [], []
    total, done = sum(1 + k for k in n_copies), 0
    for i, s in enumerate(samples):
        for k in range(1 + n_copies[i]):
            img = fields[i]
            if k:
                if pick_slide is not None:
                    own, here = cells_only[i], work[i]
                    if rng.random() < augment.p_other_slide:
                        j = pick_slide(rng)
                        other, there = cells_only[j], work[j]
                        if j != i and own is not None and here is not None and there is not None:
                            keep_out = np.zeros(there.shape[:2], bool)
                            keep_out[scale_bar_slice(p, there.shape)] = True
                            moved = cells_onto_slide(here, own, there, other, rng, keep_out, p.max_cells)
                            img = img if moved is None else moved
                elif len(fields) > 1 and rng.random() < augment.p_other_slide:
                    j = int(rng.integers(len(fields) - 1))
                    j += j >= i
                    if fields[j].shape == img.shape and masks[j] is not None:
                        img = onto_other_slide(img, masks[i], fields[j], masks[j])
                if rng.random() < augment.p_reinhard and pick_colour is not None:
                    img = reinhard_to(img, pick_colour(rng))
                img = augment(img, rng)
                if p.field_scale == "optical" and rng.random() < augment.p_rescale:
                    img = rescale(img, rng, *augment.rescale)
            crops = preprocess_image(img, p).model_inputs
            if not crops and k == 0:
                none.append(i)
            xs.extend(crops)
            ys.extend([s.y] * len(crops))
            fs.extend([i] * len(crops))
            cs.extend([k] * len(crops))
            done += 1
            if progress:
                progress(done, total)
    size = p.input_size
    x = np.stack(xs) if xs else np.zeros((0, size, size, 3), np.uint8)
    return CellSet(
        x=x, y=np.array(ys, np.int64), field=np.array(fs, np.int64), copy=np.array(cs, np.int64), no_cell=none
    )


def cell_embeddings(clf: Classifier, x: np.ndarray, batch: int = 64) -> np.ndarray:
    """The embedding of each crop as it lies (the device's :meth:`Classifier.invoke_batch`)."""
    out = [clf.invoke_batch(x[i : i + batch])[1] for i in range(0, len(x), batch)]
    return np.concatenate([e for e in out if e is not None]).astype(np.float32)

"""Training data for the cell-grounded model: one crop per white cell, labelled with its field's class.

Every crop comes out of :func:`edge.preprocess.preprocess`, the function the device runs, so a crop the
model is trained on is byte for byte what the device would show it for that (possibly degraded) field.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Callable, List, Optional, Sequence

import numpy as np

from edge.cells import background_stats
from edge.decode import decode_file
from edge.preprocess import PreprocessParams, crop_resize, preprocess, remove_scale_bar, scale_bar_slice, segment

from .augment import CaptureAugment, lab_stats, onto_other_slide, reinhard_to
from .data import Sample


@dataclass
class CellSet:
    x: np.ndarray  # N x s x s x 3 uint8: the model inputs
    y: np.ndarray  # N: the field's class
    field: np.ndarray  # N: index into the sample list of the field the crop came from
    copy: np.ndarray  # N: 0 for the clean field, k for its k-th augmented copy
    no_cell: List[int]  # clean fields in which preprocessing found no white cell

    def clean(self) -> "CellSet":
        keep = self.copy == 0
        return CellSet(self.x[keep], self.y[keep], self.field[keep], self.copy[keep], self.no_cell)

    def subset(self, idx: np.ndarray) -> "CellSet":
        return CellSet(self.x[idx], self.y[idx], self.field[idx], self.copy[idx], self.no_cell)


def stain_reference(samples: Sequence[Sample], params: PreprocessParams, n: int = 400) -> tuple:
    """Mean background LAB statistics over evenly spaced training fields: the normalisation target."""
    pick = np.linspace(0, len(samples) - 1, min(n, len(samples))).astype(int)
    stats = []
    for i in pick:
        resized = remove_scale_bar(crop_resize(decode_file(samples[i].path, target=params.size).rgb, params), params)
        mask, _ = segment(resized, params)
        valid = np.ones(mask.shape, bool)
        valid[scale_bar_slice(params)] = False
        stats.append(background_stats(resized, valid & ~mask))
    return tuple(round(float(v), 3) for v in np.mean(stats, axis=0))


def build_cellset(samples: Sequence[Sample], params: PreprocessParams, copies: int = 0,
                  max_cells: Optional[int] = None, augment: CaptureAugment = CaptureAugment(), seed: int = 0,
                  progress: Optional[Callable[[int, int], None]] = None) -> CellSet:
    """Crops of every field, plus ``copies`` augmented versions of each field: some with the cells moved
    onto another field's slide or the field's colours onto another field's, all with capture changes.

    ``max_cells`` caps the crops taken per field (the largest cells first) so that crowded fields do not
    outweigh sparse ones in training.
    """
    if params.input_mode != "cell":
        raise ValueError("build_cellset needs input_mode 'cell'")
    p = dataclasses.replace(params, max_cells=max_cells) if max_cells else params
    rng = np.random.default_rng(seed)
    fields, masks = [], []
    for s in samples:  # working-size fields and cell masks, for pasting cells onto other slides
        f = remove_scale_bar(crop_resize(decode_file(s.path, target=p.size).rgb, p), p)
        fields.append(f)
        masks.append(segment(f, p)[0] if copies else None)
    stats = [lab_stats(f) for f in fields[::7]] if copies else []
    xs, ys, fs, cs, none = [], [], [], [], []
    total = len(samples) * (1 + copies)
    for i, s in enumerate(samples):
        for k in range(1 + copies):
            img = fields[i]
            if k:
                if len(fields) > 1 and rng.random() < augment.p_other_slide:
                    j = int(rng.integers(len(fields) - 1))
                    j += j >= i
                    img = onto_other_slide(img, masks[i], fields[j], masks[j])
                if rng.random() < augment.p_reinhard:
                    img = reinhard_to(img, stats[int(rng.integers(len(stats)))])
                img = augment(img, rng)
            crops = preprocess(img, p).model_inputs
            if not crops and k == 0:
                none.append(i)
            xs.extend(crops)
            ys.extend([s.y] * len(crops))
            fs.extend([i] * len(crops))
            cs.extend([k] * len(crops))
            if progress:
                progress(i * (1 + copies) + k + 1, total)
    size = p.input_size
    x = np.stack(xs) if xs else np.zeros((0, size, size, 3), np.uint8)
    return CellSet(x=x, y=np.array(ys, np.int64), field=np.array(fs, np.int64), copy=np.array(cs, np.int64),
                   no_cell=none)

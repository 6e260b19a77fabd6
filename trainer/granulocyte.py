"""Fit the device's immature-granulocyte check (:mod:`edge.inference.granulocyte`) on the training cells.

The model learnt immature granulocytes (PBC's ``ig`` type: promyelocytes, myelocytes, metamyelocytes) as
Benign and calls them so with certainty; in peripheral blood they call for a person, and a myeloid blast
could be read the same way. Their pooled features still differ from the other types', so a linear
discriminant of the embedding (Fisher's, with the within-class covariance shrunk toward the identity: 1,280
features, a few hundred training cells of the type) separates them. Fitted on the training split's cells
only; the card reports what it flags on every held-out part.
"""

from __future__ import annotations

from typing import Dict, List, Sequence

import numpy as np

from edge.inference.classifier import Classifier
from edge.inference.granulocyte import GranulocyteCheck

from .cellset import CellSet, cell_embeddings
from .data import Sample

TYPE = "ig"  # the PBC folder of immature granulocytes
SHRINK = 0.3  # weight of the identity in the within-class covariance (standardised features)
FLAG_SHARE = 0.9  # the threshold flags this share of the clean training cells of the type
COPIES = 2  # augmented copies of each field the read-out is fitted on (another stain, lamp, magnification)
N_OTHER = 8000  # at most this many of their cells, evenly spaced
OTHER_EVERY = 5  # of the other types' training fields, every 5th (about 3,000 cells, as many again augmented)


def is_type(s: Sample) -> bool:
    return s.source == "pbc" and s.path.parent.name.lower() == TYPE


def training_fields(train: Sequence[Sample], every: int = OTHER_EVERY) -> List[Sample]:
    """Every training field of the type and every ``every``-th of the others."""
    return [s for s in train if is_type(s)] + [s for s in train if not is_type(s)][::every]


def fit(clf: Classifier, cells: CellSet, samples: Sequence[Sample], n_other: int = N_OTHER) -> GranulocyteCheck:
    """Every cell of the type against up to ``n_other`` evenly spaced cells of the others, clean and augmented
    copies alike (:func:`trainer.cellset.build_cellset` with copies): the direction is fitted across stains,
    lamps and magnifications, so another laboratory's stain does not move a cell across it. The threshold
    flags :data:`FLAG_SHARE` of the type's clean training cells."""
    pos = np.array([is_type(samples[f]) for f in cells.field])
    if not pos.any():
        raise ValueError(f"no training cell of type {TYPE!r}: train with the pbc source")
    others = np.flatnonzero(~pos)
    others = others[np.linspace(0, len(others) - 1, min(n_other, len(others))).astype(int)]
    ep, en = cell_embeddings(clf, cells.x[pos]), cell_embeddings(clf, cells.x[others])
    both = np.concatenate([ep, en])
    mu, sd = both.mean(0), both.std(0) + 1e-3
    zp, zn = (ep - mu) / sd, (en - mu) / sd
    within = (np.cov(zp.T) * (len(zp) - 1) + np.cov(zn.T) * (len(zn) - 1)) / (len(zp) + len(zn) - 2)
    within = (1 - SHRINK) * within + SHRINK * np.eye(len(within))
    w = np.linalg.solve(within, zp.mean(0) - zn.mean(0))
    # Folded into one vector and a bias, so that the device computes one product per cell.
    check = GranulocyteCheck(weights=(w / sd).astype(np.float32), bias=float(-(mu / sd) @ w), threshold=0.0)
    clean = cells.copy[pos] == 0
    check.threshold = round(float(np.quantile(np.array(check.scores(ep))[clean], 1 - FLAG_SHARE)), 3)
    return check


def flagged_share(hit: np.ndarray, field: np.ndarray, samples: Sequence[Sample], group) -> Dict[str, float]:
    """Per group (a sample's type or class), the share of fields with at least one flagged cell (``hit`` per
    cell, ``field``: each cell's index into ``samples``, as a :class:`CellSet` has them)."""
    fields: Dict[int, bool] = {}
    for f, h in zip(field, hit):
        fields[int(f)] = fields.get(int(f), False) or bool(h)
    by: Dict[str, List[bool]] = {}
    for f, h in fields.items():
        by.setdefault(group(samples[f]), []).append(h)
    return {g: round(float(np.mean(v)), 4) for g, v in sorted(by.items())}


def card_section(check: GranulocyteCheck, file: str, sha256: str, n_pos: int, n_other: int) -> dict:
    return {
        "file": file,
        "sha256": sha256,
        "threshold": check.threshold,
        "method": f"Fisher discriminant of the standardised embedding ({TYPE!r} training cells against every "
        f"{OTHER_EVERY}th other training field's, each field with {COPIES} augmented copies; covariance shrunk "
        f"{SHRINK} toward the identity); threshold flags {FLAG_SHARE:.0%} of the clean training cells of the type",
        "train_cells": {TYPE: n_pos, "other": n_other},
    }

"""The domain monitor's novelty reference (edge/inference/novelty.py), fitted on the primary source's cells.

Only the primary source's (Taleqani's) training cells make the reference: they are what sensitivity was
validated on, and the question the monitor asks is "is this like those", not "is this like anything the
network was trained on" (the OOD reference's question, whose training cells include the other
laboratories' normal cells). A fixed, evenly spaced sample keeps the file and the per-cell cost small:
measured on model 3.6.0's embeddings (``/tmp`` script; held-out PBC / BCCD cells against Taleqani
validation cells), 500, 1,000, 2,000 or all 10,219 reference cells and k 5-20 gave AUROCs 0.98-0.99 /
0.92-0.94; the whitened distance of the OOD reference gave 0.89 / 0.37 fitted on the same cells.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from edge.inference.classifier import Classifier, sha256_file
from edge.inference.novelty import NoveltyReference

from .cellset import CellSet, cell_embeddings
from .data import Sample

CELLS = 500  # reference cells kept (float16, compressed: ~0.45 MB beside the model)
K = 10  # nearest neighbours averaged


def fit(
    clf: Classifier, cells: CellSet, samples: Sequence[Sample], source: str, n: int = CELLS, k: int = K
) -> NoveltyReference:
    """A reference of ``n`` of ``source``'s clean cells in ``cells`` (evenly spaced through the set, so every
    class and block is in it), as the device will load it."""
    mine = np.flatnonzero((cells.copy == 0) & np.array([samples[f].source == source for f in cells.field]))
    if len(mine) < k:
        raise ValueError(f"{len(mine)} {source} cells: too few for a novelty reference with k={k}")
    pick = mine[np.linspace(0, len(mine) - 1, min(n, len(mine))).astype(int)]
    return NoveltyReference.of(cell_embeddings(clf, cells.x[pick]), k)


def card_section(path: Path, ref: NoveltyReference, source: str) -> dict:
    return {
        "file": path.name,
        "sha256": sha256_file(path),
        "method": f"1 - mean cosine similarity of a cell's embedding to its {ref.k} nearest of {len(ref.cells)} "
        f"{source} training cells (Sun et al. 2022); the monitor's cell_novelty is a field's median",
        "k": ref.k,
        "cells": len(ref.cells),
        "source": source,
    }

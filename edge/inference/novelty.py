"""How unlike the validated laboratory's cells a cell is: the nearest-neighbour novelty of its embedding.

The out-of-distribution reference (:class:`edge.inference.ood.OodReference`) answers "is this a
cell at all": it is fitted on every training cell, other laboratories' normal cells included (they were
learnt as benign), and measures the distance from their centre, so photographs land far out but another
laboratory's cells land inside (AUROC 0.74 against PBC's held-out cells, 0.38 against BCCD's, card 3.6.0).
The domain monitor asks something else: does this cell look like the cells the model was *validated* on?
That is answered against the primary source's training cells alone, by their nearest neighbours rather
than one centre (Sun et al. 2022, "Out-of-distribution detection with deep nearest neighbors"): the
cosine similarity of the cell's embedding to each of a fixed sample of those cells, and novelty = 1 minus
the mean of the ``k`` highest. Whitening the embedding or keeping only the primary cells' principal axes
loses it: other laboratories differ along directions in which the primary cells hardly vary.

Stored beside the model as ``<model>.novelty.npz`` (the reference cells' unit embeddings, float16), its
sha256 and ``k`` in the card's ``novelty`` section; the card's ``validated_range`` holds the upper end of a
field's median novelty over the validation fields, and the monitor sends a field beyond it to review.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional

import numpy as np

from edge.inference.card import ModelCard, ModelLoadError, companion

__all__ = ["NoveltyReference", "novelty_path_for"]


@dataclass
class NoveltyReference:
    cells: np.ndarray  # n x d float32: the reference cells' embeddings, unit length (as stored, float16)
    k: int

    def novelty(self, embs: np.ndarray) -> List[float]:
        """1 - the mean cosine similarity of each row to its ``k`` most similar reference cells (0: one of
        them; 1: nothing alike; 1.0 for an all-zero embedding). Row by row (one matrix-vector product each),
        as the OOD distances: a product over all rows at once sums in another order."""
        out = []
        for e in embs:
            v = np.asarray(e, np.float32)
            norm = float(np.sqrt(v @ v))
            if norm == 0.0:
                out.append(1.0)
                continue
            sim = self.cells @ (v / np.float32(norm))
            top = np.partition(sim, len(sim) - self.k)[len(sim) - self.k :]
            out.append(1.0 - float(np.sort(top).mean()))
        return out

    @classmethod
    def of(cls, embs: np.ndarray, k: int) -> NoveltyReference:
        """A reference of these embeddings (rows), made unit length and rounded to float16 as saved."""
        e = np.asarray(embs, np.float32)
        unit = e / np.maximum(np.linalg.norm(e, axis=1, keepdims=True), 1e-12)
        return cls(cells=unit.astype(np.float16).astype(np.float32), k=int(k))

    def save(self, path: str | Path) -> None:
        np.savez_compressed(path, cells=self.cells.astype(np.float16), k=np.int32(self.k))

    @classmethod
    def load(cls, path: str | Path) -> NoveltyReference:
        with np.load(path) as z:
            return cls(cells=z["cells"].astype(np.float32), k=int(z["k"]))

    @classmethod
    def for_model(cls, model_path: Path, card: ModelCard) -> Optional[NoveltyReference]:
        spec = card.novelty
        if spec is None:
            return None
        ref = cls.load(companion(model_path, spec.file, spec.sha256, "novelty reference"))
        if not 1 <= ref.k <= len(ref.cells):
            raise ModelLoadError(f"novelty reference {spec.file}: k {ref.k} for {len(ref.cells)} cells")
        return ref


def novelty_path_for(model_path: str | Path) -> Path:
    return Path(model_path).with_suffix(".novelty.npz")

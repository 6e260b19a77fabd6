"""Cells like an immature granulocyte: a linear read-out of the model's embedding that sends them to review.

The model was trained on lymphoid cells and on other laboratories' normal cells, immature granulocytes
(promyelocytes, myelocytes, metamyelocytes) among them as Benign, and it calls those benign with
certainty. In peripheral blood they are not a normal finding (a left shift, an infection, or a myeloid
leukaemia such as APL, whose promyelocytes are the blasts), and no myeloid blast was there to train on.
The network's pooled features still tell them apart from the other cell types (the card's
``granulocyte_check``), so a field with such a cell is sent to a person whatever its score, with a reason.
Stored beside the model as ``<model>.granulocyte.npz`` (weights, bias), its sha256 and threshold in the card.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional

import numpy as np

from edge.inference.card import ModelCard, companion

__all__ = ["GranulocyteCheck", "granulocyte_path_for"]


@dataclass
class GranulocyteCheck:
    """``weights @ embedding + bias`` per cell; at or above ``threshold`` the cell is like an immature granulocyte."""

    weights: np.ndarray  # d
    bias: float
    threshold: float

    def scores(self, embs: np.ndarray) -> List[float]:
        """The read-out of each row. Row by row (a vector product each), as the OOD distances: one matrix
        product over all rows sums in another order and can move the last float32 bit."""
        return [float(self.weights @ np.asarray(e, np.float32)) + self.bias for e in embs]

    def flagged(self, embs: np.ndarray) -> Optional[float]:
        """The highest read-out when some cell reaches the threshold, else None."""
        s = self.scores(embs)
        return max(s) if s and max(s) >= self.threshold else None

    def save(self, path: str | Path) -> None:
        np.savez(path, weights=self.weights.astype(np.float32), bias=np.float32(self.bias))

    @classmethod
    def load(cls, path: str | Path, threshold: float) -> GranulocyteCheck:
        with np.load(path) as z:
            return cls(weights=z["weights"].astype(np.float32), bias=float(z["bias"]), threshold=threshold)

    @classmethod
    def for_model(cls, model_path: Path, card: ModelCard) -> Optional[GranulocyteCheck]:
        spec = card.granulocyte_check
        if spec is None:
            return None
        return cls.load(companion(model_path, spec.file, spec.sha256, "granulocyte check"), spec.threshold)


def granulocyte_path_for(model_path: str | Path) -> Path:
    return Path(model_path).with_suffix(".granulocyte.npz")

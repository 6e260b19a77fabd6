"""Is this a cell at all: the out-of-distribution reference of the model's embedding.

Fitted by the trainer on the training cells (:func:`trainer.finalize.fit_ood`); a cell whose embedding lies
beyond ``max_distance`` is not counted, and a field left with none is refused "not a blood smear"
(:meth:`edge.inference.classifier.Classifier.predict_field`). Stored beside the model as
``<model>.ood.npz``, named and verified by the card's ``ood`` section.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional

import numpy as np

from edge.inference.card import ModelCard, companion

__all__ = ["OodReference", "ood_path_for"]


@dataclass
class OodReference:
    """Where the training cells' embeddings lie: mean, principal axes and their spreads (whitened PCA).

    The distance of a new embedding is its Mahalanobis distance in those axes plus the part of it the
    axes do not explain (in units of the training residual), so both "unusual mix of familiar features"
    and "features the training cells never had" count. Stored beside the model as ``<model>.ood.npz``.
    """

    mean: np.ndarray
    axes: np.ndarray  # k x d
    sd: np.ndarray  # k
    residual_sd: float
    max_distance: float

    def distance(self, emb: np.ndarray) -> float:
        c = np.asarray(emb, np.float32) - self.mean
        z = self.axes @ c
        resid = float(np.sqrt(max(float(c @ c) - float(z @ z), 0.0)))
        return float(np.sqrt(np.mean((z / self.sd) ** 2)) + resid / self.residual_sd) / 2.0

    def distances(self, embs: np.ndarray) -> List[float]:
        """:meth:`distance` of each row. Row by row on purpose: one matrix product over all rows sums in
        another order (BLAS gemm, not gemv) and can move a distance's last float32 bit."""
        return [self.distance(e) for e in embs]

    def save(self, path: str | Path) -> None:
        np.savez(
            path,
            mean=self.mean,
            axes=self.axes,
            sd=self.sd,
            residual_sd=self.residual_sd,
            max_distance=self.max_distance,
        )

    @classmethod
    def load(cls, path: str | Path) -> OodReference:
        with np.load(path) as z:
            return cls(
                mean=z["mean"].astype(np.float32),
                axes=z["axes"].astype(np.float32),
                sd=z["sd"].astype(np.float32),
                residual_sd=float(z["residual_sd"]),
                max_distance=float(z["max_distance"]),
            )

    @classmethod
    def for_model(cls, model_path: Path, card: ModelCard) -> Optional[OodReference]:
        meta = card.ood
        if meta is None:
            return None
        return cls.load(companion(model_path, meta.file, meta.sha256, "out-of-distribution reference"))


def ood_path_for(model_path: str | Path) -> Path:
    return Path(model_path).with_suffix(".ood.npz")

"""Inference on the device: a TFLite model plus its JSON model card. Never imports TensorFlow."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple, Union

import numpy as np

from edge.imaging.preprocess import PreprocessParams
from edge.inference.backends import BackendUnavailable, load_backend
from edge.inference.card import (
    CARD_SCHEMA,
    CELL_RULES,
    DEFAULT_MODEL,
    MODELS_DIR,
    ModelCard,
    ModelLoadError,
    card_path_for,
    load_card,
    sha256_file,
)
from edge.inference.granulocyte import GranulocyteCheck
from edge.inference.novelty import NoveltyReference
from edge.inference.ood import OodReference
from edge.vocabulary import BENIGN, GRANULOCYTE, LABELS, NO_CELL

__all__ = [
    "BENIGN",
    "LABELS",
    "CARD_SCHEMA",
    "CELL_RULES",
    "Classifier",
    "FieldPrediction",
    "ModelCard",
    "ModelLoadError",
    "Prediction",
    "card_path_for",
    "classifier_from_config",
    "combine_cells",
    "load_card",
    "model_files",
    "sha256_file",
    "DEFAULT_MODEL",
    "MODELS_DIR",
]


def model_files(model_path: str | Path) -> List[Path]:
    """Every file a model is: the .tflite, its card, the companions its card names (the OOD reference, the
    granulocyte check, the novelty reference) and its report where there is one. What installing or copying
    a model must carry."""
    src = Path(model_path)
    card = load_card(card_path_for(src))
    named = [spec.file for spec in (card.ood, card.granulocyte_check, card.novelty) if spec is not None]
    report = src.with_suffix(".md")
    return [src, card_path_for(src)] + [src.parent / f for f in named] + ([report] if report.is_file() else [])


def _one_blas_thread() -> None:
    """numpy's BLAS (OpenBLAS) on one thread, for the process. The per-cell checks are matrix-vector
    products of a few MB at most (the OOD distances, the novelty against its reference cells); OpenBLAS
    splits each across its threads, which then spin against the interpreter's and the other field's.
    Measured with `scripts/bench_stream.py` (2 cores): with a 1,000-cell novelty reference the daemon's
    burst fell by a third on OpenBLAS's 2 threads and not at all on one. The answers are the same bits
    either way (each product's sums stay in one thread's order; checked on 3,000 cells). Skipped where
    threadpoolctl is not installed (a bare tflite_runtime environment): slower, the same answers.
    Skipped too where ``OPENBLAS_NUM_THREADS=1`` is set (the command line sets it before numpy loads
    OpenBLAS, numpy's own BLAS, which reads it then): already one thread, without threadpoolctl's
    ~10 ms of inspecting every loaded library. Set after numpy was imported it is too late for OpenBLAS
    and costs speed, never an answer."""
    if os.environ.get("OPENBLAS_NUM_THREADS") == "1":
        return
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        return
    threadpool_limits(limits=1, user_api="blas")


@dataclass
class Prediction:
    label: str
    probabilities: Dict[str, float]
    malignant_score: float  # 1 - P(Benign)
    verdict: str  # "benign" | "malignant"
    needs_review: bool

    def to_dict(self) -> dict:
        return {
            "label": self.label,
            "probabilities": self.probabilities,
            "malignant_score": self.malignant_score,
            "verdict": self.verdict,
            "needs_review": self.needs_review,
        }


@dataclass
class FieldPrediction:
    """One field's answer, or why it gets none; per-cell detail for the record."""

    prediction: Optional[Prediction] = None
    refusal: str = ""
    cell_scores: List[float] = field(default_factory=list)
    distances: List[float] = field(default_factory=list)
    novelty: List[float] = field(default_factory=list)  # each cell's (edge.inference.novelty); empty without
    n_ignored: int = 0
    cell_labels: List[str] = field(default_factory=list)  # the class of each counted cell (the reviewer sees it)
    # Why the field goes to a person whatever its score (a cell like an immature granulocyte): the pipeline
    # records them with the domain monitor's reasons.
    flags: List[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {
            "cells": len(self.distances),
            "cell_scores": self.cell_scores,
            "ood_distances": self.distances,
            **({"novelty": self.novelty} if self.novelty else {}),
            "cells_ignored": self.n_ignored,
            "cell_labels": self.cell_labels,
        }


class Classifier:
    """A loaded model: ``predict(model_input)`` for one preprocessed uint8 image."""

    def __init__(
        self,
        model_path: str | Path | None = None,
        backend: str = "auto",
        num_threads: int = 2,
        kernels: str = "xnnpack",
    ):
        self.path = Path(model_path) if model_path else DEFAULT_MODEL
        if not self.path.is_file():
            raise ModelLoadError(f"model file not found: {self.path}")
        self.card = load_card(card_path_for(self.path))
        self.sha256 = sha256_file(self.path)
        if self.card.sha256 != self.sha256:
            raise ModelLoadError(
                f"model {self.path.name} does not match its card (sha256 {self.sha256[:12]}… "
                f"vs card {self.card.sha256[:12]}…): corrupt or replaced file"
            )
        try:
            self._interp = load_backend(backend, str(self.path), num_threads, kernels)
        except BackendUnavailable as e:
            raise ModelLoadError(str(e)) from e
        except (ValueError, RuntimeError) as e:
            raise ModelLoadError(f"cannot load {self.path}: {str(e).splitlines()[0] if str(e) else e}") from e
        inp, outs = self._interp.input, self._interp.outputs
        size = self.card.preprocessing.input_size
        if tuple(inp.shape[1:]) != (size, size, 3):
            raise ModelLoadError(f"model input shape {inp.shape} does not match card size {size}")
        n = len(self.card.labels)
        # Output order in a converted file is not the Keras order: tell them apart by width.
        probs = [i for i, o in enumerate(outs) if o.shape[-1] == n]
        if len(probs) != 1:
            raise ModelLoadError(
                f"model outputs {[o.shape for o in outs]}: none or several match the card's {n} labels"
            )
        self._probs_out = probs[0]
        self._emb_out = next((i for i in range(len(outs)) if i != self._probs_out), None)
        self.ood = OodReference.for_model(self.path, self.card) if self._emb_out is not None else None
        self.granulocyte = GranulocyteCheck.for_model(self.path, self.card) if self._emb_out is not None else None
        self.novelty = NoveltyReference.for_model(self.path, self.card) if self._emb_out is not None else None
        if self._emb_out is not None:
            _one_blas_thread()
        self.backend = self._interp.name
        self.kernels = self._interp.kernels
        self.num_threads = num_threads
        self.labels = tuple(self.card.labels)
        self._benign = self.labels.index(BENIGN)

    @property
    def name(self) -> str:
        return self.card.name

    @property
    def preprocessing(self) -> PreprocessParams:
        return self.card.preprocessing

    def _quantize_input(self, x: np.ndarray) -> np.ndarray:
        inp = self._interp.input
        if inp.dtype == np.uint8:
            return x.astype(np.uint8, copy=False)
        if inp.dtype == np.int8:
            # An int8 input whose scale/zero point encode plain 0..255 pixels: q = p/scale + zp.
            q = np.round(x.astype(np.float32) / inp.scale + inp.zero_point) if inp.scale else x.astype(np.int16) - 128
            return np.clip(q, -128, 127).astype(np.int8)
        return x.astype(inp.dtype)

    def invoke_all(self, model_input: np.ndarray) -> Tuple[np.ndarray, Optional[np.ndarray]]:
        """One bare interpreter run: dequantized (probabilities row, embedding row or None)."""
        probs, emb = self.invoke_batch(np.asarray(model_input)[None, ...])
        return probs[0], (emb[0] if emb is not None else None)

    def invoke_batch(self, model_inputs: np.ndarray) -> Tuple[np.ndarray, Optional[np.ndarray]]:
        """One interpreter run on a batch (n x size x size x 3): dequantized (probabilities n x labels,
        embeddings n x d or None). Row i is exactly what :meth:`invoke_all` gives for input i alone: the
        int8 arithmetic of every layer is per sample (tests/test_batched_invoke.py). With the card's
        ``cell_views`` > 1 a row's probabilities are the geometric mean over the crop's orientations
        (:func:`cell_views`; not normalised), its embedding the crop's as it lies."""
        x = np.asarray(model_inputs)
        n, views = len(x), self.card.cell_views
        if views > 1:
            # Every orientation of every cell in the same one invoke; the card was validated this way.
            x = np.concatenate(cell_views(x, views))
        ys = self._interp.invoke(self._quantize_input(x))
        deq = [_dequantize(y, o) for y, o in zip(ys, self._interp.outputs)]
        probs = deq[self._probs_out]
        emb = deq[self._emb_out][:n] if self._emb_out is not None else None  # the cell as it lies
        if views > 1:
            probs = np.exp(np.log(np.clip(probs, 1e-4, 1.0)).reshape(views, n, -1).mean(axis=0)).astype(np.float32)
        return probs, emb

    def invoke_raw(self, model_input: np.ndarray) -> np.ndarray:
        return self.invoke_all(model_input)[0]

    def probabilities(self, model_input: np.ndarray) -> np.ndarray:
        return _normalize(self.invoke_raw(model_input), len(self.labels))

    def predict_field(self, inputs: Sequence[np.ndarray]) -> FieldPrediction:
        """All model inputs of one field (one per white cell in "cell" mode) -> one answer or a refusal.

        Cells whose embedding lies far from the training cells are not counted (noise, photos, debris
        that passed the segmentation); a field left with no cell is refused. The field's answer is the
        card's ``cell_rule`` over the rest (:func:`combine_cells`); a cell confidently outvoted by the
        others sends the field to review.
        """
        if not inputs:
            return FieldPrediction(refusal=NO_CELL)
        # All of a field's cells in one invoke: the same answers as one invoke per cell, less overhead.
        raw, embs = self.invoke_batch(np.stack([np.asarray(x) for x in inputs]))
        probs = [_normalize(p, len(self.labels)) for p in raw]
        if self.ood is not None and embs is not None:
            dists = self.ood.distances(embs)
        else:
            dists = [0.0] * len(inputs)
        limit = self.ood.max_distance if self.ood is not None else float("inf")
        kept = [i for i, d in enumerate(dists) if d <= limit]
        if not kept:
            return FieldPrediction(
                refusal=f"not a blood smear: no cell resembles the training cells "
                f"(distance {min(dists):.1f} > {limit:.1f})",
                cell_scores=[],
                distances=[round(d, 2) for d in dists],
            )
        scores = [1.0 - float(probs[i][self._benign]) for i in kept]
        pred = self.decide(combine_cells(np.stack([probs[i] for i in kept]), self.card.cell_rule, self._benign))
        if len(kept) > 1:
            # A benign answer that outvoted a confidently malignant cell goes to a human: a lone blast among
            # normal cells is exactly the case a screen must not miss.
            hi = self.card.review_band[1]
            if pred.verdict == "benign" and max(scores) >= hi:
                pred.needs_review = True
        novelty = self.novelty.novelty(embs) if self.novelty is not None and embs is not None else []
        flags = []
        if self.granulocyte is not None and embs is not None:
            g = self.granulocyte.flagged(embs[kept])
            if g is not None:
                flags.append(f"{GRANULOCYTE} (read-out {g:.1f}, flagged from {self.granulocyte.threshold:.1f})")
        return FieldPrediction(
            prediction=pred,
            cell_scores=[round(s, 4) for s in scores],
            distances=[round(d, 2) for d in dists],
            novelty=[round(v, 4) for v in novelty],
            n_ignored=len(inputs) - len(kept),
            cell_labels=[self.labels[int(np.argmax(probs[i]))] for i in kept],
            flags=flags,
        )

    def decide(self, probs: Union[Sequence[float], np.ndarray]) -> Prediction:
        probs = [float(p) for p in probs]
        score = 1.0 - probs[self._benign]
        lo, hi = self.card.review_band
        return Prediction(
            label=self.labels[int(np.argmax(probs))],
            probabilities={lab: round(p, 6) for lab, p in zip(self.labels, probs)},
            malignant_score=round(score, 6),
            verdict="malignant" if score >= self.card.threshold else "benign",
            needs_review=bool(lo <= score < hi),
        )

    def predict(self, model_input: np.ndarray) -> Prediction:
        return self.decide(self.probabilities(model_input))

    def warm_up(self) -> None:
        """One synthetic smear through preprocessing and the interpreter, before the first real image.

        OpenCV and XNNPACK set up thread pools and packed weights lazily; without this the first image
        after start or reload paid ~0.4 s for it.
        """
        from edge.imaging.preprocess import OpticsSettings, preprocess, working_field
        from edge.imaging.synthetic import smear

        # At the training scale: measuring a synthetic field's red cells (two Hough passes, tens of ms)
        # would warm nothing that the first real field does not set up by itself.
        fld, _ = working_field(smear(0, self.preprocessing.size), self.preprocessing, OpticsSettings(), 1.0, 1.0)
        pre = preprocess(fld, self.preprocessing)
        x = pre.model_input
        if x is None:
            x = np.full((self.preprocessing.input_size,) * 2 + (3,), 200, np.uint8)
        self.invoke_all(x)


def cell_views(x: np.ndarray, views: int) -> List[np.ndarray]:
    """The orientations of a batch of crops (n x h x w x c) the model scores: the crops as they are, mirrored
    left-right, mirrored up-down and turned half round (the first ``views`` of these)."""
    return [x, x[:, :, ::-1], x[:, ::-1], x[:, ::-1, ::-1]][:views]


def combine_cells(probs: np.ndarray, rule: Optional[str], benign: int = 0) -> np.ndarray:
    """One field's probabilities from its cells' (rows of ``probs``), by the card's ``cell_rule``.

    "geometric-mean" (the default) multiplies the cells' evidence, so several cells that each lean the same
    way outweigh one odd cell; "most-malignant" takes the cell with the highest malignant score.
    """
    if len(probs) == 1:
        return probs[0]
    if rule == "most-malignant":
        return probs[int(np.argmax(1.0 - probs[:, benign]))]
    if rule not in (None, "geometric-mean"):
        raise ModelLoadError(f"unknown cell_rule {rule!r} in the model card (known: {', '.join(CELL_RULES)})")
    g = np.exp(np.log(np.clip(probs, 1e-4, 1.0)).mean(axis=0))
    return (g / g.sum()).astype(np.float32)


def _dequantize(y: np.ndarray, info) -> np.ndarray:
    if info.dtype in (np.uint8, np.int8) and info.scale:
        return ((y.astype(np.float32) - info.zero_point) * info.scale).astype(np.float32)
    return y.astype(np.float32)


def _normalize(p: np.ndarray, n: int) -> np.ndarray:
    p = np.clip(p, 0.0, None)
    s = float(p.sum())
    # int8 outputs are quantized in steps of 1/256, so the row rarely sums to exactly 1.
    return p / s if s > 0 else np.full(n, 1.0 / n, dtype=np.float32)


def classifier_from_config(cfg, model_path: Optional[str | Path] = None) -> Classifier:
    """The one place a Classifier is built from an :class:`edge.config.Config`."""
    from edge.inference.modelstore import model_in_use  # modelstore imports this module

    m = cfg.model
    path = model_path or model_in_use(m)
    return Classifier(path, backend=m.backend, num_threads=m.num_threads, kernels=m.kernels)

"""Classification metrics in plain numpy, so evaluation runs on a machine without TensorFlow."""

from __future__ import annotations

from typing import Dict, Sequence, Tuple

import numpy as np

from edge.inference.classifier import BENIGN, LABELS


def confusion(y_true: Sequence[int], y_pred: Sequence[int], n: int = len(LABELS)) -> np.ndarray:
    cm = np.zeros((n, n), dtype=int)
    for t, p in zip(y_true, y_pred):
        cm[int(t), int(p)] += 1
    return cm


def expected_calibration_error(probs: np.ndarray, y_true: np.ndarray, bins: int = 15) -> float:
    """Top-label ECE with equal-width confidence bins."""
    conf = probs.max(axis=1)
    correct = probs.argmax(axis=1) == y_true
    edges = np.linspace(0.0, 1.0, bins + 1)
    ece = 0.0
    for lo, hi in zip(edges[:-1], edges[1:]):
        sel = (conf > lo) & (conf <= hi)
        if sel.any():
            ece += sel.mean() * abs(conf[sel].mean() - correct[sel].mean())
    return float(ece)


def malignant_scores(probs: np.ndarray, labels: Sequence[str] = LABELS) -> np.ndarray:
    return 1.0 - probs[:, list(labels).index(BENIGN)]


def binary_rates(scores: np.ndarray, malignant: np.ndarray, threshold: float) -> Tuple[float, float]:
    """(sensitivity, specificity) of the verdict ``score >= threshold``."""
    pred = scores >= threshold
    sens = float(pred[malignant].mean()) if malignant.any() else float("nan")
    spec = float((~pred[~malignant]).mean()) if (~malignant).any() else float("nan")
    return sens, spec


def summarize(probs: np.ndarray, y_true: Sequence[int], threshold: float = 0.5, labels: Sequence[str] = LABELS) -> Dict:
    probs = np.asarray(probs, dtype=np.float64)
    y = np.asarray(y_true, dtype=int)
    pred = probs.argmax(axis=1)
    cm = confusion(y, pred, len(labels))
    per_class = {}
    for i, lab in enumerate(labels):
        tp = cm[i, i]
        prec = tp / cm[:, i].sum() if cm[:, i].sum() else 0.0
        rec = tp / cm[i, :].sum() if cm[i, :].sum() else 0.0
        f1 = 2 * prec * rec / (prec + rec) if prec + rec else 0.0
        per_class[lab] = {
            "precision": round(float(prec), 4),
            "recall": round(float(rec), 4),
            "f1": round(float(f1), 4),
            "support": int(cm[i, :].sum()),
        }
    malignant = y != list(labels).index(BENIGN)
    scores = malignant_scores(probs, labels)
    sens, spec = binary_rates(scores, malignant, threshold)
    return {
        "n": int(len(y)),
        "accuracy": round(float((pred == y).mean()), 4),
        "macro_f1": round(float(np.mean([c["f1"] for c in per_class.values()])), 4),
        "per_class": per_class,
        "threshold": round(float(threshold), 4),
        "malignant_sensitivity": round(sens, 4),
        "specificity": round(spec, 4),
        "ece": round(expected_calibration_error(probs, y), 4),
        "confusion_matrix": {"labels": list(labels), "rows_true_cols_pred": cm.tolist()},
    }


def choose_threshold(
    scores: np.ndarray, malignant: np.ndarray, min_sensitivity: float = 0.995, default: float = 0.5
) -> Tuple[float, Tuple[float, float]]:
    """The highest threshold that keeps malignant sensitivity >= ``min_sensitivity`` on validation.

    Capped at ``default`` so a lucky validation set never makes the device less sensitive than the plain
    argmax rule. The review band spans from half the threshold to halfway between it and 1: scores there
    are close enough to the line that a human should look.
    """
    mal = np.sort(scores[malignant])
    if mal.size == 0:
        t = default
    else:
        k = int(np.floor((1.0 - min_sensitivity) * mal.size))  # malignant cases allowed below the line
        t = float(mal[k]) if k < mal.size else default
        t = min(default, t - 1e-6 if k == 0 else t)
    # Round down: rounding to nearest could lift the line just above the k-th malignant score.
    t = max(np.floor(t * 1e4) / 1e4, 0.01)
    return float(t), (round(t / 2, 4), round(t + (1 - t) / 2, 4))

"""Evaluation of a shipped (.tflite) model on a labelled folder, through the device's own code path.

Runs with edge/ alone (no TensorFlow): the same decode, preprocessing and interpreter the daemon uses.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence

import cv2
import numpy as np

from edge.imaging.decode import decode_file
from edge.imaging.preprocess import decode_target, preprocess_image
from edge.inference.classifier import Classifier

from .data import Sample
from .metrics import summarize

# What the robustness re-runs do to the decoded image before preprocessing.
CORNER_BOX = (0.25, 0.15)  # bottom-right, a margin wider than the scale-bar label itself


def mask_corner(rgb: np.ndarray, seed: int = 0) -> np.ndarray:
    out = rgb.copy()
    h, w = out.shape[:2]
    out[h - int(CORNER_BOX[1] * h) :, w - int(CORNER_BOX[0] * w) :] = 128
    return out


def stain_jitter(rgb: np.ndarray, seed: int = 0) -> np.ndarray:
    """A fixed-seed change of hue, saturation and brightness, like a different stain batch or lamp."""
    rng = np.random.default_rng(seed)
    hsv = cv2.cvtColor(rgb, cv2.COLOR_RGB2HSV).astype(np.float32)
    hsv[..., 0] = (hsv[..., 0] + rng.uniform(-6, 6)) % 180
    hsv[..., 1] *= rng.uniform(0.8, 1.2)
    hsv[..., 2] *= rng.uniform(0.9, 1.1)
    return cv2.cvtColor(np.clip(hsv, 0, 255).astype(np.uint8), cv2.COLOR_HSV2RGB)


VARIANTS: Dict[str, Optional[Callable[[np.ndarray, int], np.ndarray]]] = {
    "plain": None,
    "corner_masked": mask_corner,
    "stain_jitter": stain_jitter,
}


@dataclass
class Evaluation:
    metrics: Dict[str, dict]  # variant -> summarize() output over the fields given an answer
    probs: Dict[str, np.ndarray]  # variant -> N x C (refused fields: NaN)
    samples: List[Sample]
    refused: Dict[str, np.ndarray] = field(default_factory=dict)  # variant -> N bool
    reasons: Dict[str, List[str]] = field(default_factory=dict)

    @property
    def y(self) -> np.ndarray:
        return np.array([s.y for s in self.samples])

    def rescore(self, classifier: Classifier) -> None:
        """Metrics again, at the classifier's (new) threshold."""
        for v, p in self.probs.items():
            ok = ~self.refused[v]
            self.metrics[v] = summarize(p[ok], self.y[ok], classifier.card.threshold, classifier.labels)
            self.metrics[v]["refused"] = round(float(self.refused[v].mean()), 4)

    def to_dict(self) -> dict:
        plain = self.metrics["plain"]
        out = {"metrics": plain, "robustness": {}}
        for name, m in self.metrics.items():
            if name != "plain":
                out["robustness"][name] = {
                    "accuracy": m["accuracy"],
                    "accuracy_drop_points": round(100 * (plain["accuracy"] - m["accuracy"]), 2),
                    "malignant_sensitivity": m["malignant_sensitivity"],
                    "specificity": m["specificity"],
                    "refused": m.get("refused", 0.0),
                }
        return out


def classify_field(classifier: Classifier, rgb: np.ndarray):
    """The device's answer for one decoded field: (probabilities or None, refusal reason, FieldPrediction)."""
    fp = classifier.predict_field(preprocess_image(rgb, classifier.preprocessing).model_inputs)
    if fp.prediction is None:
        return None, fp.refusal, fp
    probs = np.array([fp.prediction.probabilities[lab] for lab in classifier.labels], np.float32)
    return probs, "", fp


def evaluate(
    classifier: Classifier,
    samples: Sequence[Sample],
    variants: Sequence[str] = tuple(VARIANTS),
    progress: Optional[Callable[[int, int], None]] = None,
) -> Evaluation:
    params = classifier.preprocessing
    n_lab = len(classifier.labels)
    probs = {v: np.full((len(samples), n_lab), np.nan, np.float32) for v in variants}
    refused = {v: np.zeros(len(samples), bool) for v in variants}
    reasons: Dict[str, List[str]] = {v: [""] * len(samples) for v in variants}
    total = len(samples) * len(variants)
    done = 0
    for i, s in enumerate(samples):
        rgb = decode_file(s.path, target=decode_target(params)).rgb
        for v in variants:
            fn = VARIANTS[v]
            p, why, _ = classify_field(classifier, fn(rgb, i) if fn else rgb)
            if p is None:
                refused[v][i], reasons[v][i] = True, why
            else:
                probs[v][i] = p
            done += 1
            if progress:
                progress(done, total)
    ev = Evaluation(metrics={}, probs=probs, samples=list(samples), refused=refused, reasons=reasons)
    ev.rescore(classifier)
    return ev


def write_predictions(ev: Evaluation, labels: Sequence[str], threshold: float, path: str | Path) -> None:
    from .metrics import malignant_scores

    p = ev.probs["plain"]
    scores = malignant_scores(p, labels)
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(
            ["path", "true_label", "predicted_label", "malignant_score", "verdict"] + [f"p_{lab}" for lab in labels]
        )
        for s, row, sc, why in zip(ev.samples, p, scores, ev.reasons["plain"]):
            if why:
                w.writerow([str(s.path), s.label, "", "", f"unreadable: {why}"] + [""] * len(labels))
                continue
            w.writerow(
                [
                    str(s.path),
                    s.label,
                    labels[int(row.argmax())],
                    f"{sc:.6f}",
                    "malignant" if sc >= threshold else "benign",
                ]
                + [f"{x:.6f}" for x in row]
            )


def confusion_png(cm: Sequence[Sequence[int]], labels: Sequence[str], path: str | Path, title: str = "") -> None:
    """A plain confusion-matrix picture drawn with OpenCV (no plotting library on the device)."""
    cm = np.asarray(cm)
    n, cell, left, top = len(labels), 90, 130, 70
    img = np.full((top + n * cell + 40, left + n * cell + 20, 3), 255, np.uint8)
    font = cv2.FONT_HERSHEY_SIMPLEX
    cv2.putText(img, title or "confusion matrix (rows: true, cols: predicted)", (10, 22), font, 0.5, (0, 0, 0), 1)
    row_sums = cm.sum(axis=1, keepdims=True).clip(min=1)
    for i in range(n):
        cv2.putText(img, labels[i][:12], (5, top + i * cell + cell // 2 + 5), font, 0.45, (0, 0, 0), 1)
        cv2.putText(img, labels[i][:10], (left + i * cell + 4, top - 10), font, 0.42, (0, 0, 0), 1)
        for j in range(n):
            frac = cm[i, j] / row_sums[i, 0]
            shade = int(255 - 200 * frac)
            x0, y0 = left + j * cell, top + i * cell
            cv2.rectangle(img, (x0, y0), (x0 + cell - 2, y0 + cell - 2), (255, shade, shade), -1)
            color = (255, 255, 255) if frac > 0.6 else (0, 0, 0)
            cv2.putText(img, str(int(cm[i, j])), (x0 + 25, y0 + cell // 2 + 6), font, 0.6, color, 2)
    cv2.imwrite(str(path), img)


def save_evaluation(ev: Evaluation, classifier: Classifier, out_dir: str | Path) -> Path:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    d = ev.to_dict()
    (out / "evaluation.json").write_text(json.dumps(d, indent=2) + "\n")
    cm = d["metrics"]["confusion_matrix"]["rows_true_cols_pred"]
    confusion_png(cm, classifier.labels, out / "confusion.png")
    return out

"""Inference on the device: a TFLite model plus its JSON model card. Never imports TensorFlow."""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from .backends import BackendUnavailable, load_backend
from .preprocess import PreprocessParams, UnknownPreprocessing

LABELS = ("Benign", "Early Pre-B", "Pre-B", "Pro-B")
BENIGN = "Benign"
CARD_SCHEMA = 1
MODELS_DIR = Path(__file__).resolve().parent / "models"
DEFAULT_MODEL = MODELS_DIR / "edge-screen-mnv2-int8.tflite"


class ModelLoadError(RuntimeError):
    """The model or its card is missing, corrupt, or asks for something this code does not know."""


@dataclass
class ModelCard:
    name: str
    version: str
    sha256: str
    labels: List[str]
    input_mode: str
    preprocessing: PreprocessParams
    threshold: float  # malignant score at or above which the verdict is "malignant"
    review_band: Tuple[float, float]  # scores in [lo, hi) need a human
    extra: dict = field(default_factory=dict)  # everything else in the card (metrics, ablation, ...)

    def to_dict(self) -> dict:
        d = dict(self.extra)
        d.update(card_schema=CARD_SCHEMA, name=self.name, version=self.version, sha256=self.sha256,
                 labels=list(self.labels), input_mode=self.input_mode,
                 preprocessing=self.preprocessing.to_dict(), threshold=self.threshold,
                 review_band=list(self.review_band))
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "ModelCard":
        try:
            if d.get("card_schema") != CARD_SCHEMA:
                raise ModelLoadError(f"model card schema {d.get('card_schema')!r} is not {CARD_SCHEMA}")
            pre = PreprocessParams.from_dict(d["preprocessing"])
            if pre.input_mode != d["input_mode"]:
                raise ModelLoadError("model card input_mode disagrees with its preprocessing parameters")
            lo, hi = (float(x) for x in d["review_band"])
            core = {"card_schema", "name", "version", "sha256", "labels", "input_mode", "preprocessing",
                    "threshold", "review_band"}
            card = cls(name=str(d["name"]), version=str(d["version"]), sha256=str(d["sha256"]),
                       labels=[str(x) for x in d["labels"]], input_mode=str(d["input_mode"]), preprocessing=pre,
                       threshold=float(d["threshold"]), review_band=(lo, hi),
                       extra={k: v for k, v in d.items() if k not in core})
        except UnknownPreprocessing as e:
            raise ModelLoadError(f"model card: {e}") from e
        except (KeyError, TypeError, ValueError) as e:
            raise ModelLoadError(f"model card is malformed: {type(e).__name__}: {e}") from e
        if BENIGN not in card.labels:
            raise ModelLoadError(f"model card labels {card.labels} have no {BENIGN!r} class")
        if not 0.0 <= lo <= card.threshold <= hi <= 1.0:
            raise ModelLoadError(f"review band {card.review_band} must contain the threshold {card.threshold}")
        return card

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=2, sort_keys=False) + "\n")


def card_path_for(model_path: str | Path) -> Path:
    return Path(model_path).with_suffix(".json")


def load_card(path: str | Path) -> ModelCard:
    path = Path(path)
    try:
        d = json.loads(path.read_text())
    except FileNotFoundError:
        raise ModelLoadError(f"model card not found: {path}") from None
    except (OSError, ValueError) as e:
        raise ModelLoadError(f"model card {path} is not valid JSON: {e}") from None
    return ModelCard.from_dict(d)


def sha256_file(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


@dataclass
class Prediction:
    label: str
    probabilities: Dict[str, float]
    malignant_score: float  # 1 - P(Benign)
    verdict: str  # "benign" | "malignant"
    needs_review: bool

    def to_dict(self) -> dict:
        return {"label": self.label, "probabilities": self.probabilities,
                "malignant_score": self.malignant_score, "verdict": self.verdict,
                "needs_review": self.needs_review}


class Classifier:
    """A loaded model: ``predict(model_input)`` for one preprocessed uint8 image."""

    def __init__(self, model_path: str | Path | None = None, backend: str = "auto", num_threads: int = 2):
        self.path = Path(model_path) if model_path else DEFAULT_MODEL
        if not self.path.is_file():
            raise ModelLoadError(f"model file not found: {self.path}")
        self.card = load_card(card_path_for(self.path))
        self.sha256 = sha256_file(self.path)
        if self.card.sha256 != self.sha256:
            raise ModelLoadError(f"model {self.path.name} does not match its card (sha256 {self.sha256[:12]}… "
                                 f"vs card {self.card.sha256[:12]}…): corrupt or replaced file")
        try:
            self._interp = load_backend(backend, str(self.path), num_threads)
        except BackendUnavailable as e:
            raise ModelLoadError(str(e)) from e
        except (ValueError, RuntimeError) as e:
            raise ModelLoadError(f"cannot load {self.path}: {str(e).splitlines()[0] if str(e) else e}") from e
        inp, out = self._interp.input, self._interp.output
        size = self.card.preprocessing.size
        if tuple(inp.shape[1:]) != (size, size, 3):
            raise ModelLoadError(f"model input shape {inp.shape} does not match card size {size}")
        if out.shape[-1] != len(self.card.labels):
            raise ModelLoadError(f"model has {out.shape[-1]} outputs, card lists {len(self.card.labels)} labels")
        self.backend = self._interp.name
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

    def invoke_raw(self, model_input: np.ndarray) -> np.ndarray:
        """One bare interpreter run; returns the dequantized output row (probabilities)."""
        x = self._quantize_input(np.asarray(model_input)[None, ...])
        y = self._interp.invoke(x)[0]
        out = self._interp.output
        if out.dtype in (np.uint8, np.int8) and out.scale:
            y = (y.astype(np.float32) - out.zero_point) * out.scale
        return y.astype(np.float32)

    def probabilities(self, model_input: np.ndarray) -> np.ndarray:
        p = np.clip(self.invoke_raw(model_input), 0.0, None)
        s = float(p.sum())
        # int8 outputs are quantized in steps of 1/256, so the row rarely sums to exactly 1.
        return p / s if s > 0 else np.full(len(self.labels), 1.0 / len(self.labels), dtype=np.float32)

    def decide(self, probs: Sequence[float]) -> Prediction:
        probs = [float(p) for p in probs]
        score = 1.0 - probs[self._benign]
        lo, hi = self.card.review_band
        return Prediction(label=self.labels[int(np.argmax(probs))],
                          probabilities={lab: round(p, 6) for lab, p in zip(self.labels, probs)},
                          malignant_score=round(score, 6),
                          verdict="malignant" if score >= self.card.threshold else "benign",
                          needs_review=bool(lo <= score < hi))

    def predict(self, model_input: np.ndarray) -> Prediction:
        return self.decide(self.probabilities(model_input))

    def warm_up(self) -> None:
        """One synthetic smear through preprocessing and the interpreter, before the first real image.

        OpenCV and XNNPACK set up thread pools and packed weights lazily; without this the first image
        after start or reload paid ~0.4 s for it.
        """
        from .preprocess import preprocess
        from .synthetic import smear

        self.predict(preprocess(smear(0, self.preprocessing.size), self.preprocessing).model_input)


def load_classifier(model_path: Optional[str | Path] = None, backend: str = "auto",
                    num_threads: int = 2) -> Classifier:
    return Classifier(model_path, backend=backend, num_threads=num_threads)

"""From a dataset folder to a shipped model: ablation, int8 conversion, threshold, card and report."""
from __future__ import annotations

import dataclasses
import datetime as dt
import json
import logging
import platform
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, Optional, Sequence

import numpy as np

from edge.model import LABELS, Classifier, ModelCard, card_path_for, sha256_file
from edge.preprocess import PreprocessParams

from .data import Split
from .evaluate import evaluate, save_evaluation
from .metrics import binary_rates, choose_threshold, malignant_scores, summarize
from .train import Arrays, TrainConfig, load_arrays, predict_float, train_model

log = logging.getLogger(__name__)
MODEL_NAME = "edge-screen-mnv2-int8"


@dataclass
class BuildResult:
    tflite: Path
    card: ModelCard
    chosen_mode: str
    ablation: Dict[str, dict]
    seconds: float


def representative_set(arr: Arrays, params: PreprocessParams, n: int = 200) -> np.ndarray:
    """Evenly spaced training images of every class: calibration ranges must cover all stains."""
    idx = []
    for c in np.unique(arr.y):
        members = np.flatnonzero(arr.y == c)
        k = max(1, int(round(n * len(members) / len(arr.y))))
        idx.extend(members[np.linspace(0, len(members) - 1, min(k, len(members))).astype(int)])
    sub = Arrays(arr.resized[idx], arr.mask[idx], arr.y[idx])
    return sub.model_inputs(params)


def _versions() -> dict:
    import cv2
    import keras
    import tensorflow as tf

    v = {"python": platform.python_version(), "tensorflow": tf.__version__, "keras": keras.__version__,
         "numpy": np.__version__, "opencv": cv2.__version__}
    try:
        from importlib.metadata import version

        v["ai-edge-litert"] = version("ai-edge-litert")
    except Exception:
        pass
    return v


def build(split: Split, out_dir: str | Path, modes: Sequence[str] = ("segmented", "raw", "balanced"),
          cfg: TrainConfig = TrainConfig(), base_params: PreprocessParams = PreprocessParams(),
          name: str = MODEL_NAME, version: str = "1.0.0", work_dir: Optional[Path] = None,
          progress: Optional[Callable[[str, int, int], None]] = None) -> BuildResult:
    t0 = time.perf_counter()
    out_dir = Path(out_dir)
    work = Path(work_dir) if work_dir else out_dir / "work"
    work.mkdir(parents=True, exist_ok=True)
    out_dir.mkdir(parents=True, exist_ok=True)

    # Both modes come from the same resized pixels and masks: one preprocessing pass over the data.
    prog = (lambda stage: (lambda i, n: progress(stage, i, n))) if progress else (lambda stage: None)
    train_arr = load_arrays(split.train, base_params, prog("preprocess train"))
    val_arr = load_arrays(split.val, base_params, prog("preprocess validation"))

    ablation, results = {}, {}
    for mode in modes:
        params = base_params.with_mode(mode)
        log.info("training input mode %r on %d images (%d validation)", mode, len(train_arr.y), len(val_arr.y))
        res = train_model(train_arr, val_arr, params, cfg)
        res.model.save(work / f"{mode}.keras")
        probs = predict_float(res.model, val_arr.model_inputs(params))
        m = summarize(probs, val_arr.y)
        ablation[mode] = {"val_accuracy": m["accuracy"], "val_macro_f1": m["macro_f1"],
                          "val_malignant_sensitivity_at_0.5": m["malignant_sensitivity"],
                          "val_specificity_at_0.5": m["specificity"],
                          "val_loss": round(float(-np.mean(np.log(np.clip(probs[np.arange(len(val_arr.y)), val_arr.y], 1e-7, 1)))), 4),
                          "fine_tuning_kept": bool(res.history.get("fine_tuning_kept", [0])[0]),
                          "epochs": res.epochs, "train_seconds": round(res.seconds, 1)}
        results[mode] = (res, probs)
        (work / "ablation.json").write_text(json.dumps(ablation, indent=2))
    chosen = max(modes, key=lambda md: (ablation[md]["val_accuracy"], ablation[md]["val_macro_f1"],
                                        -ablation[md]["val_loss"]))
    res, float_probs = results[chosen]
    params = res.params

    tflite = out_dir / f"{name}.tflite"
    from .convert import to_int8_tflite

    to_int8_tflite(res.model, representative_set(train_arr, params), tflite)

    # A provisional card lets the device's own Classifier load the file; threshold comes next.
    card = ModelCard(name=name, version=version, sha256=sha256_file(tflite), labels=list(LABELS),
                     input_mode=params.input_mode, preprocessing=params, threshold=0.5,
                     review_band=(0.25, 0.75))
    card.save(card_path_for(tflite))
    clf = Classifier(tflite, num_threads=2)
    val_inputs = val_arr.model_inputs(params)
    int8_probs = np.stack([clf.probabilities(x) for x in val_inputs])
    agreement = float((int8_probs.argmax(1) == float_probs.argmax(1)).mean())

    scores = malignant_scores(int8_probs)
    malignant = val_arr.y != LABELS.index("Benign")
    threshold, band = choose_threshold(scores, malignant, 0.995)
    sens, spec = binary_rates(scores, malignant, threshold)
    card.threshold, card.review_band = threshold, band
    card.save(card_path_for(tflite))
    clf.card = card  # same file, new threshold: no need to load the interpreter again

    ev = evaluate(clf, split.val, progress=prog("evaluate int8 on validation"))
    save_evaluation(ev, clf, work)
    evd = ev.to_dict()
    card.extra = {
        "description": "MobileNetV2 1.0/224 (ImageNet init from the int8 checkpoint, dequantized), "
                       "fine-tuned on peripheral-blood smears for B-ALL subtype screening. A screening aid, "
                       "not a diagnosis.",
        "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "split": split.describe(),
        "training": {**dataclasses.asdict(cfg),
                     "history": {k: [round(x, 4) for x in v] for k, v in res.history.items()},
                     "seconds_total_build": None},
        "ablation": {"chosen": chosen, "modes": ablation,
                     "rule": "highest validation accuracy, then macro F1, then lowest validation loss"},
        "float_int8_top1_agreement": round(agreement, 4),
        "threshold_rule": "highest malignant-score threshold with validation malignant sensitivity >= 99.5 % "
                          "(int8 model), capped at 0.5; review band from half the threshold to halfway to 1",
        "validation_at_threshold": {"malignant_sensitivity": round(sens, 4), "specificity": round(spec, 4)},
        "validation": evd,
        "size_bytes": tflite.stat().st_size,
        "versions": _versions(),
    }
    card.extra["training"]["seconds_total_build"] = round(time.perf_counter() - t0, 1)
    card.save(card_path_for(tflite))
    return BuildResult(tflite=tflite, card=card, chosen_mode=chosen, ablation=ablation,
                       seconds=time.perf_counter() - t0)

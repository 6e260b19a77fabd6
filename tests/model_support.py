"""The shipped model copied with a companion file of a test's own (the granulocyte check, the novelty
reference), and one synthetic smear screened through the device's pipeline with such a copy."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Tuple

import cv2
import numpy as np

from edge.config import Config
from edge.imaging import synthetic
from edge.inference.classifier import DEFAULT_MODEL, Classifier, model_files
from edge.pipeline.settings import PipelineSettings
from edge.pipeline.stages import Pipeline
from edge.store.records import ImageRecord


def shipped_model_copy(folder: Path) -> Tuple[Path, int]:
    """Every file of the shipped model copied into ``folder``: (its .tflite there, its embedding's width)."""
    for f in model_files(DEFAULT_MODEL):
        shutil.copyfile(f, folder / f.name)
    dst = folder / DEFAULT_MODEL.name
    emb = Classifier(dst, num_threads=1).invoke_all(np.zeros((112, 112, 3), np.uint8))[1]
    assert emb is not None, "the shipped model has an embedding output"
    return dst, int(emb.shape[0])


def screened_smear(clf: Classifier, folder: Path) -> ImageRecord:
    """A synthetic smear (seed 3, with white cells) through the pipeline as the daemon runs it."""
    src = folder / "smear.png"
    if not src.exists():
        cv2.imwrite(str(src), cv2.cvtColor(synthetic.smear(3), cv2.COLOR_RGB2BGR))
    return Pipeline(PipelineSettings.of(Config(), clf.card), clf).process(src)

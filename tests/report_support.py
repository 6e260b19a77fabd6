"""Shared helpers for the report and explain tests: a model to run, synthetic smears and the report
tests' fixture database.

The shipped model (edge.inference.classifier.DEFAULT_MODEL) is used when it exists. Until the trainer has produced it, a
tiny stand-in int8 model is built with TensorFlow under /tmp (never in the repository) and cached there,
so only the first test session pays for the TensorFlow import.
"""

from __future__ import annotations

import hashlib
import os
import sqlite3
from datetime import datetime, timezone
from pathlib import Path
from typing import Tuple

import cv2
import numpy as np

from edge.imaging.preprocess import PreprocessParams
from edge.inference.classifier import DEFAULT_MODEL, ModelCard, card_path_for, sha256_file
from edge.store.database import ImageRecord, Store
from edge.store.records import Timings

STANDIN_DIR = Path(os.environ.get("EDGE_SCREEN_STANDIN_DIR", "/tmp/edge-screen-standin"))
STANDIN_LABELS = ["Benign", "Early Pre-B", "Pre-B", "Pro-B"]


def model_path() -> Path:
    override = os.environ.get("EDGE_SCREEN_TEST_MODEL")  # e.g. a freshly trained model not yet shipped
    if override:
        return Path(override)
    if DEFAULT_MODEL.is_file() and card_path_for(DEFAULT_MODEL).is_file():
        return DEFAULT_MODEL
    return build_standin(STANDIN_DIR / "standin-v3-int8.tflite")


def build_standin(path: Path) -> Path:
    card = card_path_for(path)
    if path.is_file() and card.is_file():
        return path
    import tensorflow as tf  # only the tests import TensorFlow, never edge/

    path.parent.mkdir(parents=True, exist_ok=True)
    # Hand-set weights rather than random ones: the stand-in must respond to stained cells the way a
    # trained model does, or occlusion tests would measure quantization noise. The single 1x1 filter
    # measures "purple" (blue minus green), pooled to the stained share of the image; the dense layer
    # turns more stain into a higher malignant score.
    inp = tf.keras.Input((224, 224, 3))
    x = tf.keras.layers.Rescaling(1.0 / 255)(inp)
    conv = tf.keras.layers.Conv2D(1, 1, activation="relu")
    x = conv(x)
    x = tf.keras.layers.GlobalAveragePooling2D()(x)
    dense = tf.keras.layers.Dense(4, activation="softmax")
    out = dense(x)
    model = tf.keras.Model(inp, out)
    conv.set_weights([np.array([0.0, -1.0, 1.0], np.float32).reshape(1, 1, 3, 1), np.zeros(1, np.float32)])
    dense.set_weights(
        [np.array([[-150.0, 100.0, 120.0, 80.0]], np.float32), np.array([3.0, -1.0, -1.5, -0.8], np.float32)]
    )
    rng = np.random.default_rng(0)

    from trainer.convert import to_int8_tflite

    rep = np.stack([synthetic_smear(rng, n_cells=i % 3) for i in range(16)])
    tmp = to_int8_tflite(model, rep, path.with_suffix(".tmp"))
    ModelCard(
        name="standin",
        version="0",
        sha256=sha256_file(tmp),
        labels=list(STANDIN_LABELS),
        input_mode="segmented",
        preprocessing=PreprocessParams(),
        threshold=0.5,
        review_band=(0.3, 0.7),
    ).save(card)
    os.replace(tmp, path)
    return path


def synthetic_smear(
    rng: np.random.Generator | None = None,
    n_cells: int = 1,
    size: int = 224,
    centers: list | None = None,
    radius: int = 28,
) -> np.ndarray:
    """A pale pink background with purple stained nuclei, RGB uint8."""
    rng = rng or np.random.default_rng(0)
    img = np.empty((size, size, 3), np.uint8)
    img[:] = (232, 214, 222)
    noise = rng.integers(-6, 7, size=img.shape)
    img = np.clip(img.astype(np.int16) + noise, 0, 255).astype(np.uint8)
    if centers is None:
        centers = [(int(rng.integers(40, size - 40)), int(rng.integers(40, size - 60))) for _ in range(n_cells)]
    for cx, cy in centers:
        cv2.circle(img, (cx, cy), radius, (120, 40, 150), -1)
    return img


def write_png(path: Path, rgb: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    return path


# ------------------------------------------------------------------- the report tests' fixture database

REPORT_N = 48
REPORT_LABELS = ("Benign", "Early Pre-B", "Pre-B", "Pro-B")


def report_record(i: int, inbox: Path) -> ImageRecord:
    """Row i of the fixture: three days, two devices, every status, two models, distinct timings."""
    day = 1 + i % 3
    common = dict(
        path=str(inbox / f"img-{i:03d}.png"),
        sha256=hashlib.sha256(b"%d" % i).hexdigest(),
        device_id="dev-a" if i % 2 == 0 else "dev-b",
        recorded_at=datetime(2026, 5, day, 8 + (i // 3) % 8, i, tzinfo=timezone.utc),
        model_name="model-a" if i < 24 else "model-b",
        model_sha256=("a" if i < 24 else "b") * 64,
    )
    tm = dict(queue=1.0 + i % 2, decode=4.0 + i % 3, store=0.5 + (i % 4) / 4, total=20.0 + i)
    kind = i % 8
    if kind == 5:
        return ImageRecord(status="unreadable", reason=f"out of focus ({i})", timings=Timings(**tm), **common)
    if kind == 6:
        return ImageRecord(status="rejected", reason="not an image", timings=Timings(**tm), **common)
    if kind == 7:
        return ImageRecord(
            status="duplicate", reason="same content as an earlier image", timings=Timings(**tm), **common
        )
    malignant, review = i % 6 == 0, i % 9 == 4
    score = 0.92 if malignant else (0.4 if review else 0.05)
    label = REPORT_LABELS[1 + (i // 6) % 3] if malignant else "Benign"
    return ImageRecord(
        status="classified",
        label=label,
        verdict="malignant" if malignant else "benign",
        malignant_score=score,
        needs_review=review,
        timings=Timings(**tm, inference=3.0 + i % 5),
        probabilities={lab: (score if lab == label else 0.0) for lab in REPORT_LABELS},
        **common,
    )


def report_db(root: Path) -> Tuple[Path, Path, Path]:
    """(sqlite path, inbox, deleted path) under ``root``: REPORT_N records; flagged images exist as files,
    except one that was deleted."""
    inbox = root / "inbox"
    path = root / "edge.sqlite"
    recs = [report_record(i, inbox) for i in range(REPORT_N)]
    flagged = [r for r in recs if r.status == "classified" and (r.verdict == "malignant" or r.needs_review)]
    assert len(flagged) >= 4
    for k, r in enumerate(flagged):
        # Recorded as the daemon records a file it read: its sha256 and size (the HTML report embeds a file
        # only while it is still the recorded one).
        data = write_png(Path(r.path), synthetic_smear(np.random.default_rng(k), n_cells=1 + k % 3)).read_bytes()
        r.sha256, r.bytes = hashlib.sha256(data).hexdigest(), len(data)
    with Store.open(path, device_id="dev-a") as store:
        for r in recs:
            store.record(r)
    deleted = Path(flagged[1].path)
    deleted.unlink()
    return path, inbox, deleted


def sql(db_path, query, *args):
    with sqlite3.connect(db_path) as conn:
        return conn.execute(query, args).fetchall()

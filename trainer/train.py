"""Transfer learning: a head-only phase, then fine-tuning of the upper MobileNetV2 blocks."""
from __future__ import annotations

import logging
import os
import random
import time
from dataclasses import dataclass, field
from typing import Dict, List, Sequence, Tuple

import numpy as np

from edge.model import LABELS
from edge.preprocess import PreprocessParams, decode_file, preprocess

from .data import Sample

log = logging.getLogger(__name__)


@dataclass
class TrainConfig:
    head_epochs: int = 4
    fine_epochs: int = 12
    patience: int = 3
    batch_size: int = 32
    lr_head: float = 1e-3
    lr_fine: float = 1e-4
    weights: str = "shared"  # "shared" | "imagenet" | "none"
    seed: int = 1234
    verbose: int = 1


@dataclass
class Arrays:
    """Preprocessed pixels for a list of samples: the resized image and the stained-cell mask.

    Both input modes are derived from these, and colour augmentation is applied to ``resized`` before the
    mask, so a stain jitter changes the cells, never the neutral background the device shows the model.
    """
    resized: np.ndarray  # N x S x S x 3 uint8
    mask: np.ndarray  # N x S x S bool
    y: np.ndarray  # N int

    def model_inputs(self, params: PreprocessParams) -> np.ndarray:
        if params.input_mode == "raw":
            return self.resized
        bg = np.array(params.background, dtype=np.uint8)
        return np.where(self.mask[..., None], self.resized, bg).astype(np.uint8)


@dataclass
class TrainResult:
    model: object  # keras.Model
    params: PreprocessParams
    history: Dict[str, List[float]] = field(default_factory=dict)
    seconds: float = 0.0
    epochs: int = 0


def load_arrays(samples: Sequence[Sample], params: PreprocessParams, progress=None) -> Arrays:
    n, s = len(samples), params.size
    resized = np.empty((n, s, s, 3), np.uint8)
    mask = np.empty((n, s, s), bool)
    for i, smp in enumerate(samples):
        pp = preprocess(decode_file(smp.path, target=s).rgb, params)
        resized[i], mask[i] = pp.resized, pp.mask
        if progress:
            progress(i + 1, n)
    return Arrays(resized, mask, np.array([smp.y for smp in samples], dtype=np.int64))


def seed_everything(seed: int) -> None:
    import keras

    os.environ["PYTHONHASHSEED"] = str(seed)
    random.seed(seed)
    np.random.seed(seed)
    keras.utils.set_random_seed(seed)


def class_weights(y: np.ndarray, n: int = len(LABELS)) -> Dict[int, float]:
    counts = np.bincount(y, minlength=n).astype(float)
    counts[counts == 0] = 1.0
    w = counts.sum() / (n * counts)
    return {i: float(w[i]) for i in range(n)}


def _dataset(arr: Arrays, params: PreprocessParams, batch: int, train: bool, seed: int):
    import tensorflow as tf

    bg = tf.constant(params.background, tf.float32)
    segmented = params.input_mode == "segmented"
    ds = tf.data.Dataset.from_tensor_slices((arr.resized, arr.mask, arr.y))
    if train:
        ds = ds.shuffle(len(arr.y), seed=seed, reshuffle_each_iteration=True)

    def stain_and_mask(img, mask, y):
        x = tf.cast(img, tf.float32)
        if train:
            # Stand-in for stain and illumination differences between slides and microscopes.
            x = tf.image.random_brightness(x, 20.0)
            x = tf.image.random_contrast(x, 0.85, 1.15)
            x = tf.image.random_hue(x / 255.0, 0.04) * 255.0
            x = tf.image.random_saturation(x, 0.8, 1.2)
            x = tf.clip_by_value(x, 0.0, 255.0)
        if segmented:
            x = tf.where(mask[..., None], x, bg)
        if train:
            x = tf.image.random_flip_left_right(x)
            x = tf.image.random_flip_up_down(x)
            x = tf.image.rot90(x, tf.random.uniform([], 0, 4, tf.int32))
        return x, tf.one_hot(y, len(LABELS))

    ds = ds.map(stain_and_mask, num_parallel_calls=tf.data.AUTOTUNE).batch(batch)
    if train:
        import keras

        geo = keras.Sequential([keras.layers.RandomZoom(0.1, fill_mode="reflect", seed=seed),
                                keras.layers.RandomTranslation(0.05, 0.05, fill_mode="reflect", seed=seed)])
        ds = ds.map(lambda x, y: (geo(x, training=True), y), num_parallel_calls=tf.data.AUTOTUNE)
    return ds.prefetch(tf.data.AUTOTUNE)


def train_model(train: Arrays, val: Arrays, params: PreprocessParams, cfg: TrainConfig) -> TrainResult:
    import keras

    from .model import build_classifier, unfreeze_top

    seed_everything(cfg.seed)
    t0 = time.perf_counter()
    model = build_classifier(weights=cfg.weights, size=params.size)
    tr = _dataset(train, params, cfg.batch_size, True, cfg.seed)
    va = _dataset(val, params, cfg.batch_size, False, cfg.seed)
    cw = class_weights(train.y)
    history: Dict[str, List[float]] = {}

    def run(epochs, lr, initial_epoch):
        model.compile(optimizer=keras.optimizers.Adam(lr), loss=keras.losses.CategoricalCrossentropy(),
                      metrics=["accuracy"])
        stop = keras.callbacks.EarlyStopping(monitor="val_loss", patience=cfg.patience,
                                             restore_best_weights=True)
        h = model.fit(tr, validation_data=va, epochs=initial_epoch + epochs, initial_epoch=initial_epoch,
                      class_weight=cw, callbacks=[stop], verbose=cfg.verbose)
        for k, v in h.history.items():
            history.setdefault(k, []).extend(float(x) for x in v)
        return initial_epoch + len(h.history["loss"])

    done = run(cfg.head_epochs, cfg.lr_head, 0) if cfg.head_epochs else 0
    if cfg.fine_epochs:
        n = unfreeze_top(model)
        log.info("fine-tuning %d backbone layers", n)
        done = run(cfg.fine_epochs, cfg.lr_fine, done)
    return TrainResult(model=model, params=params, history=history, seconds=time.perf_counter() - t0,
                       epochs=done)


def predict_float(model, inputs: np.ndarray, batch: int = 64) -> np.ndarray:
    return np.asarray(model.predict(inputs.astype(np.float32), batch_size=batch, verbose=0))

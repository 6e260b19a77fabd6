"""Transfer learning: a head-only phase, then fine-tuning of the upper MobileNetV2 blocks."""

from __future__ import annotations

import logging
import os
import random
import time
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence

import numpy as np

from edge.imaging.decode import decode_file
from edge.imaging.preprocess import PreprocessParams, preprocess, white_balance
from edge.inference.classifier import LABELS

from .augment import CaptureAugment
from .data import Sample

log = logging.getLogger(__name__)


@dataclass
class TrainConfig:
    head_epochs: int = 150  # on cached features: cheap, so run to convergence (early stopping decides)
    fine_epochs: int = 10
    patience: int = 3
    # Fine-tuning epochs that always run before early stopping may end it (None: half of fine_epochs). In
    # the first epochs of the cosine decay the rate is still high and the validation loss jumps by a third
    # between neighbouring epochs; with patience 3 alone a run stopped after 5 of 10 epochs and kept
    # its 2nd (val loss 0.306, where the runs that went on reached 0.22).
    early_stop_from: Optional[int] = None
    batch_size: int = 32
    lr_head: float = 1e-3
    lr_fine: float = 5e-5
    head_l2: float = 1e-4
    # Colour jitter strength: 1.0 = exposure gain 0.85-1.15, contrast 0.85-1.15, hue +-0.04, saturation 0.8-1.2.
    color_jitter: float = 2.0
    fine_tune_from: str = "block_5_expand"
    weights: str = "shared"  # "shared" | "imagenet" | "none"
    seed: int = 1234
    verbose: int = 1
    # Cell mode: capture-augmented copies of each training field (beside the clean one), and the most cells
    # taken from one field, so crowded fields do not outweigh sparse ones.
    augment_copies: int = 2
    train_cells_per_field: int = 3
    other_copies: int = 1  # augmented copies of each other-laboratory image (they are many and alike)
    stain_amount: float = 0.0  # share of augmented copies with a heavier or lighter stain (augment.stain_amount)
    # How the other laboratories share their half of the benign weight (source_weights): "pooled" (by image
    # count: PBC's 2,560 training cells outweigh BCCD's ~140 fields 18 to 1) or "per-source" (each
    # laboratory the same share, however many images it gave).
    source_balance: str = "pooled"
    # The brightest capture-augmentation exposure gain (CaptureAugment.exposure's upper end). Only the range
    # changes with it, not the number of random draws, so at its default the shipped recipe's stream is the same.
    exposure_max: float = CaptureAugment.exposure[1]
    # Where a recoloured training copy's colours come from (cellset.colour_target_picker): "fields" (any
    # field, so by each laboratory's image count) or "per-source" (each laboratory as often).
    colour_targets: str = "fields"
    # Whose slide a training copy's white cells are moved onto (cellset.slide_picker): "fields" (another
    # field of the same size: in practice a Taleqani one) or "per-source" (each laboratory's as often).
    slide_targets: str = "fields"

    def capture_augment(self) -> CaptureAugment:
        """The capture augmentation of the training fields' copies (the recipe's own at the defaults)."""
        darkest = CaptureAugment.exposure[0]
        return CaptureAugment(p_stain_amount=self.stain_amount, exposure=(darkest, self.exposure_max))


@dataclass
class Arrays:
    """Preprocessed pixels for a list of samples: the resized image and the stained-cell mask.

    Both input modes are derived from these, and colour augmentation is applied to ``resized`` before the
    mask, so a stain jitter changes the cells, never the neutral background the device shows the model.
    """

    resized: np.ndarray  # N x S x S x 3 uint8
    mask: np.ndarray  # N x S x S bool
    y: np.ndarray  # N int
    # Per-sample weights (several sources, see source_weights); None: class weights from y.
    w: Optional[np.ndarray] = None

    def weights(self) -> np.ndarray:
        if self.w is not None:
            return self.w.astype(np.float32)
        cw = class_weights(self.y)
        return np.array([cw[int(c)] for c in self.y], np.float32)

    def model_inputs(self, params: PreprocessParams) -> np.ndarray:
        if params.input_mode == "raw":
            return self.resized
        if params.input_mode == "balanced":
            return np.stack([white_balance(img, params) for img in self.resized])
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


def source_weights(
    y: np.ndarray,
    primary: np.ndarray,
    other_share: float = 0.5,
    n: int = len(LABELS),
    sources: Optional[Sequence[str]] = None,
) -> np.ndarray:
    """Per-sample weights when other laboratories' benign cells join the primary source.

    The primary source's classes are balanced as before (class weights over its own samples), and all other
    sources' samples together weigh ``other_share`` of the primary benign class. Without this the benign
    class is mostly another lab's neutrophils and lymphocytes, easy to tell from blasts, and the model
    stops learning the hard case, hematogones (benign B-cell precursors) against blasts.

    ``sources`` (each sample's source name; "per-source" balance): that share is split equally between the
    other laboratories instead of by their image counts, so a laboratory that gave few images (BCCD's whole
    fields) weighs as much as one that gave thousands of single cells (PBC). The total "another laboratory,
    benign" weight is the same either way.
    """
    w = np.zeros(len(y), np.float32)
    cw = class_weights(y[primary], n)
    w[primary] = [cw[int(c)] for c in y[primary]]
    others = ~primary
    if others.any():
        benign_total = float(w[primary & (y == LABELS.index("Benign"))].sum()) or float(w[primary].sum()) / n
        if sources is None:
            w[others] = other_share * benign_total / int(others.sum())
        else:
            names = np.asarray(sources)
            labs = sorted(set(names[others].tolist()))
            for lab in labs:
                sel = others & (names == lab)
                w[sel] = other_share * benign_total / len(labs) / int(sel.sum())
    return w


def class_weights(y: np.ndarray, n: int = len(LABELS)) -> Dict[int, float]:
    counts = np.bincount(y, minlength=n).astype(float)
    counts[counts == 0] = 1.0
    w = counts.sum() / (n * counts)
    return {i: float(w[i]) for i in range(n)}


def _dataset(arr: Arrays, params: PreprocessParams, batch: int, train: bool, seed: int, jitter: float = 1.0):
    import tensorflow as tf

    bg = tf.constant(params.background, tf.float32)
    segmented = params.input_mode == "segmented"
    # Validation loss stays unweighted (what early stopping compared before per-sample weights existed).
    w = arr.weights() if train else np.ones(len(arr.y), np.float32)
    ds = tf.data.Dataset.from_tensor_slices((arr.resized, arr.mask, arr.y, w))
    if train:
        ds = ds.shuffle(len(arr.y), seed=seed, reshuffle_each_iteration=True)

    def stain_and_mask(img, mask, y, w):
        x = tf.cast(img, tf.float32)
        if train:
            # Stand-in for stain and illumination differences between slides and microscopes.
            # Exposure is a gain: +20 % moves bright glass by ~45 levels and dark nuclei by ~10.
            x = x * tf.random.uniform([], 1 - 0.15 * jitter, 1 + 0.15 * jitter)
            x = tf.image.random_contrast(x, 1 - 0.15 * jitter, 1 + 0.15 * jitter)
            x = tf.image.random_hue(x / 255.0, 0.04 * jitter) * 255.0
            x = tf.image.random_saturation(x, 1 - 0.2 * jitter, 1 + 0.2 * jitter)
            x = tf.clip_by_value(x, 0.0, 255.0)
        if segmented:
            x = tf.where(mask[..., None], x, bg)
        if train:
            x = tf.image.random_flip_left_right(x)
            x = tf.image.random_flip_up_down(x)
            x = tf.image.rot90(x, tf.random.uniform([], 0, 4, tf.int32))
        return x, tf.one_hot(y, len(LABELS)), w

    ds = ds.map(stain_and_mask, num_parallel_calls=tf.data.AUTOTUNE).batch(batch)
    if train:
        import keras

        geo = keras.Sequential(
            [
                keras.layers.RandomZoom(0.1, fill_mode="reflect", seed=seed),
                keras.layers.RandomTranslation(0.05, 0.05, fill_mode="reflect", seed=seed),
            ]
        )
        ds = ds.map(lambda x, y, w: (geo(x, training=True), y, w), num_parallel_calls=tf.data.AUTOTUNE)
    return ds.prefetch(tf.data.AUTOTUNE)


def fit_head(
    model, train: Arrays, val: Arrays, params: PreprocessParams, cfg: TrainConfig, history: Dict[str, List[float]]
) -> None:
    """Phase 1: the softmax head on frozen, pooled backbone features, computed once.

    With the backbone frozen the features do not change between epochs, so fitting the head on cached
    features reaches convergence in seconds where end-to-end epochs would take minutes each.
    """
    import keras

    from .model import backbone_of

    backbone = backbone_of(model)
    pool = keras.Sequential(
        [keras.Input(model.input_shape[1:]), model.get_layer("to_unit_range"), backbone, model.get_layer("pool")]
    )
    f_tr = pool.predict(train.model_inputs(params).astype(np.float32), batch_size=64, verbose=0)
    f_va = pool.predict(val.model_inputs(params).astype(np.float32), batch_size=64, verbose=0)
    dense = model.get_layer("probabilities")
    head = keras.Sequential(
        [
            keras.Input(f_tr.shape[1:]),
            keras.layers.Dropout(model.get_layer("dropout").rate),
            keras.layers.Dense(
                dense.units, activation="softmax", kernel_regularizer=keras.regularizers.l2(cfg.head_l2)
            ),
        ]
    )
    head.compile(
        optimizer=keras.optimizers.Adam(cfg.lr_head), loss="sparse_categorical_crossentropy", metrics=["accuracy"]
    )
    h = head.fit(
        f_tr,
        train.y,
        validation_data=(f_va, val.y),
        epochs=cfg.head_epochs,
        batch_size=64,
        sample_weight=train.weights(),
        verbose=0,
        callbacks=[keras.callbacks.EarlyStopping(monitor="val_loss", patience=15, restore_best_weights=True)],
    )
    dense.set_weights(head.layers[-1].get_weights())
    for k, v in h.history.items():
        history.setdefault("head_" + k, []).extend(float(x) for x in v)
    log.info("head: %d epochs on features, val accuracy %.4f", len(h.history["loss"]), max(h.history["val_accuracy"]))


def train_model(train: Arrays, val: Arrays, params: PreprocessParams, cfg: TrainConfig) -> TrainResult:
    import keras

    from .model import build_classifier, unfreeze_top

    seed_everything(cfg.seed)
    t0 = time.perf_counter()
    shipped = params
    if params.input_mode == "balanced":
        # Balance once up front; from here on the arrays hold model pixels and are fed like raw ones.
        train = Arrays(train.model_inputs(params), train.mask, train.y)
        val = Arrays(val.model_inputs(params), val.mask, val.y)
        params = params.with_mode("raw")
    elif params.input_mode == "cell":
        # Cell crops (trainer/cellset.py) already are model pixels.
        params = params.with_mode("raw")
    model = build_classifier(weights=cfg.weights, size=train.resized.shape[1])
    history: Dict[str, List[float]] = {}
    if cfg.head_epochs:
        fit_head(model, train, val, params, cfg, history)
    epochs = len(history.get("head_loss", []))
    if cfg.fine_epochs:
        tr = _dataset(train, params, cfg.batch_size, True, cfg.seed, cfg.color_jitter)
        va = _dataset(val, params, cfg.batch_size, False, cfg.seed)
        n = unfreeze_top(model, cfg.fine_tune_from)
        # Cosine decay: at a constant rate the validation loss jumped by 5x between neighbouring epochs.
        steps = cfg.fine_epochs * int(np.ceil(len(train.y) / cfg.batch_size))
        lr = keras.optimizers.schedules.CosineDecay(cfg.lr_fine, decay_steps=steps, alpha=0.05)
        model.compile(
            optimizer=keras.optimizers.Adam(lr), loss=keras.losses.CategoricalCrossentropy(), metrics=["accuracy"]
        )
        before = model.evaluate(va, verbose=0, return_dict=True)
        head_weights = model.get_weights()
        log.info("fine-tuning %d backbone layers from val loss %.4f", n, before["loss"])
        stop = fine_tuning_stop(cfg)
        h = model.fit(tr, validation_data=va, epochs=cfg.fine_epochs, callbacks=[stop], verbose=cfg.verbose)
        for k, v in h.history.items():
            history.setdefault(k, []).extend(float(x) for x in v)
        epochs += len(h.history["loss"])
        # The weights kept are those of the best epoch early stopping watched (the last, if it watched none).
        kept = stop.best if stop.best is not None else h.history["val_loss"][-1]
        if kept >= before["loss"]:
            # Fine-tuning must earn its place on validation; otherwise ship the converged head.
            log.info(
                "fine-tuning did not lower val loss (%.4f >= %.4f): keeping the head-only model",
                kept,
                before["loss"],
            )
            model.set_weights(head_weights)
            history["fine_tuning_kept"] = [0.0]
        else:
            history["fine_tuning_kept"] = [1.0]
    return TrainResult(model=model, params=shipped, history=history, seconds=time.perf_counter() - t0, epochs=epochs)


def fine_tuning_stop(cfg: TrainConfig):
    """Early stopping of fine-tuning: on validation loss with ``cfg.patience``, restoring the best weights,
    and only from epoch ``cfg.early_stop_from`` (half the epochs when None): the best weights are those of
    an epoch at or after it."""
    import keras

    start = cfg.fine_epochs // 2 if cfg.early_stop_from is None else cfg.early_stop_from
    return keras.callbacks.EarlyStopping(
        monitor="val_loss", patience=cfg.patience, restore_best_weights=True, start_from_epoch=start
    )


def with_embedding(model):
    """The trained model with a second output, the pooled features: the device's distance-to-training check."""
    import keras

    return keras.Model(model.input, [model.output, model.get_layer("pool").output], name=model.name)


def predict_float(model, inputs: np.ndarray, batch: int = 64) -> np.ndarray:
    return np.asarray(model.predict(inputs.astype(np.float32), batch_size=batch, verbose=0))

"""The classifier: MobileNetV2 (Sandler et al., 2018) with a small softmax head.

The model eats raw 0..255 pixels, exactly what the device feeds the int8 TFLite file; the rescaling to
MobileNetV2's [-1, 1] range is the model's first layer, so no preprocessing step can drift between the two.
"""

from __future__ import annotations

import keras

from edge.inference.classifier import LABELS

# Fine-tuning unfreezes the inverted-residual blocks from here on (blocks 5-16 and the last 1x1 conv).
# Cell crops are far from ImageNet's objects: on the cell model, starting at block 5 rather than block 8
# (with a higher rate) lifted crop-level validation accuracy from 0.89 to 0.92.
FINE_TUNE_FROM = "block_5_expand"


def build_classifier(
    weights: str = "shared", size: int = 224, dropout: float = 0.2, n_classes: int = len(LABELS)
) -> keras.Model:
    """weights: "imagenet" (Keras download), "shared" (../shared int8 checkpoint, dequantized) or "none"."""
    backbone = keras.applications.MobileNetV2(
        input_shape=(size, size, 3), alpha=1.0, include_top=False, weights="imagenet" if weights == "imagenet" else None
    )
    if weights == "shared":
        from .weights import load_imagenet_tflite

        load_imagenet_tflite(backbone)
    backbone.trainable = False

    pixels = keras.Input(shape=(size, size, 3), name="pixels")
    x = keras.layers.Rescaling(1.0 / 127.5, offset=-1.0, name="to_unit_range")(pixels)
    # BatchNorm stays in inference mode even when blocks are unfrozen: ~2,000 images cannot re-estimate
    # ImageNet's statistics, and moving them would break the folded int8 weights we start from.
    x = backbone(x, training=False)
    x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    x = keras.layers.Dropout(dropout, name="dropout")(x)
    probs = keras.layers.Dense(n_classes, activation="softmax", name="probabilities")(x)
    return keras.Model(pixels, probs, name="edge_screen_mobilenetv2")


def backbone_of(model: keras.Model) -> keras.Model:
    return next(layer for layer in model.layers if isinstance(layer, keras.Model))


def unfreeze_top(model: keras.Model, from_layer: str = FINE_TUNE_FROM) -> int:
    """Make the backbone trainable from ``from_layer`` on (BatchNorm excluded). Returns #trainable layers."""
    backbone = backbone_of(model)
    backbone.trainable = True
    on = False
    n = 0
    for layer in backbone.layers:
        on = on or layer.name == from_layer
        layer.trainable = on and not isinstance(layer, keras.layers.BatchNormalization)
        n += int(layer.trainable)
    return n

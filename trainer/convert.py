"""Full-integer int8 TFLite conversion.

``TFLiteConverter.from_keras_model`` is the route that keeps the weights; converting a ``tf.function`` via
``from_concrete_functions`` was seen to silently drop them. Input and output are uint8 so the device feeds
raw pixels and reads probabilities in steps of 1/256.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np


def to_int8_tflite(model, representative: np.ndarray, out_path: str | Path) -> Path:
    import tensorflow as tf

    rep = representative.astype(np.float32)

    def gen():
        for i in range(len(rep)):
            yield [rep[i : i + 1]]

    conv = tf.lite.TFLiteConverter.from_keras_model(model)
    conv.optimizations = [tf.lite.Optimize.DEFAULT]
    conv.representative_dataset = gen
    conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    conv.inference_input_type = tf.uint8
    conv.inference_output_type = tf.uint8
    data = conv.convert()
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    out_path.write_bytes(data)
    return out_path

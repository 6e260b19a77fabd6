"""ImageNet initial weights for the Keras MobileNetV2 from the int8 TFLite checkpoint in ../shared.

The checkpoint's 52 backbone convolutions plus its 1x1 logits convolution map one to one, in order, onto
the Conv2D/DepthwiseConv2D layers of ``keras.applications.MobileNetV2``. Post-training quantization folded
each BatchNorm into its convolution: the int8 kernel times its per-channel scale is the folded kernel, and
the int32 bias times its scale is the folded offset. Loading therefore sets each kernel to the dequantized
folded kernel and turns the following BatchNorm into the identity plus that offset.
"""

from __future__ import annotations

from pathlib import Path
from typing import List, Tuple

import numpy as np

SHARED_WEIGHTS = Path(__file__).resolve().parents[2] / "shared" / "weights" / "imagenet-mobilenetv2"
TFLITE_CHECKPOINT = SHARED_WEIGHTS / "tf2_mobilenet_v2_1.0_224_ptq.tflite"


def _dequantize(interp, detail) -> np.ndarray:
    q = detail["quantization_parameters"]
    t = interp.get_tensor(detail["index"]).astype(np.float32)
    scales, zps, axis = q["scales"], q["zero_points"], q["quantized_dimension"]
    shape = [1] * t.ndim
    shape[axis] = -1
    return (t - zps.reshape(shape)) * scales.reshape(shape)


def read_checkpoint(path: Path = TFLITE_CHECKPOINT) -> List[Tuple[str, np.ndarray, np.ndarray]]:
    """(name, float kernel in TFLite layout, float bias) for every convolution, in network order."""
    from edge.inference.backends import load_backend

    interp = load_backend("auto", str(path), 1)._interp
    details = sorted(interp.get_tensor_details(), key=lambda d: d["index"])
    convs = []
    pending = None
    for d in details:
        if d["dtype"] == np.int8 and len(d["shape"]) == 4 and len(d["quantization_parameters"]["scales"]) > 1:
            pending = d
        elif pending is not None and d["dtype"] == np.int32 and len(d["shape"]) == 1:
            convs.append((pending["name"].split(";")[0], _dequantize(interp, pending), _dequantize(interp, d)))
            pending = None
    return convs


def load_imagenet_tflite(model, path: Path = TFLITE_CHECKPOINT, include_top: bool = False) -> int:
    """Copy the checkpoint into a Keras MobileNetV2 (alpha 1.0). Returns the number of layers set."""
    import keras

    convs = read_checkpoint(path)
    logits = convs.pop()  # 1x1 conv to 1,001 ImageNet classes (index 0 is "background")
    layers = [ly for ly in model.layers if isinstance(ly, (keras.layers.Conv2D, keras.layers.DepthwiseConv2D))]
    if len(layers) != len(convs):
        raise ValueError(f"checkpoint has {len(convs)} backbone convolutions, model has {len(layers)}")
    by_name = {ly.name: ly for ly in model.layers}
    for layer, (name, w, b) in zip(layers, convs):
        if isinstance(layer, keras.layers.DepthwiseConv2D):
            kernel = w.transpose(1, 2, 3, 0)  # (1, kh, kw, ch) -> (kh, kw, ch, 1)
        else:
            kernel = w.transpose(1, 2, 3, 0)  # (out, kh, kw, in) -> (kh, kw, in, out)
        if tuple(layer.kernel.shape) != kernel.shape:
            raise ValueError(f"{layer.name}: kernel {tuple(layer.kernel.shape)} vs checkpoint {name} {kernel.shape}")
        layer.kernel.assign(kernel)
        bn = by_name.get(_bn_name(layer.name))
        if bn is None:
            raise ValueError(f"no BatchNorm after {layer.name}")
        eps = bn.epsilon
        bn.set_weights([np.ones_like(b), b, np.zeros_like(b), np.full_like(b, 1.0 - eps)])
    n = len(layers)
    if include_top:
        dense = by_name["predictions"]
        w, b = logits[1], logits[2]
        dense.set_weights([w[1:, 0, 0, :].T, b[1:]])
        n += 1
    return n


def _bn_name(conv_name: str) -> str:
    # Keras names: Conv1 -> bn_Conv1, Conv_1 -> Conv_1_bn, block_N_expand -> block_N_expand_BN, ...
    if conv_name == "Conv1":
        return "bn_Conv1"
    if conv_name == "Conv_1":
        return "Conv_1_bn"
    return conv_name + "_BN"


def imagenet_labels() -> List[str]:
    lines = (SHARED_WEIGHTS / "imagenet_labels.txt").read_text().splitlines()
    return lines[1:] if lines and lines[0].strip().lower() == "background" else lines

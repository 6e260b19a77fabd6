from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from . import KERNELS, BackendUnavailable


@dataclass(frozen=True)
class TensorInfo:
    shape: tuple
    dtype: type
    scale: float
    zero_point: int


class Interpreter:
    """A loaded TFLite model with one input tensor and one or more output tensors."""

    name = "base"

    def __init__(self, model_path: str, num_threads: int, kernels: str = "xnnpack"):
        if kernels not in KERNELS:
            raise BackendUnavailable(f"unknown kernels {kernels!r}; choose one of {', '.join(KERNELS)}")
        self.kernels = kernels
        self._interp = self._make(model_path, num_threads)
        self._interp.allocate_tensors()
        inp = self._interp.get_input_details()
        out = self._interp.get_output_details()
        if len(inp) != 1 or not out:
            raise ValueError(f"expected one input and at least one output tensor, found {len(inp)} and {len(out)}")
        self._in_idx, self._out_idx = inp[0]["index"], [o["index"] for o in out]
        self.input = _info(inp[0])
        self.outputs = [_info(o) for o in out]

    def _make(self, model_path: str, num_threads: int):
        raise NotImplementedError

    def invoke(self, x: np.ndarray) -> list:
        """x: a batch of one in the input tensor's dtype. Returns copies of the raw output tensors."""
        self._interp.set_tensor(self._in_idx, x)
        self._interp.invoke()
        return [self._interp.get_tensor(i).copy() for i in self._out_idx]


def _info(d: dict) -> TensorInfo:
    scale, zp = d.get("quantization", (0.0, 0))
    return TensorInfo(shape=tuple(int(s) for s in d["shape"]), dtype=d["dtype"], scale=float(scale),
                      zero_point=int(zp))

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


class BackendUnavailable(RuntimeError):
    pass


@dataclass(frozen=True)
class TensorInfo:
    shape: tuple
    dtype: type
    scale: float
    zero_point: int


class Interpreter:
    """A loaded TFLite model with a single input and a single output tensor."""

    name = "base"

    def __init__(self, model_path: str, num_threads: int):
        self._interp = self._make(model_path, num_threads)
        self._interp.allocate_tensors()
        inp = self._interp.get_input_details()
        out = self._interp.get_output_details()
        if len(inp) != 1 or len(out) != 1:
            raise ValueError(f"expected one input and one output tensor, found {len(inp)} and {len(out)}")
        self._in_idx, self._out_idx = inp[0]["index"], out[0]["index"]
        self.input = _info(inp[0])
        self.output = _info(out[0])

    def _make(self, model_path: str, num_threads: int):
        raise NotImplementedError

    def invoke(self, x: np.ndarray) -> np.ndarray:
        """x: a batch of one in the input tensor's dtype. Returns a copy of the raw output tensor."""
        self._interp.set_tensor(self._in_idx, x)
        self._interp.invoke()
        return self._interp.get_tensor(self._out_idx).copy()


def _info(d: dict) -> TensorInfo:
    scale, zp = d.get("quantization", (0.0, 0))
    return TensorInfo(shape=tuple(int(s) for s in d["shape"]), dtype=d["dtype"], scale=float(scale),
                      zero_point=int(zp))

from __future__ import annotations

import os
import sys
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np

from edge.inference.backends import KERNELS, BackendUnavailable, cpuinfo

# The runtimes' C++ code prints this to file descriptor 2 when it builds an interpreter: every command and
# every daemon start would show it, and it says nothing a technician can act on.
NATIVE_NOTICES = (b"INFO: Created TensorFlow Lite XNNPACK delegate for CPU.",)


@contextmanager
def without_native_notices():
    """Route fd 2 through a pipe while the native code runs, then pass on every line but the notices, so
    nothing else written meanwhile (another thread's log line) is lost."""
    try:
        saved = os.dup(2)
        r, w = os.pipe()
    except OSError:  # no fd 2 at all: nothing to filter
        yield
        return
    sys.stderr.flush()
    os.dup2(w, 2)
    os.close(w)
    try:
        yield
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)
        os.close(saved)
        chunks = []
        while True:
            chunk = os.read(r, 65536)
            if not chunk:
                break
            chunks.append(chunk)
        os.close(r)
        kept = [
            ln for ln in b"".join(chunks).splitlines(keepends=True) if not any(ln.startswith(n) for n in NATIVE_NOTICES)
        ]
        if kept:
            os.write(2, b"".join(kept))


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
        why = cpuinfo.problem()
        if why:
            raise BackendUnavailable(why)
        with without_native_notices():
            self._interp = self._make(model_path, num_threads)
            self._interp.allocate_tensors()
        inp = self._interp.get_input_details()
        out = self._interp.get_output_details()
        if len(inp) != 1 or not out:
            raise ValueError(f"expected one input and at least one output tensor, found {len(inp)} and {len(out)}")
        self._in_idx, self._out_idx = inp[0]["index"], [o["index"] for o in out]
        self.input = _info(inp[0])
        self.outputs = [_info(o) for o in out]
        self._batch = int(self.input.shape[0]) if self.input.shape else 1

    def _make(self, model_path: str, num_threads: int):
        raise NotImplementedError

    def invoke(self, x: np.ndarray) -> list:
        """x: a batch of n inputs in the input tensor's dtype (n >= 1). Returns copies of the raw output
        tensors, n rows each. The input tensor is resized when n changes (a few tens of microseconds);
        every row of a batch comes out exactly as that input alone would (tests/test_batched_invoke.py)."""
        n = int(x.shape[0])
        if n != self._batch:
            self._interp.resize_tensor_input(self._in_idx, [n, *self.input.shape[1:]])
            self._interp.allocate_tensors()
            self._batch = n
        self._interp.set_tensor(self._in_idx, x)
        self._interp.invoke()
        return [self._interp.get_tensor(i).copy() for i in self._out_idx]


def _info(d: dict) -> TensorInfo:
    scale, zp = d.get("quantization", (0.0, 0))
    return TensorInfo(shape=tuple(int(s) for s in d["shape"]), dtype=d["dtype"], scale=float(scale), zero_point=int(zp))

"""TFLite runtimes behind one interface, one small class per runtime (like Frigate's detector plugins).

Each backend module exposes ``NAME`` and ``Backend`` (a :class:`edge.inference.backends.base.Interpreter`). Imports of
the runtime packages happen only when a backend is chosen, so a device with only one of them installed works.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # numpy: imported with a backend, not with the config that names one
    from edge.inference.backends.base import Interpreter


class BackendUnavailable(RuntimeError):
    pass


# "xnnpack": XNNPACK's int8 kernels (litert's default, several times faster on x86 and aarch64).
# "builtin": TFLite's own int8 kernels, which tflite_runtime runs: XNNPACK requantizes through float, the
# builtin kernels in fixed point, and the one-step differences add up over 53 layers, so only "builtin"
# gives the same bytes on both runtimes (docs/backend-parity.md).
KERNELS = ("xnnpack", "builtin")

# Order is preference for backend="auto".
BACKENDS = ("litert", "tflite_runtime")
PACKAGES = {"litert": "ai-edge-litert", "tflite_runtime": "tflite-runtime"}
MODULES = {"litert": "ai_edge_litert", "tflite_runtime": "tflite_runtime"}


def resolve(name: str) -> str:
    """The backend ``name`` means here ("auto": the first whose package is installed), without loading it."""
    from importlib.util import find_spec

    if name != "auto":
        return name
    return next((n for n in BACKENDS if find_spec(MODULES[n]) is not None), "none installed")


def load_backend(name: str, model_path: str, num_threads: int, kernels: str = "xnnpack") -> Interpreter:
    names = BACKENDS if name == "auto" else (name,)
    if name != "auto" and name not in BACKENDS:
        raise BackendUnavailable(f"unknown backend {name!r}; choose one of auto, {', '.join(BACKENDS)}")
    missing = []
    for n in names:
        mod = importlib.import_module(f"edge.inference.backends.{n}")
        try:
            return mod.Backend(model_path, num_threads, kernels)
        except ImportError:
            missing.append(PACKAGES[n])
    raise BackendUnavailable(
        "no TFLite runtime is installed: pip install " + " or ".join(missing) + " (tflite-runtime needs numpy<2)"
    )


__all__ = ["BACKENDS", "KERNELS", "resolve", "BackendUnavailable", "load_backend"]

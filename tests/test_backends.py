"""litert and tflite_runtime must give the same answers on real smears (the 32-bit Pi runs the latter).

tflite_runtime needs numpy<2, so it lives in its own environment: ./scripts/test builds .venv-tflite and
names its Python in EDGE_SCREEN_TFLITE_PYTHON; the comparison runs each backend in a real subprocess.
"""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.report_support import model_path
from tests.shared_data import DATASET, HAVE_DATASET, NO_DATASET

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))
import backend_parity  # noqa: E402

TFLITE_PY = os.environ.get("EDGE_SCREEN_TFLITE_PYTHON", "")


def _has_tflite_runtime(py: str) -> bool:
    return (
        bool(py)
        and subprocess.run([py, "-c", "import tflite_runtime.interpreter"], capture_output=True).returncode == 0
    )


needs_both = pytest.mark.skipif(
    not _has_tflite_runtime(TFLITE_PY),
    reason="no tflite_runtime: set EDGE_SCREEN_TFLITE_PYTHON to a Python that has "
    "it (./scripts/test builds .venv-tflite)",
)


def _real_paths():
    return [str(p) for folder in sorted(DATASET.iterdir()) for p in sorted(folder.glob("*.jpg"))[::40]]


@needs_both
@pytest.mark.skipif(not HAVE_DATASET, reason=NO_DATASET)
def test_builtin_kernels_give_tflite_runtime_s_answers_exactly():
    paths = _real_paths()
    a = backend_parity.run_backend(sys.executable, "litert", str(model_path()), paths, kernels="builtin")
    b = backend_parity.run_backend(TFLITE_PY, "tflite_runtime", str(model_path()), paths)
    assert {r["backend"] for r in a if "backend" in r} == {"litert"}
    assert {r["backend"] for r in b if "backend" in r} == {"tflite_runtime"}
    res = backend_parity.compare(a, b)
    assert res["classified_by_both"] >= 0.9 * len(paths)
    assert res["refusal_agreement"] == 1.0 and res["max_score_difference"] == 0.0, res


@needs_both
@pytest.mark.skipif(not HAVE_DATASET, reason=NO_DATASET)
def test_xnnpack_kernels_rarely_change_a_verdict():
    """XNNPACK requantizes through float: scores move a little, verdicts almost never (the card has the
    full validation figure)."""
    paths = _real_paths()
    res = backend_parity.compare(
        backend_parity.run_backend(sys.executable, "litert", str(model_path()), paths),
        backend_parity.run_backend(TFLITE_PY, "tflite_runtime", str(model_path()), paths),
    )
    assert res["verdict_agreement"] >= 0.98, res


@needs_both
def test_both_backends_agree_on_synthetic_smears(tmp_path):
    from edge.imaging import synthetic

    for seed in range(6):
        (tmp_path / f"s{seed}.png").write_bytes(synthetic.encode(synthetic.smear(seed, n_wbc=3), "png"))
    paths = sorted(str(p) for p in tmp_path.glob("*.png"))
    res = backend_parity.compare(
        backend_parity.run_backend(sys.executable, "litert", str(model_path()), paths, "builtin"),
        backend_parity.run_backend(TFLITE_PY, "tflite_runtime", str(model_path()), paths),
    )
    assert res["refusal_agreement"] == 1.0 and res["max_score_difference"] == 0.0, res

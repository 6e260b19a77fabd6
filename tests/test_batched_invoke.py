"""All cells of a field in one interpreter run give exactly the answers of one run per cell.

`Classifier.predict_field` stacks a field's cell crops into one batch (the input tensor is resized to it);
int8 arithmetic is per sample, so each row must come out bit for bit as that crop alone. Checked on real
fields with the shipped model, on every backend and kernel set this machine has (tflite_runtime, which
needs numpy<2, in its own Python: EDGE_SCREEN_TFLITE_PYTHON, as in test_backends.py).
"""

import json
import os
import subprocess
from pathlib import Path

import numpy as np
import pytest

from edge.imaging import synthetic
from edge.imaging.decode import decode_file
from edge.imaging.preprocess import decode_target, preprocess_image
from edge.inference.classifier import Classifier, FieldPrediction, combine_cells
from edge.vocabulary import BENIGN
from tests.report_support import model_path
from tests.shared_data import HAVE_DATASET, real_images

ROOT = Path(__file__).resolve().parents[1]
TFLITE_PY = os.environ.get("EDGE_SCREEN_TFLITE_PYTHON", "")


def _fields(clf: Classifier) -> list:
    """Each field's model inputs: real smears (synthetic ones where ../shared is absent), plus a batch of
    one and the most cells a card allows."""
    p = clf.preprocessing
    if HAVE_DATASET:
        rgbs = [decode_file(f, target=decode_target(p)) for f in real_images(3)]
        out = [preprocess_image(d.rgb, p, decode_factor=d.scale).model_inputs for d in rgbs]
    else:
        out = [preprocess_image(synthetic.smear(s, n_wbc=4), p).model_inputs for s in range(8)]
    out = [x for x in out if x]
    assert out and any(len(x) > 1 for x in out)
    return out + [out[0][:1]]


def _per_cell(clf: Classifier, inputs: list) -> tuple:
    rows = [clf.invoke_all(x) for x in inputs]
    return np.stack([r[0] for r in rows]), np.stack([r[1] for r in rows])


@pytest.mark.parametrize("kernels", ["xnnpack", "builtin"])
def test_one_batched_invoke_equals_one_invoke_per_cell(kernels):
    # builtin kernels: 1 thread (their thread pool only costs on 2 cores, README "Performance")
    clf = Classifier(model_path(), backend="litert", num_threads=2 if kernels == "xnnpack" else 1, kernels=kernels)
    fields = _fields(clf)
    # Batches of changing size one after the other: the input tensor is resized back and forth.
    for inputs in fields + fields[::-1]:
        probs, embs = clf.invoke_batch(np.stack(inputs))
        one_probs, one_embs = _per_cell(clf, inputs)
        assert probs.shape[0] == len(inputs)
        assert np.array_equal(probs, one_probs) and np.array_equal(embs, one_embs)


def test_the_field_answer_is_the_per_cell_answer():
    """predict_field (one batch) against the field answer built from one invoke per cell."""
    clf = Classifier(model_path(), backend="litert", num_threads=2)
    for inputs in _fields(clf):
        got = clf.predict_field(inputs)
        probs, embs = _per_cell(clf, inputs)
        probs = np.stack([p / p.sum() for p in np.clip(probs, 0.0, None)])
        dists = [clf.ood.distance(e) if clf.ood is not None else 0.0 for e in embs]
        assert got.distances == [round(d, 2) for d in dists]
        kept = [i for i, d in enumerate(dists) if d <= (clf.ood.max_distance if clf.ood else float("inf"))]
        if not kept:
            assert got.prediction is None
            continue
        assert isinstance(got, FieldPrediction) and got.prediction is not None
        want = clf.decide(combine_cells(probs[kept], clf.card.extra.get("cell_rule"), clf.labels.index(BENIGN)))
        assert got.prediction.probabilities == want.probabilities
        assert got.prediction.malignant_score == want.malignant_score
        assert got.cell_scores == [round(1.0 - float(probs[i][clf.labels.index(BENIGN)]), 4) for i in kept]


_TFLITE_WORKER = """
import json, sys
import numpy as np
sys.path.insert(0, sys.argv[1])
from edge.imaging import synthetic
from edge.imaging.decode import decode_file
from edge.imaging.preprocess import decode_target, preprocess_image
from edge.inference.classifier import Classifier
clf = Classifier(sys.argv[2], backend="tflite_runtime", num_threads=1)
p = clf.preprocessing
paths = json.loads(sys.argv[3])
ds = [decode_file(f, target=decode_target(p)) for f in paths]
fields = [preprocess_image(d.rgb, p, decode_factor=d.scale).model_inputs for d in ds]
fields = [x for x in fields if x] or [preprocess_image(synthetic.smear(s, n_wbc=4), p).model_inputs for s in range(4)]
same = []
for inputs in fields + [fields[0][:1]] + fields[::-1]:
    probs, embs = clf.invoke_batch(np.stack(inputs))
    rows = [clf.invoke_all(x) for x in inputs]
    same.append(bool(np.array_equal(probs, np.stack([r[0] for r in rows]))
                     and np.array_equal(embs, np.stack([r[1] for r in rows]))))
print(json.dumps({"backend": clf.backend, "same": same}))
"""


@pytest.mark.skipif(
    not TFLITE_PY or not Path(TFLITE_PY).exists(),
    reason="no tflite_runtime: set EDGE_SCREEN_TFLITE_PYTHON (./scripts/test builds .venv-tflite)",
)
def test_batched_invoke_on_tflite_runtime():
    paths = [str(p) for p in real_images(2)]
    out = subprocess.run(
        [TFLITE_PY, "-c", _TFLITE_WORKER, str(ROOT), str(model_path()), json.dumps(paths)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    if "No module named 'tflite_runtime'" in out.stderr:
        pytest.skip("EDGE_SCREEN_TFLITE_PYTHON has no tflite_runtime")
    assert out.returncode == 0, out.stderr[-2000:]
    res = json.loads(out.stdout.strip().splitlines()[-1])
    assert res["backend"] == "tflite_runtime" and res["same"] and all(res["same"]), res


def test_a_field_with_more_cells_than_before_still_matches():
    """Guards the resize bookkeeping: the batch size goes 1, 6, 2, 6 on one interpreter."""
    clf = Classifier(model_path(), backend="litert", num_threads=1)
    x = np.stack([synthetic.smear(s, 112)[:112, :112] for s in range(6)]).astype(np.uint8)
    for n in (1, 6, 2, 6, 1):
        probs, _ = clf.invoke_batch(x[:n])
        assert np.array_equal(probs, np.stack([clf.invoke_all(v)[0] for v in x[:n]]))


def test_a_cell_is_scored_in_the_card_s_orientations_and_turning_it_changes_nothing():
    from edge.inference.classifier import cell_views

    # The classifier reads its card's cell_views at each invoke, so the in-memory card decides.
    plain = Classifier(model_path(), backend="litert", num_threads=1)
    plain.card.set_section("cell_views", 1)
    four = Classifier(model_path(), backend="litert", num_threads=1)
    four.card.set_section("cell_views", 4)
    inputs = np.stack(max(_fields(plain), key=len))
    probs, embs = four.invoke_batch(inputs)
    # each row: the geometric mean of the four orientations, each scored as the model alone scores it
    per_view = np.stack([plain.invoke_batch(np.ascontiguousarray(v))[0] for v in cell_views(inputs, 4)])
    want = np.exp(np.log(np.clip(per_view, 1e-4, 1.0)).mean(axis=0))
    assert np.allclose(probs, want, rtol=1e-6, atol=1e-7)
    assert np.array_equal(embs, plain.invoke_batch(inputs)[1])  # the crop as it lies
    # a crop mirrored or turned half round is the same cell: the same four views, the same answer
    for turned in cell_views(inputs, 4)[1:]:
        assert np.allclose(four.invoke_batch(np.ascontiguousarray(turned))[0], probs, rtol=1e-6, atol=1e-7)
    # while the model alone sees the orientations as different inputs (else the views would buy nothing;
    # its probabilities may still agree where it is sure, as on generated smears)
    mirrored = np.ascontiguousarray(cell_views(inputs, 2)[1])
    assert not np.array_equal(plain.invoke_batch(mirrored)[1], plain.invoke_batch(inputs)[1])

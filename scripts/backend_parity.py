#!/usr/bin/env python3
"""Do litert and tflite_runtime give the same answers? Runs the device's per-field path under each.

tflite_runtime needs numpy<2, so it usually lives in its own virtual environment: each backend runs in
the Python given for it, as a worker that prints one JSON line per field, and the parent compares.

    scripts/backend_parity.py --tflite-python .venv-tflite/bin/python [--model M] [--out parity.json] [DIR]

DIR defaults to the validation blocks of ../shared's dataset (every field when --all).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def worker(backend: str, model: str | None, paths: list, kernels: str = "xnnpack") -> None:
    from edge.imaging.decode import DecodeError, decode_file
    from edge.imaging.preprocess import decode_target, preprocess_image
    from edge.inference.classifier import Classifier

    clf = Classifier(model, backend=backend, num_threads=1, kernels=kernels)
    for p in paths:
        try:
            pre = preprocess_image(decode_file(p, target=decode_target(clf.preprocessing)).rgb, clf.preprocessing)
        except DecodeError as e:
            print(json.dumps({"path": p, "refusal": str(e)}), flush=True)
            continue
        fp = clf.predict_field(pre.model_inputs)
        row = {"path": p, "backend": clf.backend, "kernels": clf.kernels, "refusal": fp.refusal}
        if fp.prediction is not None:
            row.update(label=fp.prediction.label, score=fp.prediction.malignant_score, verdict=fp.prediction.verdict)
        print(json.dumps(row), flush=True)


def run_backend(python: str, backend: str, model: str | None, paths: list, kernels: str = "xnnpack") -> list:
    cmd = [python, str(Path(__file__).resolve()), "--worker", backend, "--kernels", kernels]
    if model:
        cmd += ["--model", model]
    out = subprocess.run(cmd, input="\n".join(map(str, paths)), capture_output=True, text=True, check=True)
    return [json.loads(line) for line in out.stdout.splitlines() if line.startswith("{")]


def compare(a: list, b: list) -> dict:
    both = [(x, y) for x, y in zip(a, b) if not x["refusal"] and not y["refusal"]]
    diffs = sorted(
        ((abs(x["score"] - y["score"]), Path(x["path"]).name, x["score"], y["score"]) for x, y in both), reverse=True
    )
    return {
        "fields": len(a),
        "classified_by_both": len(both),
        "refusal_agreement": round(
            sum(bool(x["refusal"]) == bool(y["refusal"]) for x, y in zip(a, b)) / max(len(a), 1), 4
        ),
        "verdict_agreement": round(sum(x["verdict"] == y["verdict"] for x, y in both) / max(len(both), 1), 4),
        "label_agreement": round(sum(x["label"] == y["label"] for x, y in both) / max(len(both), 1), 4),
        "max_score_difference": round(diffs[0][0], 4) if diffs else 0.0,
        "largest_differences": [{"file": d[1], "litert": d[2], "tflite_runtime": d[3]} for d in diffs[:5]],
    }


def default_paths(all_fields: bool) -> list:
    from trainer.data import SHARED_DATASET, load_split

    sp = load_split(SHARED_DATASET)
    return [str(s.path) for s in (sp.train + sp.val if all_fields else sp.val)]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("dir", nargs="?", help="folder of images (default: the dataset's validation blocks)")
    ap.add_argument("--model")
    ap.add_argument("--tflite-python", default=sys.executable, help="Python that has tflite_runtime")
    ap.add_argument("--litert-python", default=sys.executable, help="Python that has ai-edge-litert")
    ap.add_argument("--all", action="store_true", help="every field of the dataset, not only validation")
    ap.add_argument("--out", help="write the comparison here as JSON")
    ap.add_argument(
        "--card", action="store_true", help="also record it in the model's card under backend_parity.<kernels>"
    )
    ap.add_argument(
        "--kernels",
        default="xnnpack",
        choices=("xnnpack", "builtin"),
        help="litert's int8 kernels (tflite_runtime always runs its builtin ones)",
    )
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        worker(args.worker, args.model, [line.strip() for line in sys.stdin if line.strip()], args.kernels)
        return 0
    if args.dir:
        paths = sorted(str(p) for p in Path(args.dir).rglob("*") if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
    else:
        paths = default_paths(args.all)
    a = run_backend(args.litert_python, "litert", args.model, paths, args.kernels)
    b = run_backend(args.tflite_python, "tflite_runtime", args.model, paths)
    res = {"litert_kernels": args.kernels, **compare(a, b)}
    text = json.dumps(res, indent=2)
    if args.out:
        Path(args.out).write_text(text + "\n")
    if args.card:
        from edge.inference.classifier import DEFAULT_MODEL, card_path_for

        card = card_path_for(args.model or DEFAULT_MODEL)
        d = json.loads(card.read_text())
        d.setdefault("backend_parity", {})[f"litert-{args.kernels} vs tflite_runtime"] = res
        card.write_text(json.dumps(d, indent=2) + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python3
"""The model's inputs for a fixed set of fields, as sha256 digests: the same bytes on every CPU, or not.

    scripts/model_inputs.py write [--out tests/data/model_inputs.json]   # the committed reference
    scripts/model_inputs.py check [--ref tests/data/model_inputs.json]   # exit 1 on any drift
    scripts/model_inputs.py digest --out FILE [--fields N]               # per-field digests (scripts/pi_check.sh)
    scripts/model_inputs.py fields [--fields N]                          # the real fields, one path a line
    scripts/model_inputs.py compare A.json B.json                        # two digest files, field by field

A field's digest list holds one sha256 per model input (one per white cell with the shipped cell-mode
card), computed by the device's own code: decode, optical normalisation, segmentation, stain
normalisation, crops (``edge.imaging.preprocess.preprocess_file``). Real fields come from ../shared/datasets
(Taleqani, plus PBC and BCCD fields, which are resampled to the training scale); where that is absent,
generated smears (``edge.imaging.synthetic``) stand in. Digests of generated smears are compared only on x86-64:
the generator draws anti-aliased float circles, which is not what this check is about.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import platform
import sys
from pathlib import Path
from typing import Dict, List

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from edge.imaging.preprocess import PreprocessParams, preprocess_file, preprocess_image  # noqa: E402
from edge.inference.classifier import DEFAULT_MODEL, card_path_for, load_card  # noqa: E402

SHARED = REPO.parent / "shared" / "datasets"
REFERENCE = REPO / "tests" / "data" / "model_inputs.json"
N_SYNTHETIC = 4


def params() -> PreprocessParams:
    return load_card(card_path_for(DEFAULT_MODEL)).preprocessing


def real_fields(n: int = 24) -> List[Path]:
    """``n`` Taleqani fields spread over the classes and the numbering, then 4 PBC and 4 BCCD fields."""
    out: List[Path] = []
    tal = SHARED / "all-taleqani"
    if tal.is_dir():
        folders = sorted(p for p in tal.iterdir() if p.is_dir())
        per = max(1, n // max(1, len(folders)))
        for folder in folders:
            files = sorted(folder.glob("*.jpg"))
            step = max(1, len(files) // per)
            out.extend(files[step // 2 :: step][:per])
    for name, k in (("pbc-normal", 4), ("bccd-fields", 4)):
        files = sorted((SHARED / name).rglob("*.jpg")) if (SHARED / name).is_dir() else []
        out.extend(files[:: max(1, len(files) // k)][:k])
    return out


def _sha(a) -> str:
    import numpy as np

    return hashlib.sha256(np.ascontiguousarray(a).tobytes()).hexdigest()


def digest_fields(paths: List[Path]) -> Dict[str, dict]:
    p = params()
    out = {}
    for path in paths:
        pre = preprocess_file(path, p)
        key = str(path.relative_to(SHARED)) if SHARED in path.parents else str(path)
        out[key] = {
            "inputs": [_sha(x) for x in pre.model_inputs],
            "file_sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
        }
    return out


def digest_synthetic() -> Dict[str, dict]:
    from edge.imaging.synthetic import smear

    p = params()
    return {
        f"synthetic-{seed}": {"inputs": [_sha(x) for x in preprocess_image(smear(seed, 320), p).model_inputs]}
        for seed in range(N_SYNTHETIC)
    }


def _diff(ref: Dict[str, dict], got: Dict[str, dict]) -> List[str]:
    bad = []
    for k, v in ref.items():
        g = got.get(k)
        if g is None:
            continue
        if g["inputs"] != v["inputs"]:
            same = sum(a == b for a, b in zip(v["inputs"], g["inputs"]))
            bad.append(f"{k}: {len(g['inputs'])} inputs vs {len(v['inputs'])} in the reference, {same} identical")
    return bad


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    w = sub.add_parser("write", help="write the reference digests (real fields and generated smears)")
    w.add_argument("--out", type=Path, default=REFERENCE)
    c = sub.add_parser("check", help="recompute and compare with the reference; exit 1 on drift")
    c.add_argument("--ref", type=Path, default=REFERENCE)
    d = sub.add_parser("digest", help="digests of the real fields (or the given files) to a JSON file")
    d.add_argument("--out", type=Path, required=True)
    d.add_argument("--fields", type=int, default=40)
    d.add_argument("files", nargs="*", type=Path)
    f = sub.add_parser("fields", help="print the real fields' paths")
    f.add_argument("--fields", type=int, default=40)
    m = sub.add_parser("compare", help="compare two digest files")
    m.add_argument("a", type=Path)
    m.add_argument("b", type=Path)
    a = ap.parse_args(argv)

    if a.cmd == "fields":
        print("\n".join(str(p) for p in real_fields(a.fields)))
        return 0
    if a.cmd == "digest":
        got = digest_fields(a.files or real_fields(a.fields))
        a.out.write_text(json.dumps({"machine": platform.machine(), "fields": got}, indent=1, sort_keys=True))
        return 0
    if a.cmd == "compare":
        x, y = (json.loads(p.read_text())["fields"] for p in (a.a, a.b))
        bad = _diff(x, y)
        common = len(set(x) & set(y))
        for line in bad:
            print("  differs:", line)
        print(f"model inputs: {common - len(bad)}/{common} fields bit-identical")
        return 1 if bad or not common else 0
    if a.cmd == "write":
        ref = {
            "params_sha256": hashlib.sha256(json.dumps(params().to_dict(), sort_keys=True).encode()).hexdigest(),
            "fields": digest_fields(real_fields()),
            "synthetic": digest_synthetic(),
        }
        a.out.parent.mkdir(parents=True, exist_ok=True)
        a.out.write_text(json.dumps(ref, indent=1, sort_keys=True) + "\n")
        print(f"wrote {len(ref['fields'])} real and {len(ref['synthetic'])} generated fields to {a.out}")
        return 0
    ref = json.loads(a.ref.read_text())
    now = hashlib.sha256(json.dumps(params().to_dict(), sort_keys=True).encode()).hexdigest()
    if now != ref["params_sha256"]:
        print(f"the shipped card's preprocessing changed since {a.ref} was written: run `write` again")
        return 1
    paths = [SHARED / k for k in ref["fields"] if (SHARED / k).is_file()]
    got = digest_fields(paths)
    for k, v in got.items():
        if v["file_sha256"] != ref["fields"][k]["file_sha256"]:
            print(f"{k}: the field file itself changed")
            return 1
    bad = _diff(ref["fields"], got)
    checked = len(got)
    if platform.machine() in ("x86_64", "AMD64") or not got:
        bad += _diff(ref["synthetic"], digest_synthetic())
        checked += len(ref["synthetic"])
    for line in bad:
        print("drift:", line)
    print(f"model inputs: {checked - len(bad)}/{checked} fields identical to {a.ref.name}")
    return 1 if bad or checked == 0 else 0


if __name__ == "__main__":
    sys.exit(main())

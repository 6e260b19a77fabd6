#!/usr/bin/env python3
"""Compare an emulated Pi's answers and model inputs with x86-64's (scripts/pi_check.sh).

    scripts/pi_compare.py X86_DIR ARM_DIR [--label arm64] [--max-score-diff 0.01]

Each directory holds ``classify.jsonl`` (``edge-screen classify --json --no-db``) and ``digests.json``
(``scripts/model_inputs.py digest``). Fields are matched by their path below ``shared/datasets``.
Fails (exit 1) when a field's model inputs are not bit-identical, or its status, verdict, label or
needs_review differ, or a score differs by more than ``--max-score-diff``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def _key(path: str) -> str:
    return path.split("/datasets/", 1)[-1]


def _answers(path: Path) -> dict:
    out = {}
    for line in path.read_text().splitlines():
        if line.strip():
            r = json.loads(line)
            out[_key(r["path"])] = r
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("x86", type=Path)
    ap.add_argument("arm", type=Path)
    ap.add_argument("--label", default="arm")
    ap.add_argument("--max-score-diff", type=float, default=0.01)
    ap.add_argument("--x86-answers", default="classify.jsonl")
    ap.add_argument("--arm-answers", default="classify.jsonl")
    ap.add_argument(
        "--verdicts-only",
        action="store_true",
        help="fail only on status/verdict differences (label, needs_review, score are reported)",
    )
    a = ap.parse_args(argv)
    x, y = _answers(a.x86 / a.x86_answers), _answers(a.arm / a.arm_answers)
    common = sorted(set(x) & set(y))
    flips, diffs = [], []
    for k in common:
        p, q = x[k], y[k]
        for f in ("status", "verdict", "label", "needs_review"):
            if p.get(f) != q.get(f):
                flips.append(f"{k}: {f} {p.get(f)!r} (x86) vs {q.get(f)!r}")
        if p.get("score") is not None and q.get("score") is not None:
            diffs.append((abs(p["score"] - q["score"]), k))
    dx = json.loads((a.x86 / "digests.json").read_text())["fields"]
    dy = json.loads((a.arm / "digests.json").read_text())["fields"]
    same_inputs = [k for k in dx if k in dy and dx[k]["inputs"] == dy[k]["inputs"]]
    n_in = len(set(dx) & set(dy))
    n_cells = sum(len(dx[k]["inputs"]) for k in same_inputs)
    worst = max(diffs) if diffs else (0.0, "-")
    agree = len(common) - len({f.split(":")[0] for f in flips})
    print(
        f"pi_check: {a.label}: {agree}/{len(common)} fields agree with x86-64 (status, verdict, label, "
        f"needs_review); max score diff {worst[0]:.4f} ({worst[1]}); model inputs bit-identical "
        f"{len(same_inputs)}/{n_in} fields ({n_cells} cell crops)"
    )
    for f in flips:
        print(f"pi_check: {a.label}:   {f}")
    for k in sorted(set(dx) & set(dy)):
        if dx[k]["inputs"] != dy[k]["inputs"]:
            print(f"pi_check: {a.label}:   model inputs differ: {k}")
    hard = [f for f in flips if " status " in f or " verdict " in f] if a.verdicts_only else flips
    too_far = worst[0] > a.max_score_diff and not a.verdicts_only
    bad = bool(hard) or too_far or len(same_inputs) != n_in or not common
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())

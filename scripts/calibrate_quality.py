#!/usr/bin/env python3
"""Calibrate the quality gate's default thresholds on the real smear images.

Measures every image in ../shared/datasets/all-taleqani (or the folder given), takes each metric's min/max,
and places each threshold with a margin beyond the real range: a lower bound at half the real minimum, an
upper bound halfway between the real maximum and the metric's ceiling. It then checks that no real image is
refused and that each kind of bad image (blurred, black, white, uniform, gray noise) is, and prints the
``[quality]`` TOML block to paste into config/edge-screen.toml and edge/config/sections.py's defaults.

    .venv/bin/python scripts/calibrate_quality.py [FOLDER] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from edge import synthetic  # noqa: E402
from edge.imaging.decode import decode_file  # noqa: E402
from edge.imaging.preprocess import PreprocessParams, preprocess  # noqa: E402
from edge.pipeline import quality

DEFAULT_DIR = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "all-taleqani"
METRICS = ("focus", "brightness", "clipped_fraction", "stain_contrast", "cell_fraction")


def metrics(rgb: np.ndarray, params: PreprocessParams) -> dict:
    rep = quality.measure(rgb, params)
    st = preprocess(rgb, params).stats
    return {
        "focus": rep.focus,
        "brightness": rep.brightness,
        "clipped_fraction": rep.clipped_fraction,
        "stain_contrast": float(st.stain_contrast),
        "cell_fraction": float(st.cell_fraction),
    }


def floor_to(x: float, step: float) -> float:
    return round(math.floor(x / step) * step, 6)


def thresholds_from(lo: dict, hi: dict) -> dict:
    return {
        "min_focus": floor_to(lo["focus"] / 2, 0.5),
        "min_brightness": floor_to(lo["brightness"] / 2, 5),
        "max_brightness": floor_to((hi["brightness"] + 255) / 2, 1),
        "max_clipped_fraction": floor_to((hi["clipped_fraction"] + 1) / 2, 0.05),
        "min_stain_contrast": floor_to(lo["stain_contrast"] / 2, 0.5),
        # A few faint real smears have an empty mask (cell fraction 0), so this floor can only be 0 here.
        "min_cell_fraction": floor_to(lo["cell_fraction"] / 2, 0.001),
    }


def refused(rgb: np.ndarray, params: PreprocessParams, t) -> str:
    return quality.assess(rgb, params, t, preprocess(rgb, params).stats).reason


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("folder", nargs="?", type=Path, default=DEFAULT_DIR)
    ap.add_argument("--json", type=Path, help="also write the per-metric ranges and thresholds here")
    args = ap.parse_args(argv)
    files = sorted(p for p in args.folder.rglob("*") if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
    if not files:
        print(f"no images under {args.folder}", file=sys.stderr)
        return 2
    params = PreprocessParams()
    rows = [metrics(decode_file(f, target=params.size).rgb, params) for f in files]
    table = {m: np.array([r[m] for r in rows]) for m in METRICS}
    lo = {m: float(v.min()) for m, v in table.items()}
    hi = {m: float(v.max()) for m, v in table.items()}
    t = thresholds_from(lo, hi)
    tns = SimpleNamespace(**t)
    print(f"{len(files)} real images from {args.folder}")
    for m in METRICS:
        p1, p50, p99 = np.percentile(table[m], [1, 50, 99])
        print(f"  {m:17s} min {lo[m]:10.4f}  p1 {p1:10.4f}  median {p50:10.4f}  p99 {p99:10.4f}  max {hi[m]:10.4f}")
    real_refused = [(f, r) for f in files if (r := refused(decode_file(f).rgb, params, tns))]
    bad = {k: refused(synthetic.bad_image(k, seed=s), params, tns) for k in synthetic.BAD_KINDS for s in (0, 1)}
    print(f"real images refused: {len(real_refused)}")
    for f, r in real_refused[:10]:
        print(f"  {f}: {r}")
    for k, r in bad.items():
        print(f"  bad image {k:10s}: {'REFUSED: ' + r if r else 'PASSED (calibration is wrong)'}")
    print("\n[quality]")
    for k, v in t.items():
        print(f"{k} = {v}")
    if args.json:
        args.json.write_text(json.dumps({"n": len(files), "min": lo, "max": hi, "thresholds": t}, indent=2))
    return 1 if real_refused or not all(bad.values()) else 0


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python3
"""How well edge/imaging/optics.py measures a field's scale: Taleqani fields rescaled (simulated optics) and other
laboratories' images, with the time per measurement. Numbers for the README, not a test.

    .venv/bin/python scripts/measure_scale.py [--n 80]
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import cv2
import numpy as np

from edge.imaging.decode import decode_file
from edge.imaging.optics import measure_rbc_diameter
from edge.imaging.preprocess import PreprocessParams, remove_scale_bar

SHARED = Path(__file__).resolve().parents[2] / "shared" / "datasets"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=80, help="fields per set")
    args = ap.parse_args()
    params = PreprocessParams()
    files = sorted((SHARED / "all-taleqani").glob("*/*.jpg"))
    files = files[:: max(1, len(files) // args.n)][: args.n]
    fields = [remove_scale_bar(decode_file(p, target=448).rgb, params) for p in files]
    t = time.perf_counter()
    base = np.array([measure_rbc_diameter(f)[0] or np.nan for f in fields])
    ms = (time.perf_counter() - t) / len(fields) * 1000
    out = {
        "cpu": platform.processor() or platform.machine(),
        "taleqani_224": {
            "n": len(fields),
            "unmeasured": int(np.isnan(base).sum()),
            "median_px": round(float(np.nanmedian(base)), 1),
            "p5_p95_px": np.nanpercentile(base, [5, 95]).round(1).tolist(),
            "ms_per_field": round(ms, 1),
        },
    }
    for f in (0.75, 2.0, 3.0, 4.0):
        got = []
        for fld in fields:
            h, w = fld.shape[:2]
            x = cv2.resize(fld, (int(w * f), int(h * f)), interpolation=cv2.INTER_AREA if f < 1 else cv2.INTER_CUBIC)
            got.append((measure_rbc_diameter(x)[0] or np.nan) / f)
        r = np.array(got) / base
        out[f"rescale_{f:g}"] = {
            "ratio_to_expected_p5_p50_p95": np.nanpercentile(r, [5, 50, 95]).round(3).tolist(),
            "unmeasured": int(np.isnan(r).sum()),
        }
    for name, pattern in (("pbc-normal", "pbc-normal/*/*.jpg"), ("bccd-fields", "bccd-fields/*.jpg")):
        fs = sorted(SHARED.glob(pattern))
        fs = fs[:: max(1, len(fs) // args.n)][: args.n]
        imgs = [decode_file(p, target=448).rgb for p in fs]
        t = time.perf_counter()
        d = np.array([measure_rbc_diameter(x)[0] or np.nan for x in imgs])
        out[name] = {
            "n": len(fs),
            "median_px": round(float(np.nanmedian(d)), 1),
            "p5_p95_px": np.nanpercentile(d, [5, 95]).round(1).tolist(),
            "relative_to_taleqani": round(float(np.nanmedian(d) / np.nanmedian(base)), 2),
            "ms_per_field": round((time.perf_counter() - t) / len(fs) * 1000, 1),
            "size": list(imgs[0].shape[:2]),
        }
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()

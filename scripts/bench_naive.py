#!/usr/bin/env python3
"""What a first, naive version of this pipeline costs per field: the yardstick for edge-screen's own.

The naive pipeline is what a notebook would do: ``cv2.imread`` → LAB → scikit-learn KMeans (k=3) on every
pixel of the A channel → the field resized to 224 px → a float Keras MobileNetV2 ``predict`` per field.
It runs in its own virtual environment (TensorFlow and scikit-learn are not the device's dependencies):

    python3 -m venv .venv-naive
    .venv-naive/bin/pip install tensorflow-cpu scikit-learn opencv-python-headless
    .venv-naive/bin/python scripts/bench_naive.py ../shared/datasets/all-taleqani -n 100 --json naive.json

then compare its steady per-field median with ``edge-screen bench -n 100 DIR`` (pipeline total) on the same
machine in the same session; the README's performance section gives the ratio and the CPU. The model's
weights do not change its cost, so the network is built without loading any.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import statistics
import time
from pathlib import Path

log = logging.getLogger("bench_naive")
SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff"}


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def fields(root: Path, n: int) -> list:
    files = sorted(p for p in root.rglob("*") if p.suffix.lower() in SUFFIXES)
    if not files:
        raise SystemExit(f"no images under {root}")
    step = max(1, len(files) // n)
    return files[::step][:n]


def naive_field(path: Path, model, kmeans_cls, cv2, np) -> float:
    """One field the naive way; returns its malignant score (so nothing is optimised away)."""
    bgr = cv2.imread(str(path))
    lab = cv2.cvtColor(bgr, cv2.COLOR_BGR2LAB)
    a = lab[..., 1].reshape(-1, 1).astype(np.float32)
    km = kmeans_cls(n_clusters=3, n_init=10, random_state=0).fit(a)
    stained = int(np.argmax(km.cluster_centers_[:, 0]))
    mask = (km.labels_ == stained).reshape(lab.shape[:2])
    rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
    rgb[~mask] = 255  # the segmented cells on white, as the first version fed them
    x = cv2.resize(rgb, (224, 224), interpolation=cv2.INTER_AREA).astype(np.float32) / 127.5 - 1.0
    probs = model.predict(x[None], verbose=0)[0]
    return float(1.0 - probs[0])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("folder", type=Path, help="a folder of smear fields (searched recursively)")
    ap.add_argument("-n", "--images", type=int, default=100, help="fields to time (default 100)")
    ap.add_argument("--warm", type=int, default=3, help="untimed fields first (default 3)")
    ap.add_argument("--threads", type=int, default=2, help="TensorFlow intra-op threads (default 2)")
    ap.add_argument("--json", type=Path, help="write the figures here as JSON")
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

    import cv2
    import numpy as np
    import tensorflow as tf
    from sklearn.cluster import KMeans

    tf.config.threading.set_intra_op_parallelism_threads(args.threads)
    base = tf.keras.applications.MobileNetV2(input_shape=(224, 224, 3), include_top=False, weights=None, pooling="avg")
    model = tf.keras.Sequential([base, tf.keras.layers.Dense(4, activation="softmax")])
    files = fields(args.folder, args.images + args.warm)
    for p in files[: args.warm]:
        naive_field(p, model, KMeans, cv2, np)
    times = []
    for i, p in enumerate(files[args.warm :], 1):
        t = time.perf_counter()
        naive_field(p, model, KMeans, cv2, np)
        times.append((time.perf_counter() - t) * 1000)
        if i % 10 == 0 or i == len(files) - args.warm:
            log.info(
                "naive pipeline: %d/%d fields, median %.1f ms", i, len(files) - args.warm, statistics.median(times)
            )
    out = {
        "fields": len(times),
        "median_ms": round(statistics.median(times), 2),
        "mean_ms": round(statistics.fmean(times), 2),
        "threads": args.threads,
        "cpu": cpu_name(),
        "tensorflow": tf.__version__,
    }
    print(json.dumps(out, indent=2))
    if args.json:
        args.json.write_text(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()

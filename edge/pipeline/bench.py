"""``edge-screen bench``: what the full per-image pipeline costs on this device, next to bare inference.

Everything runs for real: files on disk, the quality gate, preprocessing, the TFLite interpreter and a
SQLite store with the configured durability, in a temporary folder. Numbers, not assertions: they go in
the README.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path
from typing import Callable, Dict, List, Optional

import numpy as np

from edge.config import Config
from edge.imaging import synthetic
from edge.imaging.decode import decode_bytes
from edge.imaging.preprocess import decode_target, preprocess_image
from edge.inference.classifier import Classifier
from edge.pipeline.classify import expand_paths
from edge.pipeline.settings import PipelineSettings
from edge.pipeline.stages import Pipeline
from edge.store.database import Store
from edge.vocabulary import STAGES


def _pct(values: List[float], q: float) -> float:
    v = sorted(values)
    return v[min(len(v) - 1, int(round(q * (len(v) - 1))))] if v else float("nan")


def _write_unique(folder: Path, blobs: List[bytes], n: int, prefix: str) -> List[Path]:
    """n files cycling through ``blobs``; a few bytes after the JPEG end marker make every file distinct
    content, so none is short-cut as a duplicate (decoders ignore trailing bytes)."""
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for i in range(n):
        p = folder / f"{prefix}-{i:05d}.jpg"
        p.write_bytes(blobs[i % len(blobs)] + b"\x00" + i.to_bytes(4, "big"))
        out.append(p)
    return out


def _pipeline(cfg: Config, clf: Classifier, db: Path, inbox: Optional[Path] = None) -> tuple[Pipeline, Store]:
    store = Store.open(
        f"sqlite:///{db}",
        device_id="bench",
        synchronous=cfg.database.synchronous,
        busy_timeout_ms=cfg.database.busy_timeout_ms,
        sample_rule=clf.card.sample_rule,
    )
    return Pipeline(PipelineSettings.of(cfg, clf.card, inbox=inbox), clf, store=store), store


def run_bench(
    cfg: Config,
    clf: Classifier,
    paths: List[Path],
    n: int = 200,
    progress: Optional[Callable[[str, int, int], None]] = None,
) -> Dict:
    """``progress(stage, i, n)`` is called as each stage advances (the whole run takes minutes on a Pi)."""
    tick = progress or (lambda *_: None)
    files = [p for p in expand_paths(paths)] if paths else []
    blobs = [p.read_bytes() for p in files[:n]] if files else [synthetic.smear_jpeg(s) for s in range(32)]
    source = f"{len(blobs)} image(s) from {', '.join(map(str, paths))}" if files else "32 synthetic 224x224 smears"
    x = preprocess_image(
        decode_bytes(blobs[0], target=decode_target(clf.preprocessing)).rgb, clf.preprocessing
    ).model_input
    if x is None:  # a cell model on a field without a cell: time the bare invoke on a blank crop
        x = np.full((clf.preprocessing.input_size,) * 2 + (3,), 200, np.uint8)
    for _ in range(5):
        clf.invoke_raw(x)
    bare = []
    for i in range(n):
        t = time.perf_counter()
        clf.invoke_raw(x)
        bare.append((time.perf_counter() - t) * 1000)
        tick("bare invoke", i + 1, n)
    with tempfile.TemporaryDirectory(prefix="edge-bench-") as tmp_name:
        tmp = Path(tmp_name)
        # One patient sample's fields, as a microscope sends them (each field's red cells are measured).
        seq_files = _write_unique(tmp / "seq" / "bench-sample", blobs, n, "seq")
        pipe, store = _pipeline(cfg, clf, tmp / "seq.sqlite", inbox=tmp / "seq")
        for p in seq_files[:3]:  # warm caches (OpenCV, allocator) outside the measurement
            pipe.process(p)
        per_stage: Dict[str, List[float]] = {s: [] for s in STAGES}
        for i, p in enumerate(seq_files[3:]):
            res = pipe.process(p)
            tick("pipeline, one at a time", i + 1, len(seq_files) - 3)
            for s, ms in res.timings.to_dict().items():
                if s != "queue":
                    per_stage[s].append(ms)
        store.close()
        batch_files = _write_unique(tmp / "batch", blobs, n, "batch")
        pipe, store = _pipeline(cfg, clf, tmp / "batch.sqlite")
        t = time.perf_counter()
        statuses = []
        for r in pipe.run_paths(batch_files):
            statuses.append(r.status)
            tick("pipeline, overlapped batch", len(statuses), len(batch_files))
        batch_s = time.perf_counter() - t
        store.close()
        big = _size_cost(cfg, clf, tmp)
    med_bare = statistics.median(bare)
    stages = {
        s: {"median": round(statistics.median(v), 3), "p95": round(_pct(v, 0.95), 3)} for s, v in per_stage.items() if v
    }
    total = stages["total"]["median"]
    return {
        "device": _device(),
        "backend": clf.backend,
        "threads": clf.num_threads,
        "model": clf.name,
        "images": source,
        "n": n,
        "synchronous": cfg.database.synchronous,
        # One cell's crop through the interpreter, in as many orientations as the card scores (one invoke).
        "cell_views": clf.card.cell_views,
        "bare_invoke_ms": {"median": round(med_bare, 3), "p95": round(_pct(bare, 0.95), 3)},
        "pipeline_ms": stages,
        "pipeline_over_invoke": round(total / med_bare, 3),
        # What the model's stage costs against everything else a field goes through (issue 16).
        "pipeline_over_inference": round(total / stages["inference"]["median"], 3) if "inference" in stages else None,
        # The ceiling is the bare invoke rate of this same interpreter, so at the same thread count.
        "batch": {
            "images_per_s": round(n / batch_s, 2),
            "inference_ceiling_per_s": round(1000 / med_bare, 2),
            "fraction_of_ceiling": round((n / batch_s) / (1000 / med_bare), 3),
            "statuses": {s: statuses.count(s) for s in sorted(set(statuses))},
        },
        "size_cost": big,
    }


def _size_cost(cfg: Config, clf: Classifier, tmp: Path, n: int = 12) -> Dict:
    """Median per-image total for a 12-megapixel camera JPEG vs a 224x224 one (reduced decode at work)."""
    out: Dict[str, dict] = {}
    for name, size in (("224x224", 224), ("640x480", (640, 480)), ("4056x3040", (4056, 3040))):
        blobs = [synthetic.smear_jpeg(s, size) for s in range(2)]
        files = _write_unique(tmp / name, blobs, n + 2, name)
        pipe, store = _pipeline(cfg, clf, tmp / f"{name}.sqlite")
        totals = [pipe.process(p).timings.total or 0.0 for p in files][2:]
        store.close()
        out[name] = {"median_total_ms": round(statistics.median(totals), 3), "bytes": len(blobs[0])}
    ratios = {
        "ratio": round(out["4056x3040"]["median_total_ms"] / out["224x224"]["median_total_ms"], 3),
        "ratio_640x480": round(out["640x480"]["median_total_ms"] / out["224x224"]["median_total_ms"], 3),
    }
    return {**out, **ratios}


def _device() -> str:
    import os
    import platform

    return f"{platform.machine()} {platform.processor() or platform.system()}, {os.cpu_count()} CPUs"


def format_report(r: Dict) -> str:
    lines = [
        f"edge-screen bench on {r['device']}: model {r['model']}, {r['backend']} with {r['threads']} threads",
        f"images: {r['images']}, {r['n']} timed; SQLite synchronous={r['synchronous']}",
        f"bare interpreter invoke   median {r['bare_invoke_ms']['median']:8.3f} ms   p95 "
        f"{r['bare_invoke_ms']['p95']:8.3f} ms"
        + (f"   (one cell in {r['cell_views']} orientations)" if r.get("cell_views", 1) > 1 else ""),
        "full pipeline per image (sequential):",
    ]
    for s, v in r["pipeline_ms"].items():
        lines.append(f"  {s:11s}             median {v['median']:8.3f} ms   p95 {v['p95']:8.3f} ms")
    b, sc = r["batch"], r["size_cost"]
    lines += [
        f"pipeline / bare invoke    {r['pipeline_over_invoke']:.2f}x",
        f"pipeline / inference      {r['pipeline_over_inference'] or float('nan'):.2f}x (the inference stage: all of a "
        f"field's cells in one invoke, and the embedding distances)",
        f"batch (overlapped)        {b['images_per_s']:.1f} images/s = {b['fraction_of_ceiling']:.2f} of the "
        f"inference ceiling {b['inference_ceiling_per_s']:.1f}/s (bare invoke, same {r['threads']} "
        f"interpreter thread{'s' if r['threads'] != 1 else ''})",
        f"640x480 vs 224x224 JPEG   {sc['640x480']['median_total_ms']:.1f} ms vs "
        f"{sc['224x224']['median_total_ms']:.1f} ms = {sc['ratio_640x480']:.2f}x",
        f"12 MP vs 224x224 JPEG     {sc['4056x3040']['median_total_ms']:.1f} ms vs "
        f"{sc['224x224']['median_total_ms']:.1f} ms = {sc['ratio']:.2f}x",
    ]
    return "\n".join(lines)


__all__ = ["format_report", "run_bench"]

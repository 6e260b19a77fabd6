#!/usr/bin/env python3
"""Benchmark `edge-screen report` on 100,000 synthetic rows, and the explanation map per image.

    .venv/bin/python scripts/bench_report.py [--rows 100000] [--model PATH] [--maps 10] [--real]
                                             [--workdir DIR] [--json]

Writes a SQLite store (bulk-inserted in one transaction) with a realistic mix (about 14 % malignant or
needs review, 10 % unreadable or rejected, four devices, 30 days), plus camera-sized JPEG files for the
first flagged images so that the HTML gallery decodes real thumbnails. Then times, each from a cold
engine: the SQL aggregation alone, CSV, JSON and HTML without maps; and one explanation map per image
(7x7 = 49+1 model runs, +50 when the keep-map fallback runs) with one Classifier reused, on the synthetic
smears or, with --real, on ../shared smears. Prints a table and, with --json, the numbers as JSON.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import statistics
import sys
import tempfile
import time
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(1, str(Path(__file__).resolve().parent.parent / "tests"))

from edge.imaging.synthetic import smear_jpeg  # noqa: E402
from edge.inference.classifier import DEFAULT_MODEL, Classifier  # noqa: E402
from edge.inference.explain import explain_image  # noqa: E402
from edge.report.formats import dumps_csv, dumps_json  # noqa: E402
from edge.report.html import write_html  # noqa: E402
from edge.report.query import build_report  # noqa: E402
from edge.report.window import make_window  # noqa: E402
from edge.store.database import Store  # noqa: E402
from edge.store.schema import images  # noqa: E402

LABELS = ("Benign", "Early Pre-B", "Pre-B", "Pro-B")
T0 = datetime(2026, 4, 1, 6, 0, tzinfo=timezone.utc)


def synthetic_rows(n: int, inbox: Path, rng: np.random.Generator):
    devices = [f"scope-{k}" for k in range(4)]
    for i in range(n):
        u = rng.random()
        t = T0 + timedelta(seconds=int(i * 30 * 86400 / n))  # spread over 30 days
        row = dict(
            id=str(uuid.UUID(int=int(rng.integers(0, 2**62)) << 64 | i, version=4)),
            device_id=devices[i % 4],
            path=str(inbox / f"patient-{i:06d}.jpg"),
            filename=f"patient-{i:06d}.jpg",
            sha256=hashlib.sha256(i.to_bytes(8, "little")).hexdigest(),
            bytes=800_000,
            capture_time=t,
            recorded_at=t,
            status="classified",
            reason=None,
            label=None,
            probabilities=None,
            malignant_score=None,
            verdict=None,
            needs_review=False,
            t_queue_ms=float(rng.gamma(2, 2)),
            t_decode_ms=float(rng.gamma(4, 3)),
            t_quality_ms=float(rng.gamma(3, 1)),
            t_preprocess_ms=None,
            t_inference_ms=None,
            t_store_ms=float(rng.gamma(2, 1.5)),
            model_name=None,
            model_sha256=None,
        )
        if u < 0.06:
            row.update(status="unreadable", reason="out of focus (focus 7.1 < 20.0)")
        elif u < 0.10:
            row.update(status="rejected", reason="not an image (no known file signature)")
        elif u < 0.11:
            row.update(status="duplicate", reason="same content as an earlier image")
        else:
            score = float(rng.beta(0.6, 3.5))
            label = "Benign" if score < 0.5 else LABELS[1 + i % 3]
            row.update(
                label=label,
                malignant_score=round(score, 6),
                verdict="malignant" if score >= 0.5 else "benign",
                needs_review=bool(0.3 <= score < 0.7),
                t_preprocess_ms=float(rng.gamma(5, 2)),
                t_inference_ms=float(rng.gamma(6, 0.6)),
                model_name="edge-screen-mnv2-int8",
                model_sha256="ab" * 32,
                probabilities=json.dumps(
                    {lab: round(score / 3 if lab != "Benign" else 1 - score, 6) for lab in LABELS}, sort_keys=True
                ),
            )
        row["t_total_ms"] = sum(row[k] or 0.0 for k in row if k.startswith("t_") and k != "t_total_ms")
        yield row


def timed(fn):
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    ap.add_argument("--rows", type=int, default=100_000)
    ap.add_argument("--model", type=Path, default=None, help="model for the map timing (default: the shipped one)")
    ap.add_argument("--maps", type=int, default=10, help="images to explain for the per-image map time")
    ap.add_argument("--files", type=int, default=200, help="flagged images given a real 1280x960 JPEG file")
    ap.add_argument("--workdir", type=Path, default=None)
    ap.add_argument("--real", action="store_true", help="time the maps on ../shared smears instead")
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args(argv)
    work = a.workdir or Path(tempfile.mkdtemp(prefix="bench-report-"))
    work.mkdir(parents=True, exist_ok=True)
    db, inbox = work / "bench.sqlite", work / "inbox"
    inbox.mkdir(exist_ok=True)
    if db.exists():
        db.unlink()
    rng = np.random.default_rng(0)
    rows = list(synthetic_rows(a.rows, inbox, rng))
    with Store.open(db, device_id="scope-0") as store:
        _, t_insert = timed(lambda: _bulk(store, rows))
    flagged = [r for r in rows if r["status"] == "classified" and (r["verdict"] == "malignant" or r["needs_review"])]
    flagged.sort(key=lambda r: (r["verdict"] != "malignant", -r["malignant_score"], r["recorded_at"]))
    for k, r in enumerate(flagged[: a.files]):
        Path(r["path"]).write_bytes(smear_jpeg(k, (1280, 960), 90))
    window = make_window(all_time=True)
    res = {"rows": a.rows, "flagged": len(flagged), "insert_s": t_insert}
    data, res["query_s"] = timed(lambda: build_report(db, window))
    _, res["csv_s"] = timed(lambda: (work / "r.csv").write_text(dumps_csv(build_report(db, window))))
    _, res["json_s"] = timed(lambda: (work / "r.json").write_text(dumps_json(build_report(db, window))))
    _, res["html_s"] = timed(lambda: write_html(build_report(db, window), work / "r.html", maps=False, progress=False))
    res["html_bytes"] = (work / "r.html").stat().st_size
    res["gallery_thumbnails"] = min(len(flagged), 200)

    model = a.model or DEFAULT_MODEL
    if model.is_file() and a.maps > 0:
        clf = Classifier(model)
        paths = [Path(r["path"]) for r in flagged[: a.maps]]
        explain_image(paths[0], clf)  # first call pays interpreter warm-up, not representative
        if a.real:
            from shared_data import real_images  # tests/ helper: ../shared when present

            paths = real_images(per_class=max(1, a.maps // 4)) or paths
        runs = [timed(lambda p=p: explain_image(p, clf)) for p in paths]
        secs = [t for _, t in runs]
        occl = [t for e, t in runs if e.method == "occlude"]
        res.update(
            map_model=model.name,
            map_backend=clf.backend,
            map_median_s=statistics.median(secs),
            map_max_s=max(secs),
            map_images=len(secs),
            map_keep_fallbacks=len(secs) - len(occl),
            map_occlude_only_median_s=statistics.median(occl) if occl else None,
        )
    else:
        res["map_model"] = None
    if a.json:
        print(json.dumps(res, indent=2, default=str))
    else:
        print(f"rows {a.rows:,} ({len(flagged):,} flagged) in {work}")
        print(f"  bulk insert          {res['insert_s']:.2f} s")
        print(f"  SQL aggregation      {res['query_s']:.2f} s")
        print(f"  report CSV           {res['csv_s']:.2f} s")
        print(f"  report JSON          {res['json_s']:.2f} s")
        print(
            f"  report HTML, no maps {res['html_s']:.2f} s ({res['html_bytes'] / 1e6:.1f} MB, "
            f"{res['gallery_thumbnails']} thumbnails)"
        )
        if res["map_model"]:
            occl = res["map_occlude_only_median_s"]
            print(
                f"  explanation map      {res['map_median_s'] * 1000:.0f} ms median, {res['map_max_s'] * 1000:.0f} ms "
                f"max per image over {res['map_images']} (7x7 grid, {res['map_model']}, {res['map_backend']}); "
                f"{res['map_keep_fallbacks']} needed the keep map (+50 runs)"
                + (f"; occlusion only: {occl * 1000:.0f} ms median" if occl else "")
            )
        else:
            print(f"  explanation map      skipped: no model at {model} (pass --model)")
    return 0


def _bulk(store: Store, rows) -> None:
    with store.engine.begin() as conn:
        conn.execute(images.insert(), rows)


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python3
"""Daemon stream benchmark: a real `edge-screen run` subprocess, images renamed into its inbox.

Measures, on an idle daemon (each image dropped after the previous one is committed), the latency from
"file complete in the inbox" (the rename) to "row committed" (recorded_at + store time) as p50/p99; the
throughput of a burst; and the daemon's RSS after start-up and after many images.

    .venv/bin/python scripts/bench_stream.py [--model M.tflite] [--idle 200] [--burst 500] [--total 2000]
"""

from __future__ import annotations

import argparse
import os
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from edge.imaging import synthetic  # noqa: E402
from edge.inference.classifier import DEFAULT_MODEL  # noqa: E402


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def committed(db: Path) -> dict:
    if not db.exists():
        return {}
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10)
    try:
        return {
            p: (datetime.fromisoformat(r).replace(tzinfo=timezone.utc).timestamp() + (s or 0) / 1000)
            for p, r, s in con.execute("SELECT path, recorded_at, t_store_ms FROM images")
        }
    except sqlite3.OperationalError:
        return {}
    finally:
        con.close()


def count(db: Path) -> int:
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10)
    try:
        return con.execute("SELECT count(*) FROM images").fetchone()[0]
    except sqlite3.OperationalError:
        return 0
    finally:
        con.close()


def has(db: Path, path: str) -> bool:
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10)
    try:
        return con.execute("SELECT 1 FROM images WHERE path = ?", (path,)).fetchone() is not None
    except sqlite3.OperationalError:
        return False
    finally:
        con.close()


def wait(pred, timeout=120.0, interval=0.001):
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise TimeoutError("daemon did not keep up")
        time.sleep(interval)  # the poller must not steal the daemon's two cores


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", type=Path, default=DEFAULT_MODEL)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--idle", type=int, default=200, help="images dropped one at a time (latency)")
    ap.add_argument("--burst", type=int, default=500, help="images dropped at once (throughput)")
    ap.add_argument("--total", type=int, default=2000, help="images in all before the final RSS reading")
    args = ap.parse_args()
    blobs = [synthetic.smear_jpeg(s) for s in range(64)]
    with tempfile.TemporaryDirectory(prefix="edge-stream-") as tmp:
        tmp = Path(tmp)
        inbox, staging, db = tmp / "inbox", tmp / "staging", tmp / "db.sqlite"
        inbox.mkdir()
        staging.mkdir()
        cfg = tmp / "c.toml"
        cfg.write_text(
            f'[daemon]\ninbox = "{inbox}"\ndevice_id = "bench"\nlog_level = "WARNING"\n'
            f'[database]\nurl = "sqlite:///{db}"\n[model]\npath = "{args.model}"\n'
            f"num_threads = {args.threads}\n"
        )
        proc = subprocess.Popen(
            [sys.executable, "-m", "edge", "--config", str(cfg), "run"],
            cwd=ROOT,
            env=dict(os.environ, PYTHONPATH=str(ROOT)),
            stderr=subprocess.PIPE,
            text=True,
        )
        counter = [0]

        def drop() -> tuple:
            i = counter[0]
            counter[0] += 1
            src = staging / f"img-{i:06d}.jpg"
            # Distinct bytes after the JPEG end marker: every file is new content, never a duplicate.
            src.write_bytes(blobs[i % len(blobs)] + i.to_bytes(4, "big"))
            dst = inbox / src.name
            t = time.time()
            os.replace(src, dst)
            return str(dst), t

        try:
            wait(lambda: db.exists() and rss_mb(proc.pid) > 0)
            # The first image also proves the daemon is up; leave it out of the latency numbers.
            p, _ = drop()
            wait(lambda: has(db, p), 60)
            rss_start = rss_mb(proc.pid)
            lat = []
            for _ in range(args.idle):
                p, t = drop()
                wait(lambda: has(db, p))  # noqa: B023 - waited on within this iteration
                lat.append((committed(db)[p] - t) * 1000)
            t0 = time.time()
            burst = [drop()[0] for _ in range(args.burst)]
            wait(lambda: count(db) >= counter[0], 600, 0.05)
            rows = committed(db)
            burst_s = max(rows[p] for p in burst) - t0
            while counter[0] < args.total:
                for _ in range(min(200, args.total - counter[0])):
                    drop()
                wait(lambda: count(db) >= counter[0], 600, 0.05)
            rss_end = rss_mb(proc.pid)
        finally:
            proc.send_signal(signal.SIGTERM)
            code = proc.wait(60)
        lat.sort()
        print(f"model {args.model.name}, {args.threads} threads, {os.cpu_count()} CPUs; daemon exit code {code}")
        print(
            f"idle latency close->commit over {len(lat)} images: p50 {statistics.median(lat):.1f} ms, "
            f"p99 {lat[min(len(lat) - 1, int(0.99 * len(lat)))]:.1f} ms, max {lat[-1]:.1f} ms"
        )
        print(f"burst of {args.burst}: {args.burst / burst_s:.1f} images/s")
        print(
            f"RSS after start {rss_start:.1f} MB, after {counter[0]} images {rss_end:.1f} MB "
            f"(+{rss_end - rss_start:.1f} MB)"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())

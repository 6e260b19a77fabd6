#!/usr/bin/env python3
"""Daemon start-up and `status` with a long history vs an empty database, in one run (issue 8 item 12).

    scripts/bench_startup.py [--rows 100000]

Fills a SQLite store with ROWS synthetic results (one transaction), starts `edge-screen run` on it with an
empty inbox, and times the start until the daemon logs its backlog line, with its RSS then; same for an
empty database; then `edge-screen status` on both.
"""

from __future__ import annotations

import argparse
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(1, str(ROOT / "tests"))


def make(folder: Path, rows: int) -> Path:
    from conftest import add_records  # the test suite's realistic fake results

    from edge.store.database import Store

    (folder / "inbox").mkdir(parents=True)
    store = Store.open(folder / "db.sqlite", device_id="bench")
    run, model = store.start_run("bench"), store.ensure_model("m", "ab" * 32, {})
    add_records(store, range(rows), run_id=run, model_id=model, bulk=True)
    store.stop_run(run, "stopped")
    store.close()
    cfg = folder / "c.toml"
    cfg.write_text(
        f'[daemon]\ninbox = "{folder}/inbox"\ndevice_id = "bench"\n[database]\nurl = "sqlite:///{folder}/db.sqlite"\n'
    )
    return cfg


def start(cfg: Path) -> tuple:
    t = time.perf_counter()
    p = subprocess.Popen(
        [sys.executable, "-m", "edge", "--config", str(cfg), "run"], cwd=ROOT, stderr=subprocess.PIPE, text=True
    )
    for line in p.stderr:
        if "backlog:" in line:
            took = time.perf_counter() - t
            rss = next(int(x.split()[1]) for x in open(f"/proc/{p.pid}/status") if x.startswith("VmRSS"))
            break
    p.send_signal(signal.SIGTERM)
    p.wait()
    return took, rss / 1024


def status(cfg: Path) -> float:
    t = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "edge", "--config", str(cfg), "status"], cwd=ROOT, check=True, capture_output=True
    )
    return time.perf_counter() - t


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=100_000)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        for name, rows in ((f"{args.rows:,} rows", args.rows), ("empty", 0)):
            cfg = make(Path(tmp) / name.replace(",", "").replace(" ", "-"), rows)
            took, rss = start(cfg)
            print(f"{name:>14}: start to backlog line {took:5.2f} s, RSS {rss:5.0f} MB; status {status(cfg):5.2f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())

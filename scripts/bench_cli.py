#!/usr/bin/env python3
"""Start-up cost of the command line, measured side by side in one run (issue 8: --help within 3x of
`python -c 'import click'`): median wall time of N runs of each command.

    scripts/bench_cli.py [-n 15] [IMAGE]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


# As an installed package runs: with its bytecode cached. `pip install` compiles it; a shell with
# PYTHONDONTWRITEBYTECODE set (this development machine has it) would have every edited module compiled
# from source again on each start, ~60 ms of a one-image `classify` that no clinic pays.
ENV = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}


def wall(cmd: list, n: int) -> float:
    subprocess.run(cmd, check=True, capture_output=True, cwd=ROOT, env=ENV)  # untimed: writes the bytecode
    times = []
    for _ in range(n):
        t = time.perf_counter()
        subprocess.run(cmd, check=True, capture_output=True, cwd=ROOT, env=ENV)
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("image", nargs="?", help="an image for `classify --no-db` (default: a synthetic smear)")
    ap.add_argument("-n", type=int, default=15)
    args = ap.parse_args()
    py = sys.executable
    image = args.image
    if image is None:
        sys.path.insert(0, str(ROOT))
        from edge.imaging import synthetic

        image = "/tmp/edge-bench-cli.jpg"
        Path(image).write_bytes(synthetic.smear_jpeg(1))
    click_s = wall([py, "-c", "import click"], args.n)
    help_s = wall([py, "-m", "edge", "--help"], args.n)
    classify_s = wall([py, "-m", "edge", "classify", "--no-db", "--json", image], max(3, args.n // 3))
    print(f"python -c 'import click'       {click_s * 1000:7.1f} ms")
    print(f"edge-screen --help             {help_s * 1000:7.1f} ms  ({help_s / click_s:.1f}x)")
    print(
        f"edge-screen classify --no-db   {classify_s * 1000:7.1f} ms  ({classify_s / click_s:.1f}x; "
        "model load and warm-up included)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())

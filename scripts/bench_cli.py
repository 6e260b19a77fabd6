#!/usr/bin/env python3
"""Start-up cost of the command line, measured side by side in one run (issue 8: --help within 3x of
`python -c 'import click'`): median wall times of N interleaved rounds.

    scripts/bench_cli.py [-n 21] [IMAGE]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Dict, List

ROOT = Path(__file__).resolve().parents[1]


# As an installed package runs: with its bytecode cached. `pip install` compiles it; a shell with
# PYTHONDONTWRITEBYTECODE set (this development machine has it) would have every edited module compiled
# from source again on each start, ~60 ms of a one-image `classify` that no clinic pays.
ENV = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}


def rounds(cmds: Dict[str, list], n: int) -> Dict[str, List[float]]:
    """Wall times of ``n`` rounds, each command once per round, in turn. Interleaved, because this VM's
    speed drifts within minutes (`import click` took 48-72 ms in one hour): all of one command and then
    all of another would put the drift into the ratio."""
    for cmd in cmds.values():  # untimed: writes the bytecode, warms the page cache
        subprocess.run(cmd, check=True, capture_output=True, cwd=ROOT, env=ENV)
    times: Dict[str, List[float]] = {k: [] for k in cmds}
    for _ in range(n):
        for k, cmd in cmds.items():
            t = time.perf_counter()
            subprocess.run(cmd, check=True, capture_output=True, cwd=ROOT, env=ENV)
            times[k].append(time.perf_counter() - t)
    return times


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("image", nargs="?", help="an image for `classify --no-db` (default: a synthetic smear)")
    ap.add_argument("-n", type=int, default=21, help="rounds (each command once per round)")
    args = ap.parse_args()
    py = sys.executable
    image = args.image
    if image is None:
        sys.path.insert(0, str(ROOT))
        from edge.imaging import synthetic

        image = "/tmp/edge-bench-cli.jpg"
        Path(image).write_bytes(synthetic.smear_jpeg(1))
    times = rounds(
        {
            "python -c 'import click'": [py, "-c", "import click"],
            "edge-screen --help": [py, "-m", "edge", "--help"],
            "edge-screen classify --no-db": [py, "-m", "edge", "classify", "--no-db", "--json", image],
        },
        args.n,
    )
    med = {k: statistics.median(v) for k, v in times.items()}
    click_s = med["python -c 'import click'"]
    print(f"medians of {args.n} interleaved rounds (quartiles in brackets)")
    for k, v in times.items():
        q1, _, q3 = statistics.quantiles(v, n=4) if len(v) > 1 else (v[0], v[0], v[0])
        ratio = "" if med[k] is click_s else f"  {med[k] / click_s:.2f}x"
        print(f"{k:30s} {med[k] * 1000:7.1f} ms [{q1 * 1000:.1f}-{q3 * 1000:.1f}]{ratio}")
    print("(classify: model load, the first field and its warm-up included)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python3
"""Benchmark `edge-screen serve`: start-up, the page of a 40-field sample with its cell gallery, the cell
crops, thumbnails, and the server's memory.

    .venv/bin/python scripts/bench_web.py [--fields 40] [-n 50] [--json]

Builds a store with one ready sample of ``--fields`` fields screened by the real pipeline and model (real
smears from ../shared when present, else synthetic 640x480 JPEGs), so every field carries its recorded cells;
adds a reviewer, starts `edge-screen serve` as a real process on a free port, logs in over HTTP and measures:
seconds from exec to the URL in the log; the sample page's server time (the app's Server-Timing header,
median of N requests after one warm-up); every cell crop cold (one decode per field) and cached; every
thumbnail cold and cached; one field page; one cell's explanation map (a child process loads the model); and
the server's RSS from /proc at each step.
"""

from __future__ import annotations

import argparse
import http.cookiejar
import json
import platform
import re
import statistics
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

import web_support as ws  # noqa: E402


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.split(":")[0].strip() in ("model name", "Model", "Hardware"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def rss_mb(pid: int) -> str:
    """VmRSS, and in brackets its anonymous part (heap: what the process itself allocated; the rest is
    shared-library and file pages that the kernel can drop and reread)."""
    st = Path(f"/proc/{pid}/status").read_text()
    rss, anon = (int(re.search(rf"{k}:\s+(\d+) kB", st).group(1)) / 1024 for k in ("VmRSS", "RssAnon"))
    return f"{rss:.1f} MB ({anon:.1f} anon)"


def cpu_s(pid: int) -> float:
    """User + system CPU seconds of the process: unlike wall time, not inflated by other processes' load."""
    import os

    f = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(f[11]) + int(f[12])) / os.sysconf("SC_CLK_TCK")


def server_ms(resp) -> float:
    return float(re.search(r"dur=([\d.]+)", resp.headers["Server-Timing"]).group(1))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--fields", type=int, default=40)
    ap.add_argument("-n", type=int, default=50, help="page requests to time")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="bench-web-"))
    from edge.inference.classifier import DEFAULT_MODEL

    config = ws.write_config(folder, model=DEFAULT_MODEL)
    db = ws.screen_db(folder, DEFAULT_MODEL, {"BENCH-1": args.fields})
    assert ws.add_user(config, "bench", "reviewer").returncode == 0
    t0 = time.perf_counter()
    server = ws.ServeProc(config)
    start_s = time.perf_counter() - t0
    out = {"cpu": cpu_name(), "fields": args.fields, "start_s": round(start_s, 2)}
    try:
        pid = server.proc.pid
        out["rss_idle"] = rss_mb(pid)
        opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar()))
        body = urllib.parse.urlencode({"name": "bench", "password": ws.PASSWORD, "next": "/"}).encode()
        req = urllib.request.Request(server.url + "/login", data=body, headers={"Origin": server.url})
        opener.open(req).read()
        page = server.url + "/sample/BENCH-1"
        html = opener.open(page).read().decode()
        ids = re.findall(r'data-field="([0-9a-f-]+)"', html)
        crops = re.findall(r"/field/[0-9a-f-]+/cell/\d+\.jpg", html)
        assert len(ids) == args.fields, f"{len(ids)} fields on the page"
        server_t, wall_t = [], []
        cpu0 = cpu_s(pid)
        for _ in range(args.n):
            t = time.perf_counter()
            with opener.open(page) as resp:
                resp.read()
                server_t.append(server_ms(resp))
            wall_t.append((time.perf_counter() - t) * 1000)
        out["page_cpu_ms"] = round((cpu_s(pid) - cpu0) * 1000 / args.n, 1)
        out["load_average"] = Path("/proc/loadavg").read_text().split()[0]
        out.update(
            page_server_ms=round(statistics.median(server_t), 2),
            page_wall_ms=round(statistics.median(wall_t), 2),
            page_bytes=len(html),
            requests=args.n,
            cells=len(crops),
        )
        out["rss_pages"] = rss_mb(pid)
        cold, warm = [], []
        for c in crops:
            with opener.open(server.url + c) as resp:
                resp.read()
                cold.append(server_ms(resp))
        for c in crops:
            with opener.open(server.url + c) as resp:
                resp.read()
                warm.append(server_ms(resp))
        # The first crop of a field decodes the file and cuts all its cells; the others come from the cache.
        out.update(
            crop_cold_ms=round(statistics.median(cold), 2),
            crop_first_of_field_ms=round(max(cold), 2),
            crop_cached_ms=round(statistics.median(warm), 2),
        )
        out["rss_crops"] = rss_mb(pid)
        field_t = []
        for i in [ids[0]] + ids[:10]:  # the first request compiles the page's templates: not counted
            with opener.open(f"{server.url}/sample/BENCH-1/field/{i}") as resp:
                resp.read()
                field_t.append(server_ms(resp))
        out["field_page_ms"] = round(statistics.median(field_t[1:]), 2)
        cold, warm = [], []
        for i in ids:
            with opener.open(f"{server.url}/field/{i}/thumb.jpg") as resp:
                resp.read()
                cold.append(server_ms(resp))
        for i in ids:
            with opener.open(f"{server.url}/field/{i}/thumb.jpg") as resp:
                resp.read()
                warm.append(server_ms(resp))
        out.update(thumb_cold_ms=round(statistics.median(cold), 2), thumb_cached_ms=round(statistics.median(warm), 2))
        out["rss_thumbs"] = rss_mb(pid)
        with opener.open(f"{server.url}/field/{ids[0]}/cell/1/explain.png") as resp:
            resp.read()
            out["explain_first_ms"] = round(server_ms(resp), 1)
        out["rss_after_map"] = rss_mb(pid)
    finally:
        server.stop()
    assert ws.q(db, "SELECT count(*) AS n FROM reviews")[0]["n"] == 0  # looking changes nothing
    if args.json:
        print(json.dumps(out, indent=2))
        return 0
    print(f"edge-screen serve on {out['cpu']} ({platform.machine()}, Python {platform.python_version()})")
    rows = [
        ("start (exec to URL logged)", f"{out['start_s']:.2f} s"),
        ("RSS idle after start", out["rss_idle"]),
        (f"sample page, {args.fields} fields (server, median of {args.n})", f"{out['page_server_ms']:.2f} ms"),
        ("sample page, client round trip (median)", f"{out['page_wall_ms']:.2f} ms"),
        (f"sample page, server CPU per request (load average {out['load_average']})", f"{out['page_cpu_ms']:.1f} ms"),
        ("RSS after page requests", out["rss_pages"]),
        (
            f"cell crop, first request (median of {out['cells']}; slowest)",
            f"{out['crop_cold_ms']:.2f} ms; {out['crop_first_of_field_ms']:.2f} ms",
        ),
        ("cell crop cached (median)", f"{out['crop_cached_ms']:.2f} ms"),
        (f"RSS after {out['cells']} cell crops", out["rss_crops"]),
        ("field page (server, median of 10)", f"{out['field_page_ms']:.2f} ms"),
        ("thumbnail cold: decode+resize+encode (median)", f"{out['thumb_cold_ms']:.2f} ms"),
        ("thumbnail cached (median)", f"{out['thumb_cached_ms']:.2f} ms"),
        (f"RSS after {args.fields} thumbnails", out["rss_thumbs"]),
        ("first cell explanation map (child process loads the model)", f"{out['explain_first_ms']:.0f} ms"),
        ("RSS after an explanation map", out["rss_after_map"]),
    ]
    w = max(len(a) for a, _ in rows)
    for a, b in rows:
        print(f"  {a:<{w}}  {b:>22}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

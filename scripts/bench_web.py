#!/usr/bin/env python3
"""Benchmark `edge-screen serve`: start-up, the page of a 40-field sample, thumbnails, and the server's memory.

    .venv/bin/python scripts/bench_web.py [--fields 40] [-n 50] [--json]

Builds a store with one ready sample of ``--fields`` fields (real smears from ../shared when present, else
synthetic 640x480 JPEGs), adds a reviewer, starts `edge-screen serve` as a real process on a free port,
logs in over HTTP and measures: seconds from exec to the URL in the log; the sample page's server time (the
app's Server-Timing header, median of N requests after one warm-up); every thumbnail cold (decode + resize
+ encode) and cached; one explanation map (loads the model); and the server's RSS from /proc at each step.
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


def server_ms(resp) -> float:
    return float(re.search(r"dur=([\d.]+)", resp.headers["Server-Timing"]).group(1))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--fields", type=int, default=40)
    ap.add_argument("-n", type=int, default=50, help="page requests to time")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="bench-web-"))
    config = ws.write_config(folder)
    db = ws.build_db(folder, [ws.SampleSpec("BENCH-1", args.fields, [0.92, 0.15, 0.55, 0.97, 0.08, 0.4])])
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
        ids = re.findall(r"/field/([0-9a-f-]+)/thumb\.jpg", html)
        assert len(ids) == args.fields, f"{len(ids)} thumbnails on the page"
        server_t, wall_t = [], []
        for _ in range(args.n):
            t = time.perf_counter()
            with opener.open(page) as resp:
                resp.read()
                server_t.append(server_ms(resp))
            wall_t.append((time.perf_counter() - t) * 1000)
        out.update(page_server_ms=round(statistics.median(server_t), 2),
                   page_wall_ms=round(statistics.median(wall_t), 2), page_bytes=len(html), requests=args.n)
        out["rss_pages"] = rss_mb(pid)
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
        with opener.open(f"{server.url}/field/{ids[0]}/explain.png") as resp:
            resp.read()
            out["explain_first_ms"] = round(server_ms(resp), 1)
        out["rss_after_map"] = rss_mb(pid)
    finally:
        server.stop()
    assert ws.q(db, "SELECT count(*) AS n FROM reviews")[0]["n"] == 0
    if args.json:
        print(json.dumps(out, indent=2))
        return 0
    print(f"edge-screen serve on {out['cpu']} ({platform.machine()}, Python {platform.python_version()})")
    rows = [("start (exec to URL logged)", f"{out['start_s']:.2f} s"),
            ("RSS idle after start", out['rss_idle']),
            (f"sample page, {args.fields} fields (server, median of {args.n})", f"{out['page_server_ms']:.2f} ms"),
            ("sample page, client round trip (median)", f"{out['page_wall_ms']:.2f} ms"),
            ("RSS after page requests", out['rss_pages']),
            ("thumbnail cold: decode+resize+encode (median)", f"{out['thumb_cold_ms']:.2f} ms"),
            ("thumbnail cached (median)", f"{out['thumb_cached_ms']:.2f} ms"),
            (f"RSS after {args.fields} thumbnails", out['rss_thumbs']),
            ("first explanation map (loads the model)", f"{out['explain_first_ms']:.0f} ms"),
            ("RSS after an explanation map", out['rss_after_map'])]
    w = max(len(a) for a, _ in rows)
    for a, b in rows:
        print(f"  {a:<{w}}  {b:>22}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

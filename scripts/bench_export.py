#!/usr/bin/env python3
"""Export and merge throughput in rows/s on synthetic results.

    .venv/bin/python scripts/bench_export.py [--rows 100000] [--pg URL]

Builds device databases in a temporary folder, then times: a first export into a new clinic SQLite file,
an incremental export with nothing new, a --full re-export (every row compared and skipped), a merge of
three device databases into a new file, the same merge again, and the same into PostgreSQL when --pg (or
$EDGE_SCREEN_TEST_PG) names a server on which the role may create databases.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import tempfile
import time
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sqlalchemy import create_engine, text  # noqa: E402

from edge.export.merge import export_to, merge  # noqa: E402
from edge.store.database import Store  # noqa: E402
from edge.store.schema import images  # noqa: E402

LABELS = ("Benign", "Early Pre-B", "Pre-B", "Pro-B")
T0 = datetime(2026, 5, 1, tzinfo=timezone.utc)


def make_device(path: Path, device: str, n: int) -> Store:
    store = Store.open(path, device_id=device, synchronous="NORMAL")  # building fixtures, not measured
    run = store.start_run("bench")
    model = store.ensure_model("edge-screen-mnv2-int8", "ab" * 32, {"name": "bench"})
    rows = []
    for i in range(n):
        label = LABELS[i % 4]
        probs = {lab: (0.7 if lab == label else 0.1) for lab in LABELS}
        rows.append(
            dict(
                id=str(uuid.uuid4()),
                device_id=device,
                run_id=run,
                model_id=model,
                path=f"/srv/inbox/patient-{i:07d}.jpg",
                filename=f"patient-{i:07d}.jpg",
                sha256=hashlib.sha256(f"{device}{i}".encode()).hexdigest(),
                bytes=250_000 + i,
                capture_time=T0 + timedelta(seconds=i),
                recorded_at=T0 + timedelta(seconds=i, milliseconds=40),
                status="classified",
                label=label,
                probabilities=json.dumps(probs, sort_keys=True),
                malignant_score=round(1 - probs["Benign"], 6),
                verdict="malignant" if label != "Benign" else "benign",
                needs_review=i % 9 == 0,
                quality=json.dumps({"focus": 120.5, "brightness": 181.2}),
                segmentation=json.dumps({"cell_fraction": 0.11, "n_components": 14}),
                t_queue_ms=0.4,
                t_decode_ms=6.1,
                t_quality_ms=1.9,
                t_preprocess_ms=9.7,
                t_inference_ms=3.2,
                t_store_ms=1.1,
                t_total_ms=22.4,
                model_name="edge-screen-mnv2-int8",
                model_sha256="ab" * 32,
            )
        )
        if len(rows) == 5000:
            with store.engine.begin() as c:
                c.execute(images.insert(), rows)
            rows = []
    if rows:
        with store.engine.begin() as c:
            c.execute(images.insert(), rows)
    return store


def line(what: str, summary, n: int) -> None:
    rate = f"{n / summary.seconds:>10,.0f} rows/s" if n and summary.seconds else f"{'-':>10} rows/s"
    print(
        f"{what:<42} {summary.seconds:8.2f} s  {rate}  "
        f"(sent {summary.rows_sent}, skipped {summary.rows_skipped}, conflicts {len(summary.conflicts)})"
    )


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=100_000)
    ap.add_argument("--pg", default=os.environ.get("EDGE_SCREEN_TEST_PG"))
    args = ap.parse_args()
    n = args.rows
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        t = time.perf_counter()
        one = make_device(tmp / "device.sqlite", "dev-0", n)
        thirds = [make_device(tmp / f"dev-{k}.sqlite", f"dev-{k}", n // 3) for k in (1, 2, 3)]
        m = sum(s.count_images() for s in thirds)
        print(
            f"built {n} + 3 x {n // 3} synthetic rows in {time.perf_counter() - t:.1f} s "
            f"({os.cpu_count()} CPUs, SQLite synchronous=FULL on the targets)"
        )
        line("export -> new SQLite", export_to(one, tmp / "clinic.sqlite"), n)
        line("export again (incremental, nothing new)", export_to(one, tmp / "clinic.sqlite"), 0)
        line("export --full again (all skipped)", export_to(one, tmp / "clinic.sqlite", incremental=False), n)
        line(f"merge 3 devices -> new SQLite ({m} rows)", merge(thirds, tmp / "merged.sqlite"), m)
        line("merge again (all skipped)", merge(thirds, tmp / "merged.sqlite"), m)
        if args.pg:
            admin = create_engine(
                args.pg.replace("postgresql://", "postgresql+psycopg://"), isolation_level="AUTOCOMMIT"
            )
            name = f"edge_bench_{uuid.uuid4().hex[:8]}"
            with admin.connect() as c:
                c.execute(text(f'CREATE DATABASE "{name}"'))
            url = admin.url.set(database=name).render_as_string(hide_password=False)
            try:
                line("export -> PostgreSQL", export_to(one, url), n)
                line("export --full again -> PostgreSQL", export_to(one, url, incremental=False), n)
                line(f"merge 3 devices -> PostgreSQL ({m} rows)", merge(thirds, url), m)
            finally:
                with admin.connect() as c:
                    c.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
                admin.dispose()
        for s in [one, *thirds]:
            s.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Shared fixtures. Others may append fixtures below; keep each one self-contained."""

from __future__ import annotations

import hashlib
import os
import sqlite3
import uuid
from datetime import datetime, timedelta, timezone
from typing import Callable, Optional

import pytest
from sqlalchemy import create_engine, func, select, text

from edge.store.database import ImageRecord, Store
from edge.store.records import Timings
from edge.store.rows import image_row
from edge.store.schema import images

LABELS = ("Benign", "Early Pre-B", "Pre-B", "Pro-B")
T0 = datetime(2026, 5, 1, 8, 0, tzinfo=timezone.utc)


def fake_record(
    i: int,
    device_id: Optional[str] = None,
    run_id: Optional[str] = None,
    model_id: Optional[str] = None,
    t0: datetime = T0,
    prefix: str = "/inbox/patient",
) -> ImageRecord:
    """A deterministic, plausible result for image number ``i``: mostly classified, every 7th unreadable,
    every 11th rejected; paths look like the patient-identifying names clinics use."""
    sha = hashlib.sha256(f"{device_id}:{i}".encode()).hexdigest()
    path = f"{prefix}-{i:06d}_smear.jpg"
    common = dict(
        path=path,
        sha256=sha,
        bytes=100_000 + i,
        device_id=device_id,
        run_id=run_id,
        capture_time=t0 + timedelta(seconds=10 * i - 2),
        recorded_at=t0 + timedelta(seconds=10 * i),
        id=str(uuid.UUID(bytes=hashlib.md5(f"{device_id}:{i}".encode()).digest(), version=4)),
    )
    tm = dict(queue=1.0, decode=5.0 + i % 3, quality=2.0, total=30.0 + i % 10)
    if i % 11 == 10:
        return ImageRecord(
            status="rejected", reason="not an image (no known file signature)", timings=Timings(**tm), **common
        )
    if i % 7 == 6:
        return ImageRecord(
            status="unreadable",
            reason=f"out of focus (focus {i % 20}.0 < 20.0)",
            quality={"focus": float(i % 20), "brightness": 128.0},
            timings=Timings(**tm),
            **common,
        )
    label = LABELS[i % 4]
    p = {lab: (0.7 if lab == label else 0.1) for lab in LABELS}
    score = round(1.0 - p["Benign"], 6)
    return ImageRecord(
        status="classified",
        label=label,
        probabilities=p,
        malignant_score=score,
        verdict="malignant" if score >= 0.5 else "benign",
        needs_review=(i % 5 == 0),
        quality={"focus": 150.0, "brightness": 180.0},
        segmentation={"cell_fraction": 0.12},
        timings=Timings(**tm, preprocess=8.0, inference=3.0 + (i % 4)),
        model_id=model_id,
        model_name="edge-screen-mnv2-int8",
        model_sha256="ab" * 32,
        **common,
    )


@pytest.fixture
def make_store(tmp_path) -> Callable[..., Store]:
    """``make_store(n, device_id="dev-a", name=None, bulk=True)``: a SQLite store in tmp_path with a run,
    a model and ``n`` fake records. bulk=True inserts in one transaction (fast); bulk=False goes through
    Store.record one by one, as the daemon does."""
    opened = []

    def _make(
        n: int = 20, device_id: str = "dev-a", name: Optional[str] = None, bulk: bool = True, start: int = 0
    ) -> Store:
        path = tmp_path / (name or f"{device_id}.sqlite")
        store = Store.open(path, device_id=device_id)
        opened.append(store)
        run_id = store.start_run("0.1.0-test")
        model_id = store.ensure_model("edge-screen-mnv2-int8", "ab" * 32, {"name": "edge-screen-mnv2-int8"})
        add_records(store, range(start, start + n), run_id=run_id, model_id=model_id, bulk=bulk)
        return store

    yield _make
    for s in opened:
        s.close()


def add_records(store: Store, numbers, run_id=None, model_id=None, bulk: bool = True, **kw) -> None:
    recs = [fake_record(i, store.device_id, run_id, model_id, **kw) for i in numbers]
    if not bulk:
        for r in recs:
            store.record(r)
        return
    rows = []
    for r in recs:
        row = image_row(r)
        row["filename"] = os.path.basename(r.path)
        rows.append(row)
    if rows:
        with store.engine.begin() as conn:
            conn.execute(images.insert(), rows)


def count(target, table: str = "images") -> int:
    """Rows of ``table`` in an SQLite file or a PostgreSQL URL."""
    if "://" not in str(target):
        con = sqlite3.connect(str(target))
        n = con.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
        con.close()
        return n
    eng = create_engine(str(target).replace("postgresql://", "postgresql+psycopg://"))
    with eng.connect() as c:
        n = c.execute(select(func.count()).select_from(text(table))).scalar()
    eng.dispose()
    return n


@pytest.fixture
def pg_url() -> str:
    """A SQLAlchemy URL of a PostgreSQL server for tests (scripts/ci-postgres.sh prints one)."""
    url = os.environ.get("EDGE_SCREEN_TEST_PG")
    if not url:
        pytest.skip(
            "EDGE_SCREEN_TEST_PG is not set: no PostgreSQL server to test against "
            "(run `eval $(scripts/ci-postgres.sh)` to start one on 127.0.0.1)"
        )
    return url


@pytest.fixture
def pg_db(pg_url):
    """A fresh PostgreSQL database per test, dropped afterwards."""
    admin = create_engine(pg_url.replace("postgresql://", "postgresql+psycopg://"), isolation_level="AUTOCOMMIT")
    name = f"edge_test_{uuid.uuid4().hex[:12]}"
    try:
        with admin.connect() as c:
            c.execute(text(f'CREATE DATABASE "{name}"'))
    except Exception as e:  # noqa: BLE001 - any failure to reach the server is a skip reason, stated
        if os.environ.get("CI"):
            raise
        pytest.skip(f"PostgreSQL at EDGE_SCREEN_TEST_PG is not reachable: {str(e).splitlines()[0]}")
    url = admin.url.set(database=name).render_as_string(hide_password=False)
    yield url
    with admin.connect() as c:
        c.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


# Markers (registered in setup.cfg, --strict-markers): given here from what a test uses, so that a new
# test is marked by the same rule as its neighbours and `pytest -m "not browser and not trainer"` is a
# quick run. "slow" marks the end-to-end trainer runs (minutes on 2 cores).
_BROWSER_FIXTURES = {"browser", "page", "html_report"}
_DAEMON_MODULES = {
    "test_daemon",
    "test_daemon_intake",
    "test_domain_daemon",
    "test_camera",
    "test_refusal",
    "test_retention",
}
_TRAINER_MODULES = {
    "test_cells",
    "test_corrections",
    "test_evaluate",
    "test_fine_tuning_stop",
    "test_gate",
    "test_samplerule",
    "test_sources",
    "test_split",
    "test_trainer_e2e",
    "test_weights",
}


def pytest_collection_modifyitems(config, items):
    for item in items:
        module = item.module.__name__.rsplit(".", 1)[-1] if item.module else ""
        names = set(getattr(item, "fixturenames", ()))
        if names & _BROWSER_FIXTURES or module.startswith("test_web") or "chromium" in item.name:
            item.add_marker(pytest.mark.browser)
        if names & {"pg_url", "pg_db"}:
            item.add_marker(pytest.mark.postgres)
        if module in _DAEMON_MODULES or "daemon" in item.name:
            item.add_marker(pytest.mark.daemon)
        if module in _TRAINER_MODULES:
            item.add_marker(pytest.mark.trainer)
        if module == "test_trainer_e2e":
            item.add_marker(pytest.mark.slow)

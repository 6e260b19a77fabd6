"""Clinic export into PostgreSQL (``EDGE_SCREEN_TEST_PG``; CI starts a server): the same guarantees as the
SQLite target in test_export.py — idempotent, merged, all or nothing, anonymised, clear errors."""

import pytest
from conftest import count, fake_record
from sqlalchemy import create_engine, select, text

from edge.export.merge import ExportError, export_to, merge
from edge.store.database import Store
from edge.store.schema import images

KEY = b"clinic-secret"


# ----------------------------------------------------------------------------------------- PostgreSQL


def test_pg_export_twice_and_merge(make_store, pg_db):
    stores = [make_store(n, device_id=d) for n, d in ((40, "dev-a"), (25, "dev-b"), (33, "dev-c"))]
    assert export_to(stores[0], pg_db).rows_sent == 40
    assert export_to(stores[0], pg_db).rows_sent == 0
    assert count(pg_db) == 40
    s = merge(stores, pg_db)
    assert (s.rows_sent, s.rows_skipped, s.conflicts) == (58, 40, [])
    assert merge(stores, pg_db).rows_sent == 0 and count(pg_db) == 98
    pg = Store.open(pg_db, create=False)
    assert pg.counts(device_id="dev-b").total == 25
    src = stores[1].get(fake_record(4, "dev-b").id)
    assert pg.get(src.id) == src  # every column survives the trip, times and JSON included


def test_pg_failure_mid_export_leaves_target_unchanged(make_store, pg_db):
    store = make_store(5000)
    other = make_store(5, device_id="dev-z")
    export_to(other, pg_db)

    def boom(done, total):
        if done < total:
            raise RuntimeError("power cut")

    with pytest.raises(RuntimeError):
        export_to(store, pg_db, progress=boom)
    assert count(pg_db) == 5 and count(pg_db, "runs") == 1


def test_pg_anonymize_foreign_and_read_only_targets(make_store, pg_db):
    store = make_store(20)
    export_to(store, pg_db, anonymize_key=KEY)
    eng = create_engine(pg_db)
    with eng.connect() as c:
        paths = [r[0] + r[1] for r in c.execute(select(images.c.path, images.c.filename))]
        c.execute(
            text(
                "DROP TABLE export_watermarks, reviews, samples, images, models, runs, schema_info, web_sessions, users"
            )
        )
        c.execute(text("CREATE TABLE patients (x int)"))
        c.commit()
    eng.dispose()
    assert len(paths) == 20 and not any("patient" in p for p in paths)
    with pytest.raises(ExportError, match="not an edge-screen database .*patients"):
        export_to(store, pg_db)
    # The server's own database: this role may not create tables in its public schema.
    with pytest.raises(ExportError, match="read-only or not writable"):
        export_to(store, pg_db.rsplit("/", 1)[0] + "/postgres")

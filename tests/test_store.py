import hashlib
import sqlite3
import subprocess
import sys
import textwrap
from dataclasses import replace
from datetime import datetime, timedelta

import pytest
from conftest import T0, fake_record
from sqlalchemy import create_engine, inspect, select
from sqlalchemy.exc import IntegrityError, StatementError

from edge.store import migrations, schema
from edge.store.database import ImageRecord, Store, StoreError, timing_stats
from edge.store.records import Timings
from edge.store.rows import image_record, image_row
from edge.store.schema import SCHEMA_VERSION, images, runs, schema_info


def raw(path):
    return sqlite3.connect(str(path), isolation_level=None)


def test_pragmas_wal_foreign_keys_full_sync(tmp_path):
    store = Store.open(tmp_path / "db" / "x.sqlite", device_id="d")  # parent folder is created
    assert raw(tmp_path / "db" / "x.sqlite").execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    with store.engine.connect() as c:
        assert c.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
        assert c.exec_driver_sql("PRAGMA synchronous").scalar() == 2  # FULL
        assert c.exec_driver_sql("PRAGMA busy_timeout").scalar() == 5000
    normal = Store.open(tmp_path / "db" / "x.sqlite", device_id="d", synchronous="NORMAL", busy_timeout_ms=250)
    with normal.engine.connect() as c:
        assert c.exec_driver_sql("PRAGMA synchronous").scalar() == 1
        assert c.exec_driver_sql("PRAGMA busy_timeout").scalar() == 250


def test_one_mapping_between_a_result_and_its_row():
    rec = fake_record(3, device_id="dev-a")
    row = image_row(rec)
    assert set(row) == {c.name for c in images.columns}
    assert (row["t_decode_ms"], row["t_store_ms"]) == (rec.timings.decode, None)
    assert image_record(row) == replace(rec, filename="patient-000003_smear.jpg")


def test_record_round_trip_and_exactly_once(tmp_path):
    store = Store.open(tmp_path / "x.sqlite", device_id="dev-a")
    rid = store.start_run("0.1.0")
    mid = store.ensure_model("m", "ab" * 32, {"threshold": 0.5})
    assert store.ensure_model("m", "ab" * 32, {"threshold": 0.5}) == mid
    rec = fake_record(1, run_id=rid, model_id=mid)
    rec.id = rec.device_id = None
    rec.timings.store = None
    first = store.record(rec)
    got = store.get(first)
    assert got.device_id == "dev-a" and got.filename == "patient-000001_smear.jpg"
    assert got.probabilities == rec.probabilities and got.quality == rec.quality
    assert got.recorded_at == rec.recorded_at and got.recorded_at.tzinfo is not None
    assert got.needs_review is False and got.timings.store >= 0
    assert got.timings.total == pytest.approx(rec.timings.total + got.timings.store)
    # The same file again (a restart after kill -9 re-finds it in the inbox): same id, no new row.
    assert store.record(fake_record(1, run_id=rid, model_id=mid)) == first
    assert store.count_images() == 1
    # Same path, new content (the camera reused a name) is a new image.
    changed = fake_record(1, run_id=rid)
    changed.sha256, changed.id = "cd" * 32, None
    assert store.record(changed) != first
    assert store.count_images() == 2
    assert store.is_recorded(rec.path, rec.sha256) and not store.is_recorded(rec.path, "ef" * 32)
    sizes, latest = store.recorded_files()[rec.path]
    assert sizes == {rec.bytes, changed.bytes} and latest >= rec.recorded_at.timestamp() - 1


def test_record_many_is_one_all_or_nothing_transaction_and_exactly_once(tmp_path):
    store = Store.open(tmp_path / "x.sqlite", device_id="dev-a")
    first = store.record(fake_record(1))
    recs = [fake_record(2), fake_record(1), fake_record(3), fake_record(2)]
    for r in recs:
        r.id = None
    ids = store.record_many(recs)
    # Already recorded and repeated keys get the existing row's id; only 2 and 3 are new.
    assert ids[1] == first and ids[0] == ids[3] and len(set(ids)) == 3
    assert store.count_images() == 3
    bad = fake_record(5, run_id="no-such-run")
    with pytest.raises(IntegrityError):  # one bad row: none of the group is written
        store.record_many([fake_record(4), bad])
    assert store.count_images() == 3 and not store.is_recorded(fake_record(4).path, fake_record(4).sha256)


def test_lookup_answers_is_recorded_and_find_by_sha256_at_once(tmp_path):
    store = Store.open(tmp_path / "x.sqlite", device_id="d")
    assert store.lookup("/in/a.jpg", "s1") == (False, None)
    orig = store.record(ImageRecord(path="/in/a.jpg", sha256="s1", status="classified", label="Benign"))
    store.record(ImageRecord(path="/in/b.jpg", sha256="s1", status="duplicate", duplicate_of=orig))
    recorded, first = store.lookup("/in/b.jpg", "s1")
    assert recorded and first.id == orig
    recorded, first = store.lookup("/in/c.jpg", "s1")
    assert not recorded and first.id == orig


def test_record_rejects_bad_values_and_dangling_references(tmp_path):
    store = Store.open(tmp_path / "x.sqlite", device_id="d")
    with pytest.raises(ValueError, match="status"):
        store.record(ImageRecord(path="/a", sha256="x", status="done"))
    with pytest.raises(ValueError, match="sha256"):
        store.record(ImageRecord(path="/a", sha256="", status="rejected"))
    with pytest.raises(IntegrityError):  # foreign_keys=ON
        store.record(ImageRecord(path="/a", sha256="x", status="rejected", run_id="no-such-run"))
    with pytest.raises(StatementError, match="naive datetime"):
        store.record(ImageRecord(path="/a", sha256="x", status="rejected", recorded_at=datetime(2026, 1, 1)))
    assert store.count_images() == 0


def test_find_by_sha256_points_at_the_first_result_not_a_duplicate(tmp_path):
    store = Store.open(tmp_path / "x.sqlite", device_id="d")
    orig = store.record(ImageRecord(path="/in/a.jpg", sha256="s1", status="classified", label="Benign", recorded_at=T0))
    store.record(
        ImageRecord(
            path="/in/b.jpg", sha256="s1", status="duplicate", duplicate_of=orig, recorded_at=T0 - timedelta(hours=1)
        )
    )
    assert store.find_by_sha256("s1").id == orig
    assert store.find_by_sha256("s1", device_id="other") is None
    assert store.find_by_sha256("nope") is None


def test_status_queries(make_store):
    store = make_store(70)
    day = T0.replace(hour=0)
    c = store.counts(since=day, until=day + timedelta(days=1))
    recs = list(store.iter_images())
    assert c.total == 70 == len(recs)
    for status in ("classified", "unreadable", "rejected"):
        assert c.by_status[status] == sum(r.status == status for r in recs)
    assert sum(c.by_verdict.values()) == c.by_status["classified"]
    assert c.by_verdict["malignant"] == sum(r.verdict == "malignant" for r in recs)
    assert c.needs_review == sum(r.needs_review for r in recs)
    assert store.counts(since=day + timedelta(days=1)).total == 0
    assert store.counts(device_id="someone-else").total == 0
    err = store.last_error()
    assert err.status in ("unreadable", "rejected")
    assert err.recorded_at == max(r.recorded_at for r in recs if r.status in ("unreadable", "rejected"))
    t = store.recent_timings(10)
    assert len(t["inference"]) == 10 and len(t["total"]) == 10
    stats = store.timing_stats(1000)["inference"]
    assert stats.n == c.by_status["classified"] and stats.max_ms == 6.0
    assert store.last_run().version == "0.1.0-test"


def test_timing_stats_nearest_rank():
    s = timing_stats([float(x) for x in range(1, 101)])
    # Nearest-rank for the median too (it was an interpolated 50.5 here while `report` said 50.0).
    assert (s.n, s.median_ms, s.p95_ms, s.max_ms) == (100, 50.0, 95.0, 100.0)
    assert timing_stats([]).median_ms is None


def test_status_and_report_agree_on_medians(tmp_path):
    from edge.report.query import build_report
    from edge.report.window import Filters, make_window

    store = Store.open(tmp_path / "db.sqlite", device_id="dev")
    store.record_many(
        [
            ImageRecord(
                path=f"/i/{k}.jpg",
                sha256=str(k).ljust(64, "0"),
                status="classified",
                timings=Timings(inference=float(k), total=float(k) * 2),
            )
            for k in range(1, 11)
        ]
    )
    status = store.timing_stats(100)
    rep = {
        t.stage: t
        for t in build_report(tmp_path / "db.sqlite", make_window(None, None, all_time=True), Filters()).timings
    }
    for stage in ("inference", "total"):
        assert (status[stage].median_ms, status[stage].p95_ms) == (rep[stage].median_ms, rep[stage].p95_ms)


def test_iter_images_window_and_pagination(make_store):
    store = make_store(25)
    since, until = T0 + timedelta(seconds=50), T0 + timedelta(seconds=150)
    got = list(store.iter_images(since=since, until=until, batch=3))
    assert [r.recorded_at for r in got] == [T0 + timedelta(seconds=10 * i) for i in range(5, 15)]
    assert len({r.id for r in store.iter_images(batch=4)}) == 25


def test_start_run_closes_runs_whose_process_died(tmp_path):
    store = Store.open(tmp_path / "x.sqlite", device_id="d")
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True, check=True
    )
    crashed = store.start_run("0.1.0", pid=int(dead.stdout), hostname="h")
    store.record(fake_record(3, run_id=crashed))
    alive = store.start_run("0.1.0", hostname="h")  # this process: alive, must stay open
    store.start_run("0.1.0", hostname="h")
    with store.engine.connect() as c:
        rows = {r.id: r for r in c.execute(select(runs))}
    assert rows[crashed].exit_reason.startswith("unclean")
    assert rows[crashed].stopped_at == fake_record(3).recorded_at
    assert rows[alive].stopped_at is None
    store.stop_run(alive, "SIGTERM")
    assert store.last_run().exit_reason is None  # the latest run is still open
    with store.engine.connect() as c:
        assert c.execute(select(runs.c.exit_reason).where(runs.c.id == alive)).scalar() == "SIGTERM"


def test_reader_is_not_blocked_by_an_open_write_transaction(make_store, tmp_path):
    store = make_store(5)
    w = raw(tmp_path / "dev-a.sqlite")
    w.execute("BEGIN IMMEDIATE")
    w.execute("UPDATE runs SET version = 'uncommitted'")
    assert store.counts().total == 5  # WAL: the reader sees the last commit and does not wait
    assert store.last_run().version == "0.1.0-test"
    w.execute("ROLLBACK")


def test_concurrent_reader_while_a_writer_process_writes(make_store, tmp_path):
    store = make_store(0)
    n = 300
    writer = subprocess.Popen(
        [
            sys.executable,
            "-c",
            textwrap.dedent(f"""
        import sys
        sys.path[:0] = {sys.path!r}
        from conftest import fake_record
        from edge.store.database import Store
        s = Store.open({str(tmp_path / "dev-a.sqlite")!r}, device_id="dev-a")
        for i in range({n}):
            s.record(fake_record(i, "dev-a"))
            if i == 0:
                print("first", flush=True)
        """),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert writer.stdout.readline().strip() == "first"
    seen = []
    while writer.poll() is None:  # any "database is locked" would raise here
        seen.append(store.counts().total)
        list(store.iter_images(batch=100))
    assert writer.wait() == 0
    assert seen == sorted(seen) and all(1 <= s <= n for s in seen)
    assert store.counts().total == n


def _columns(engine):
    insp = inspect(engine)
    return {
        t: (
            {c["name"]: str(c["type"]) for c in insp.get_columns(t)},
            sorted(i["name"] for i in insp.get_indexes(t)),
            sorted(str(u["column_names"]) for u in insp.get_unique_constraints(t)),
        )
        for t in insp.get_table_names()
    }


def make_v1(path):
    """A database as schema version 1 left it (before export watermarks)."""
    eng = create_engine(f"sqlite:///{path}")
    with eng.begin() as c:
        schema.metadata.create_all(c, tables=[schema_info])
        migrations.MIGRATIONS[1](c)
        # MIGRATIONS[1] builds today's images table; a real v1 device has no v3 columns.
        c.exec_driver_sql("DROP INDEX ix_images_sample")
        for col in ("moved_to", "sample_id", "purged_at"):
            c.exec_driver_sql(f"ALTER TABLE images DROP COLUMN {col}")
        c.execute(schema_info.insert().values(application="edge-screen", version=1, updated_at=T0))
        row = image_row(fake_record(1, "old-device"))
        del row["moved_to"], row["sample_id"], row["purged_at"]
        row["filename"] = "patient-000001_smear.jpg"
        c.execute(images.insert().values(**row))
    eng.dispose()


def test_older_schema_is_upgraded_keeping_history(tmp_path):
    make_v1(tmp_path / "old.sqlite")
    assert "export_watermarks" not in inspect(create_engine(f"sqlite:///{tmp_path / 'old.sqlite'}")).get_table_names()
    store = Store.open(tmp_path / "old.sqlite", device_id="old-device")
    with store.engine.connect() as c:
        assert c.execute(select(schema_info.c.version)).scalar() == SCHEMA_VERSION
    assert store.get(fake_record(1, "old-device").id).label == fake_record(1, "old-device").label
    fresh = Store.open(tmp_path / "fresh.sqlite", device_id="x")
    assert _columns(store.engine) == _columns(fresh.engine)  # migrations and the model agree


def test_failed_migration_leaves_the_old_version(tmp_path, monkeypatch):
    make_v1(tmp_path / "old.sqlite")

    def broken(conn):
        migrations.MIGRATIONS_ORIG[2](conn)
        raise RuntimeError("disk pulled mid-upgrade")

    monkeypatch.setattr(migrations, "MIGRATIONS_ORIG", dict(migrations.MIGRATIONS), raising=False)
    monkeypatch.setitem(migrations.MIGRATIONS, 2, broken)
    with pytest.raises(RuntimeError, match="mid-upgrade"):
        Store.open(tmp_path / "old.sqlite", device_id="d")
    c = raw(tmp_path / "old.sqlite")
    assert c.execute("SELECT version FROM schema_info").fetchone()[0] == 1
    assert c.execute("SELECT count(*) FROM sqlite_master WHERE name = 'export_watermarks'").fetchone()[0] == 0
    assert c.execute("SELECT count(*) FROM images").fetchone()[0] == 1


def test_newer_schema_is_refused(tmp_path):
    Store.open(tmp_path / "x.sqlite", device_id="d").close()
    raw(tmp_path / "x.sqlite").execute("UPDATE schema_info SET version = 99")
    with pytest.raises(StoreError, match=r"schema version 99, newer than the \d+ this edge-screen knows"):
        Store.open(tmp_path / "x.sqlite", device_id="d")


def test_foreign_databases_are_refused(tmp_path):
    raw(tmp_path / "other.sqlite").execute("CREATE TABLE patients (id INTEGER PRIMARY KEY)")
    with pytest.raises(StoreError, match="is not an edge-screen database .*patients"):
        Store.open(tmp_path / "other.sqlite", device_id="d")
    assert [
        r[0] for r in raw(tmp_path / "other.sqlite").execute("SELECT name FROM sqlite_master WHERE type = 'table'")
    ] == ["patients"]
    (tmp_path / "notes.txt").write_text("hello " * 1000)
    with pytest.raises(StoreError, match="notes.txt"):
        Store.open(tmp_path / "notes.txt", device_id="d")
    with pytest.raises(StoreError, match="database not found"):
        Store.open(tmp_path / "missing.sqlite", create=False)
    assert not (tmp_path / "missing.sqlite").exists()


def test_a_file_that_could_not_be_read_is_taken_again_at_the_next_scan(tmp_path):
    """Recorded as rejected "cannot read file: Permission denied"; after a chmod the backlog scan must
    offer it again (its new, readable content is then a new row)."""
    import os
    from datetime import timezone

    from edge.daemon.watcher import backlog, unchanged_since_recorded

    inbox = tmp_path / "inbox"
    inbox.mkdir()
    f, ok = inbox / "locked.jpg", inbox / "fine.jpg"
    f.write_bytes(b"x" * 100)
    ok.write_bytes(b"y" * 100)
    old = datetime(2026, 1, 1, tzinfo=timezone.utc).timestamp()
    os.utime(f, (old, old))
    os.utime(ok, (old, old))
    store = Store.open(tmp_path / "db.sqlite", device_id="d")
    for p, status, reason in (
        (f, "rejected", "cannot read file: Permission denied"),
        (ok, "unreadable", "out of focus"),
    ):
        store.record(
            fake_record(1, "d").__class__(
                path=str(p), sha256=hashlib.sha256(p.name.encode()).hexdigest(), status=status, reason=reason, bytes=100
            )
        )
    assert backlog(inbox, skip=unchanged_since_recorded(store.recorded_files())) == [f]
    store.close()


def test_recorded_files_can_be_asked_for_just_the_inbox_s_files(make_store):
    store = make_store(1200)  # more paths than one IN (...) chunk
    every = store.recorded_files()
    some = [p for p in sorted(every)[::3]] + ["/inbox/never-recorded.jpg"]
    got = store.recorded_files(some)
    assert set(got) == set(some[:-1]) and all(got[p] == every[p] for p in got)
    assert store.recorded_files([]) == {}

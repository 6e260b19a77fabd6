import signal
import sqlite3
import subprocess
import sys
import textwrap
from datetime import timedelta

import pytest
from click.testing import CliRunner
from conftest import T0, add_records, count, fake_record
from sqlalchemy import event

from edge.cli.export import COMMANDS, EXIT_CONFLICTS
from edge.export.csvfile import export_csv
from edge.export.merge import ExportError, export_to, merge
from edge.store.database import Store
from edge.store.engine import make_engine
from edge.store.schema import images

KEY = b"clinic-secret"


def dump(path):
    return "\n".join(sqlite3.connect(str(path)).iterdump())


# ------------------------------------------------------------------------------------------ SQLite target


def test_export_twice_is_idempotent_and_incremental(make_store, tmp_path):
    store = make_store(50)
    target = tmp_path / "clinic" / "clinic.sqlite"  # folder and file are created
    first = export_to(store, target)
    assert (first.rows_sent, first.rows_skipped, first.conflicts) == (50, 0, [])
    assert first.runs_sent == 1 and first.models_sent == 1 and first.watermark_saved
    again = export_to(store, target)
    assert (again.rows_sent, again.rows_skipped) == (0, 0)  # the watermark: nothing was even read
    assert count(target) == 50
    add_records(store, range(50, 60))
    third = export_to(store, target)
    assert (third.rows_sent, third.rows_skipped) == (10, 0)
    full = export_to(store, target, incremental=False)
    assert (full.rows_sent, full.rows_skipped, full.conflicts) == (0, 60, [])
    assert count(target) == 60
    assert Store.open(target).counts().total == 60  # the target is a valid store


def test_rows_recorded_after_a_clock_jump_back_are_still_exported(make_store, tmp_path):
    # A Pi has no RTC: after a reboot without network its clock can be behind the last export.
    store = make_store(20)
    export_to(store, tmp_path / "c.sqlite")
    add_records(store, range(20, 25), t0=T0 - timedelta(days=30))
    assert export_to(store, tmp_path / "c.sqlite").rows_sent == 5
    assert count(tmp_path / "c.sqlite") == 25


def test_a_replaced_target_gets_everything_again(make_store, tmp_path):
    store = make_store(30)
    export_to(store, tmp_path / "c.sqlite")
    for p in tmp_path.glob("c.sqlite*"):
        p.unlink()
    assert export_to(store, tmp_path / "c.sqlite").rows_sent == 30


def test_finished_run_updates_the_exported_open_run(make_store, tmp_path):
    store = make_store(3)
    rid = store.start_run("0.1.0")
    export_to(store, tmp_path / "c.sqlite")
    store.stop_run(rid, "SIGTERM")
    s = export_to(store, tmp_path / "c.sqlite")
    assert s.conflicts == [] and s.runs_sent == 1
    assert Store.open(tmp_path / "c.sqlite").last_run().exit_reason == "SIGTERM"


def test_merge_three_devices_sums_and_is_idempotent(make_store, tmp_path):
    srcs = [make_store(n, device_id=d) for n, d in ((40, "dev-a"), (25, "dev-b"), (33, "dev-c"))]
    paths = [tmp_path / f"{d}.sqlite" for d in ("dev-a", "dev-b", "dev-c")]
    before = [dump(p) for p in paths]
    s = merge(paths, tmp_path / "clinic.sqlite")
    assert (s.rows_sent, s.conflicts, s.runs_sent, s.models_sent) == (98, [], 3, 3)
    again = merge(paths, tmp_path / "clinic.sqlite")
    assert (again.rows_sent, again.rows_skipped, again.conflicts) == (0, 98, [])
    assert count(tmp_path / "clinic.sqlite") == 98
    clinic = Store.open(tmp_path / "clinic.sqlite")
    assert {d: clinic.counts(device_id=d).total for d in ("dev-a", "dev-b", "dev-c")} == {
        "dev-a": 40,
        "dev-b": 25,
        "dev-c": 33,
    }
    assert [dump(p) for p in paths] == before  # sources are only read
    assert srcs


def test_conflicts_are_reported_not_overwritten(make_store, tmp_path):
    store = make_store(10)
    export_to(store, tmp_path / "clinic.sqlite")
    victim = fake_record(2, "dev-a")
    with store.engine.begin() as c:
        c.execute(images.update().where(images.c.id == victim.id).values(label="Pro-B", malignant_score=0.99))
    s = export_to(store, tmp_path / "clinic.sqlite", incremental=False)
    assert len(s.conflicts) == 1 and s.rows_skipped == 9
    c = s.conflicts[0]
    assert (c.table, c.id, c.device_id, set(c.columns)) == ("images", victim.id, "dev-a", {"label", "malignant_score"})
    assert Store.open(tmp_path / "clinic.sqlite").get(victim.id).label == victim.label
    # The same id in two sources with different content: the first is kept, the second reported.
    other = Store.open(tmp_path / "copy.sqlite", device_id="dev-a")
    add_records(other, range(2, 3))
    with other.engine.begin() as conn:
        conn.execute(images.update().values(reason="edited by hand"))
    m = merge([tmp_path / "copy.sqlite"], tmp_path / "clinic.sqlite")
    assert [x.id for x in m.conflicts] == [victim.id] and "reason" in m.conflicts[0].columns
    assert Store.open(tmp_path / "clinic.sqlite").get(victim.id).reason == victim.reason


def test_an_exception_mid_export_leaves_the_target_unchanged(make_store, tmp_path):
    store = make_store(5000)
    target = tmp_path / "clinic.sqlite"

    def boom(done, total):
        if done < total:
            raise OSError(28, "No space left on device")

    with pytest.raises(ExportError, match="disk is full"):
        export_to(store, target, progress=boom)
    assert not target.exists()  # a target this export created is removed again
    add_records(Store.open(target, device_id="dev-a"), range(9000, 9003))
    before = dump(target)
    with pytest.raises(ExportError):
        export_to(store, target, progress=boom)
    assert dump(target) == before
    assert export_to(store, target).rows_sent == 5000  # the failed attempts moved no watermark


def test_export_killed_halfway_leaves_the_target_unchanged(make_store, tmp_path):
    store = make_store(5000)
    target = tmp_path / "clinic.sqlite"
    add_records(Store.open(target, device_id="other"), range(3))
    before = dump(target)
    proc = subprocess.Popen(
        [
            sys.executable,
            "-c",
            textwrap.dedent(f"""
        import sys
        sys.path[:0] = {sys.path!r}
        from edge.export.merge import export_to
        def progress(done, total):
            print(done, total, flush=True)
            sys.stdin.readline()  # wait here, inside the target transaction, until killed
        export_to({str(tmp_path / "dev-a.sqlite")!r}, {str(target)!r}, progress=progress)
        """),
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    done, total = map(int, proc.stdout.readline().split())
    assert 0 < done < total == 5000
    proc.send_signal(signal.SIGKILL)
    assert proc.wait() == -signal.SIGKILL
    assert dump(target) == before
    assert sqlite3.connect(str(target)).execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    assert export_to(store, target).rows_sent == 5000


def test_anonymize_leaves_no_path_or_filename(make_store, tmp_path):
    store = make_store(30)
    store.record(
        fake_record(99, "dev-a").__class__(
            path="/inbox/patient-jane-doe.jpg",
            sha256="ee" * 32,
            status="rejected",
            reason="symlink /inbox/patient-jane-doe.jpg points outside the inbox",
        )
    )
    s = export_to(store, tmp_path / "anon.sqlite", anonymize_key=KEY)
    assert s.rows_sent == 31
    text_dump = dump(tmp_path / "anon.sqlite")
    # "patient-": the file names' words, not the samples table's patient_id column (schema v5)
    assert "patient-" not in text_dump and "smear" not in text_dump
    src = {r.id: r for r in store.iter_images()}
    out = list(Store.open(tmp_path / "anon.sqlite").iter_images())
    for r in out:
        assert (r.sha256, r.label, r.malignant_score, r.status) == (
            src[r.id].sha256,
            src[r.id].label,
            src[r.id].malignant_score,
            src[r.id].status,
        )
        assert r.path.startswith("anon:") and r.filename.endswith(".jpg")
    # Keyed and deterministic: another export with the same key matches, a different key does not.
    assert export_to(store, tmp_path / "anon.sqlite", anonymize_key=KEY, incremental=False).conflicts == []
    other = export_to(store, tmp_path / "anon.sqlite", anonymize_key=b"other", incremental=False).conflicts
    assert len([c for c in other if c.table == "images"]) == 31


def test_anonymize_covers_reasons_device_ids_and_host_names(make_store, tmp_path):
    import socket

    store = make_store(3)
    first = next(store.iter_images())
    rec = fake_record(50, "dev-a")
    store.record(
        rec.__class__(
            path="/inbox/Jane Doe MRN 4711 copy.jpg",
            sha256=first.sha256,
            status="duplicate",
            reason=f"same content as {first.path}",
            duplicate_of=first.id,
        )
    )
    store.record(
        rec.__class__(
            path="/inbox/link.jpg",
            sha256="ab" * 32,
            status="rejected",
            reason="symlink points outside the inbox (to /home/Jane Doe/MRN 4711.jpg)",
        )
    )
    # A host name long enough to look for as text; the fixture's run has the machine's own (maybe as short as
    # "vm", which random hex and base64 can contain): that one is compared as a value below.
    store.start_run("0.1.0-test", hostname="clinic-pc-7.lab.example")
    export_to(store, tmp_path / "anon.sqlite", anonymize_key=KEY)
    export_csv(store, tmp_path / "csv", anonymize_key=KEY)
    texts = [dump(tmp_path / "anon.sqlite")] + [p.read_text() for p in (tmp_path / "csv").iterdir()]
    for dumped in texts:
        for secret in ("patient-", "Jane", "4711", "dev-a", "clinic-pc-7"):
            assert secret not in dumped, secret
    hosts = [r[0] for r in sqlite3.connect(str(tmp_path / "anon.sqlite")).execute("SELECT hostname FROM runs")]
    assert len(hosts) == 2 and all(h.startswith("anon-") for h in hosts) and socket.gethostname() not in hosts, hosts
    reasons = [r.reason for r in Store.open(tmp_path / "anon.sqlite").iter_images() if r.reason]
    assert any(x.startswith("same content as anon:") for x in reasons), reasons
    assert any(x.startswith("symlink points outside the inbox (to anon:") and x.endswith(")") for x in reasons)


def test_foreign_and_newer_targets_give_clear_errors(make_store, tmp_path):
    store = make_store(5)
    foreign = tmp_path / "foreign.sqlite"
    sqlite3.connect(str(foreign)).execute("CREATE TABLE patients (id INTEGER)")
    before = dump(foreign)
    with pytest.raises(ExportError, match="not an edge-screen database") as e:
        export_to(store, foreign)
    assert "\n" not in str(e.value) and dump(foreign) == before
    (tmp_path / "text.sqlite").write_text("not sqlite at all" * 100)
    with pytest.raises(ExportError, match="not an edge-screen database"):
        export_to(store, tmp_path / "text.sqlite")
    newer = tmp_path / "newer.sqlite"
    Store.open(newer).close()
    sqlite3.connect(str(newer), isolation_level=None).execute("UPDATE schema_info SET version = 99")
    with pytest.raises(ExportError, match="schema version 99, newer"):
        export_to(store, newer)
    with pytest.raises(ExportError, match="both a source and the target"):
        export_to(store, tmp_path / "dev-a.sqlite")
    with pytest.raises(ExportError, match="source not found"):
        merge([tmp_path / "nope.sqlite"], tmp_path / "m.sqlite")
    src_before = dump(tmp_path / "dev-a.sqlite")
    with pytest.raises(ExportError, match="newer"):
        export_to(tmp_path / "dev-a.sqlite", newer)
    assert dump(tmp_path / "dev-a.sqlite") == src_before  # no watermark moved either


def test_read_only_and_full_targets(make_store, tmp_path):
    store = make_store(3000)
    target = tmp_path / "c.sqlite"
    add_records(Store.open(target, device_id="other"), range(3))
    before = dump(target)
    with pytest.raises(ExportError, match="read-only"):
        export_to(store, f"sqlite:///file:{target}?mode=ro&uri=true")
    full = make_engine(target)

    @event.listens_for(full, "connect")
    def _small_disk(dbapi_conn, _):
        pages = dbapi_conn.execute("PRAGMA page_count").fetchone()[0]
        dbapi_conn.execute(f"PRAGMA max_page_count = {pages + 20}")

    with pytest.raises(ExportError, match="disk is full"):
        export_to(store, full)
    full.dispose()
    assert dump(target) == before


def test_csv_export(make_store, tmp_path):
    store = make_store(25)
    s = export_csv(store, tmp_path / "csv", anonymize_key=KEY)
    assert s.rows_sent == 25
    lines = (tmp_path / "csv" / "images.csv").read_text().splitlines()
    assert lines[0].split(",")[:3] == ["id", "device_id", "run_id"] and len(lines) == 26
    assert "patient" not in (tmp_path / "csv" / "images.csv").read_text()
    assert len((tmp_path / "csv" / "runs.csv").read_text().splitlines()) == 2
    assert sorted(p.name for p in (tmp_path / "csv").iterdir()) == [
        "images.csv",
        "models.csv",
        "reviews.csv",
        "runs.csv",
        "samples.csv",
    ]  # no samples yet: headers only
    assert (tmp_path / "csv" / "samples.csv").read_text().startswith("id,device_id,sample_id,")


def test_csv_export_quotes_what_a_spreadsheet_would_run_as_a_formula(make_store, tmp_path):
    import csv

    store = make_store(0)
    add_records(store, range(4), prefix="/inbox/=cmd|' -C calc'!A0")
    add_records(store, range(4, 8), prefix="/inbox/+SUM(1+1)")
    add_records(store, range(8, 12), prefix="/inbox/@evil")
    export_csv(store, tmp_path / "csv")
    with open(tmp_path / "csv" / "images.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 12
    for r in rows:
        for v in r.values():
            assert not v.startswith(("=", "+", "@")), v
    assert {r["filename"][:2] for r in rows} == {"'=", "'+", "'@"}


# ------------------------------------------------------------------------------------------------ CLI


def cli(*args, env=None):
    import click

    group = click.Group(commands={c.name: c for c in COMMANDS})
    return CliRunner().invoke(group, list(args), env=env, catch_exceptions=False)


def test_cli_export_and_merge(make_store, tmp_path):
    make_store(12, device_id="dev-a")
    make_store(7, device_id="dev-b")
    cfg = tmp_path / "c.toml"
    cfg.write_text(f'[database]\nurl = "sqlite:///{tmp_path}/dev-a.sqlite"\n[daemon]\ndevice_id = "dev-a"\n')
    r = cli("export", "--config", str(cfg))
    assert r.exit_code == 2 and "export.target" in r.output
    with_target = tmp_path / "with-target.toml"
    with_target.write_text(cfg.read_text() + f'[export]\ntarget = "{tmp_path}/clinic.sqlite"\n')
    r = cli("export", "--config", str(with_target))  # what edge-screen-export.timer runs
    assert r.exit_code == 0, r.output
    assert "12 rows sent" in r.output
    r = cli(
        "merge",
        str(tmp_path / "dev-a.sqlite"),
        str(tmp_path / "dev-b.sqlite"),
        "--into",
        str(tmp_path / "clinic.sqlite"),
    )
    assert r.exit_code == 0 and "7 rows sent, 12 already there" in r.output
    assert count(tmp_path / "clinic.sqlite") == 19
    r = cli(
        "export",
        "--config",
        str(cfg),
        "--format",
        "csv",
        "--out",
        str(tmp_path / "csv"),
        "--anonymize",
        env={"EDGE_SCREEN_ANONYMIZE_KEY": "k"},
    )
    assert r.exit_code == 0 and (tmp_path / "csv" / "images.csv").exists()
    r = cli(
        "export",
        "--config",
        str(cfg),
        "--to",
        str(tmp_path / "x.sqlite"),
        "--anonymize",
        env={"EDGE_SCREEN_ANONYMIZE_KEY": ""},
    )
    assert r.exit_code == 1 and "--anonymize needs a key" in r.output
    with sqlite3.connect(str(tmp_path / "dev-b.sqlite")) as c:
        c.execute("UPDATE images SET label = 'Pre-B' WHERE label = 'Benign'")
    r = cli("merge", str(tmp_path / "dev-b.sqlite"), "--into", str(tmp_path / "clinic.sqlite"))
    assert r.exit_code == EXIT_CONFLICTS and "conflict: images" in r.output
    r = cli("export", "--config", str(cfg), "--to", str(tmp_path / "dev-a.sqlite"))
    assert r.exit_code == 1 and "Error: " in r.output and "both a source and the target" in r.output
    # A PostgreSQL target without its driver: one line naming the extra to install, nothing written.
    r = cli("export", "--config", str(cfg), "--to", "postgresql+pg8000://clinic:pw@127.0.0.1:1/edge")
    assert r.exit_code == 1 and "pip install 'edge-screen[postgres]'" in r.output and "pw@" not in r.output
    assert len(r.output.strip().splitlines()) == 1, r.output

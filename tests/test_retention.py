"""Disk on a small SD card (issue 8, 13): retention deletes only exported files, by age and by size, and a
low-disk state pauses intake, shows in status and sd_notify, and resumes."""

from __future__ import annotations

import json
import signal
from datetime import timedelta
from pathlib import Path

from daemon_support import DaemonProc, cli, model_path, poll, rows, write_config  # noqa: F401

from edge.daemon.retention import disk_state, purge
from edge.export.merge import export_to
from edge.imaging import synthetic
from edge.store.database import Store
from edge.store.records import ImageRecord
from edge.store.schema import utcnow


def _files(tmp_path, store, names, days_old):
    done = tmp_path / "done"
    done.mkdir(exist_ok=True)
    recs = []
    for n in names:
        p = done / f"{n}.jpg"
        p.write_bytes(b"x" * 100_000)
        recs.append(
            ImageRecord(
                path=f"/inbox/{n}.jpg",
                moved_to=str(p),
                sha256=n.ljust(64, "0"),
                status="classified",
                recorded_at=utcnow() - timedelta(days=days_old),
            )
        )
    store.record_many(recs)
    return [done / f"{n}.jpg" for n in names]


def test_old_files_are_deleted_only_once_exported_and_rows_stay(tmp_path):
    store = Store.open(tmp_path / "dev.sqlite", device_id="dev")
    exported = _files(tmp_path, store, ["a", "b"], days_old=40)
    export_to(store, tmp_path / "clinic.sqlite")
    fresh = _files(tmp_path, store, ["c"], days_old=1)
    unexported = _files(tmp_path, store, ["d"], days_old=40)  # old, but the clinic has no copy yet
    clinic = [str(tmp_path / "clinic.sqlite")]
    out = purge(store, keep_days=30, max_mb=0, targets=clinic)
    assert (out.deleted, out.freed_bytes, out.kept_unexported) == (2, 200_000, 1)
    assert not any(p.exists() for p in exported) and all(p.exists() for p in fresh + unexported)
    recs = {r.path: r for r in store.iter_images()}
    assert len(recs) == 4 and recs["/inbox/a.jpg"].purged_at is not None and recs["/inbox/d.jpg"].purged_at is None
    export_to(store, tmp_path / "clinic.sqlite")
    assert purge(store, keep_days=30, max_mb=0, targets=clinic).deleted == 1 and not unexported[0].exists()


def test_size_limit_deletes_the_oldest_exported_files_first(tmp_path):
    store = Store.open(tmp_path / "dev.sqlite", device_id="dev")
    old = _files(tmp_path, store, ["o1", "o2"], days_old=5)
    new = _files(tmp_path, store, ["n1", "n2"], days_old=1)
    export_to(store, tmp_path / "clinic.sqlite")
    clinic = [str(tmp_path / "clinic.sqlite")]
    out = purge(store, keep_days=0, max_mb=0.25, targets=clinic)  # 400 kB of files, 250 kB allowed
    assert out.deleted == 2 and not any(p.exists() for p in old) and all(p.exists() for p in new)
    assert purge(store, keep_days=0, max_mb=0, targets=clinic).deleted == 0  # both limits off: nothing


def test_a_file_is_deleted_only_when_every_clinic_target_holds_its_row(tmp_path):
    """Issue 14 item 11: an export to a scratch target set the watermark and retention deleted 20 files
    whose rows the clinic never got. Two clinic targets configured: both must hold a row."""
    store = Store.open(tmp_path / "dev.sqlite", device_id="dev")
    names = [f"f{i:02d}" for i in range(20)]
    files = _files(tmp_path, store, names, days_old=40)
    clinic_a, clinic_b = str(tmp_path / "clinic-a.sqlite"), str(tmp_path / "clinic-b.sqlite")
    export_to(store, tmp_path / "scratch.sqlite")  # a USB stick, a test: not the clinic
    out = purge(store, keep_days=30, max_mb=0, targets=[clinic_a, clinic_b])
    assert (out.deleted, out.kept_unexported) == (0, 20) and all(p.exists() for p in files)
    assert len(out.unreachable) == 2 and "no database at" in out.unreachable[0]  # neither clinic exists yet
    export_to(store, clinic_a)
    out = purge(store, keep_days=30, max_mb=0, targets=[clinic_a, clinic_b])
    assert (out.deleted, out.kept_unexported, out.unreachable) == (0, 20, [out.unreachable[0]])
    assert all(p.exists() for p in files)
    export_to(store, clinic_b)
    # clinic B was replaced by an empty copy of its schema after the export: its watermark still says
    # "sent", but it holds nothing, so nothing may go.
    Path(clinic_b).unlink()
    Store.open(clinic_b, device_id="clinic").close()
    out = purge(store, keep_days=30, max_mb=0, targets=[clinic_a, clinic_b])
    assert (out.deleted, out.kept_unexported, out.unreachable) == (0, 20, [])
    export_to(store, clinic_b)
    out = purge(store, keep_days=30, max_mb=0, targets=[clinic_a, clinic_b])
    assert (out.deleted, out.kept_unexported) == (20, 0) and not any(p.exists() for p in files)
    assert all(r.purged_at is not None for r in store.iter_images())
    assert purge(store, keep_days=30, max_mb=0, targets=[]).deleted == 0


def test_no_clinic_target_configured_deletes_nothing(tmp_path):
    store = Store.open(tmp_path / "dev.sqlite", device_id="dev")
    files = _files(tmp_path, store, ["a", "b"], days_old=40)
    export_to(store, tmp_path / "clinic.sqlite")
    out = purge(store, keep_days=30, max_mb=0)
    assert (out.deleted, out.kept_unexported) == (0, 2) and all(p.exists() for p in files)


def test_clinic_targets_come_from_retention_else_export(tmp_path):
    from edge.config import config_from_dict
    from edge.daemon.retention import clinic_targets

    assert clinic_targets(config_from_dict({}, tmp_path)) == []
    assert clinic_targets(config_from_dict({"export": {"target": "/c.sqlite"}}, tmp_path)) == ["/c.sqlite"]
    cfg = config_from_dict(
        {
            "export": {"target": "/c.sqlite"},
            "retention": {"clinic_targets": ["/a.sqlite", "postgresql://edge@db/edge"]},
        },
        tmp_path,
    )
    assert clinic_targets(cfg) == ["/a.sqlite", "postgresql://edge@db/edge"]


def test_disk_state_has_a_margin_before_resuming(tmp_path):
    free = disk_state([tmp_path], 0).free_mb
    assert not disk_state([tmp_path], 0).paused  # 0 = never pause
    assert disk_state([tmp_path], free * 2).paused
    assert not disk_state([tmp_path], free * 0.9).paused
    assert disk_state([tmp_path], free * 0.9, was_paused=True).paused  # 0.9 * 1.25 > free: stay paused


def test_low_disk_pauses_intake_says_so_and_resumes(tmp_path, model_path):
    cfg = write_config(tmp_path, model_path)
    base = cfg.read_text()
    cfg.write_text(base + "[retention]\nmin_free_mb = 1e12\n")  # more than any disk has: low from the start
    db, inbox = tmp_path / "db.sqlite", tmp_path / "inbox"
    d = DaemonProc(cfg).wait_ready()
    try:
        assert "intake PAUSED: low disk" in d.wait_message("STATUS=intake PAUSED")
        (inbox / "waiting.jpg").write_bytes(synthetic.smear_jpeg(4))
        st = json.loads(cli("--config", str(cfg), "status", "--json").stdout)
        assert st["disk"]["intake_paused"] is True and st["backlog"] == 1
        assert "intake PAUSED: low disk" in cli("--config", str(cfg), "status").stdout
        assert not rows(db)
        cfg.write_text(base + "[retention]\nmin_free_mb = 0\n")
        d.proc.send_signal(signal.SIGHUP)
        poll(lambda: rows(db), what="the waiting image screened after the space came back")
    finally:
        assert d.terminate() == 0, d.output()
    assert "resuming intake" in d.output() and rows(db)[0]["status"] == "classified"

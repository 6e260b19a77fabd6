"""Disk on a small SD card (issue 8, 13): retention deletes only exported files, by age and by size, and a
low-disk state pauses intake, shows in status and sd_notify, and resumes."""
from __future__ import annotations

import json
import signal
from datetime import timedelta

from daemon_support import DaemonProc, cli, model_path, poll, rows, write_config  # noqa: F401
from edge.imaging import synthetic
from edge.export.merge import export_to
from edge.store.records import ImageRecord
from edge.daemon.retention import disk_state, purge
from edge.store.schema import utcnow
from edge.store.database import Store


def _files(tmp_path, store, names, days_old):
    done = tmp_path / "done"
    done.mkdir(exist_ok=True)
    recs = []
    for n in names:
        p = done / f"{n}.jpg"
        p.write_bytes(b"x" * 100_000)
        recs.append(ImageRecord(path=f"/inbox/{n}.jpg", moved_to=str(p), sha256=n.ljust(64, "0"), status="classified",
                                recorded_at=utcnow() - timedelta(days=days_old)))
    store.record_many(recs)
    return [done / f"{n}.jpg" for n in names]


def test_old_files_are_deleted_only_once_exported_and_rows_stay(tmp_path):
    store = Store.open(tmp_path / "dev.sqlite", device_id="dev")
    exported = _files(tmp_path, store, ["a", "b"], days_old=40)
    export_to(store, tmp_path / "clinic.sqlite")
    fresh = _files(tmp_path, store, ["c"], days_old=1)
    unexported = _files(tmp_path, store, ["d"], days_old=40)  # old, but the clinic has no copy yet
    out = purge(store, keep_days=30, max_mb=0)
    assert (out.deleted, out.freed_bytes, out.kept_unexported) == (2, 200_000, 1)
    assert not any(p.exists() for p in exported) and all(p.exists() for p in fresh + unexported)
    recs = {r.path: r for r in store.iter_images()}
    assert len(recs) == 4 and recs["/inbox/a.jpg"].purged_at is not None and recs["/inbox/d.jpg"].purged_at is None
    export_to(store, tmp_path / "clinic.sqlite")
    assert purge(store, keep_days=30, max_mb=0).deleted == 1 and not unexported[0].exists()


def test_size_limit_deletes_the_oldest_exported_files_first(tmp_path):
    store = Store.open(tmp_path / "dev.sqlite", device_id="dev")
    old = _files(tmp_path, store, ["o1", "o2"], days_old=5)
    new = _files(tmp_path, store, ["n1", "n2"], days_old=1)
    export_to(store, tmp_path / "clinic.sqlite")
    out = purge(store, keep_days=0, max_mb=0.25)  # 400 kB of files, 250 kB allowed
    assert out.deleted == 2 and not any(p.exists() for p in old) and all(p.exists() for p in new)
    assert purge(store, keep_days=0, max_mb=0).deleted == 0  # both limits off: nothing


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

"""When a file in the inbox is complete: the daemon (a real subprocess, real watchdog observers, a real
SQLite file) never reads an image that is still being written, with inotify or with the polling observer
of network shares, however slowly the writer goes."""

from __future__ import annotations

import hashlib
import os

from daemon_support import DaemonProc, model_path, poll, rows, write_config  # noqa: F401

from edge.imaging import synthetic


def _chunks(data: bytes, n: int) -> list:
    step = len(data) // n + 1
    return [data[i : i + step] for i in range(0, len(data), step)]


def _write_synced(f, chunk: bytes) -> None:
    f.write(chunk)
    f.flush()
    os.fsync(f.fileno())


def test_a_slowly_written_file_is_never_read_early(tmp_path, model_path):
    cfg = write_config(tmp_path, model_path)
    db, inbox = tmp_path / "db.sqlite", tmp_path / "inbox"
    inbox.mkdir()
    data = synthetic.smear_jpeg(7, (1024, 768))
    d = DaemonProc(cfg).wait_ready()
    try:
        slow = inbox / "slow.jpg"
        chunks = _chunks(data, 5)
        with open(slow, "wb") as f:
            for k, chunk in enumerate(chunks):
                _write_synced(f, chunk)
                poll(lambda: slow.stat().st_size >= sum(map(len, chunks[: k + 1])), what="the chunk on disk")  # noqa: B023 - polled within this iteration
                # A tick image proves the daemon handled events while slow.jpg was open and incomplete.
                tick = inbox / f"tick-{k}.jpg"
                tick.write_bytes(synthetic.smear_jpeg(200 + k))
                poll(lambda: rows(db, f"path = '{tick}'"), what=f"tick {k} recorded")  # noqa: B023 - polled within this iteration
                assert not rows(db, f"path = '{slow}'"), "slow.jpg was read while still being written"
        rec = poll(lambda: rows(db, f"path = '{slow}'"), what="slow.jpg recorded after close")
    finally:
        assert d.terminate() == 0, d.output()
    assert len(rec) == 1 and rec[0]["status"] == "classified"
    assert rec[0]["sha256"] == hashlib.sha256(data).hexdigest()


def test_polling_observer_waits_for_a_stable_size(tmp_path, model_path):
    cfg = write_config(tmp_path, model_path, observer="polling", poll_interval_s=0.1, stable_checks=2)
    db, inbox = tmp_path / "db.sqlite", tmp_path / "inbox"
    d = DaemonProc(cfg).wait_ready()
    try:
        p = inbox / "share.jpg"
        p.write_bytes(synthetic.smear_jpeg(3))
        (rec,) = poll(lambda: rows(db, f"path = '{p}'"), what="share.jpg recorded")
    finally:
        assert d.terminate() == 0, d.output()
    assert rec["status"] == "classified"


def test_polling_a_writer_that_pauses_longer_than_the_scans_gets_one_classified_row(tmp_path, model_path):
    """Issue 8, 9: a slow share writer pauses between chunks long enough for the size to look settled; the
    truncated read must not become a `rejected` row (it is watched again until the file is complete)."""
    cfg = write_config(tmp_path, model_path, observer="polling", poll_interval_s=0.05, stable_checks=2)
    db, inbox = tmp_path / "db.sqlite", tmp_path / "inbox"
    data = synthetic.smear_jpeg(8, (1024, 768))
    d = DaemonProc(cfg).wait_ready()
    try:
        slow = inbox / "slow.jpg"
        chunks = _chunks(data, 3)
        with open(slow, "wb") as f:
            for k, chunk in enumerate(chunks):
                _write_synced(f, chunk)
                # The writer "pauses" until a file written after this chunk has been recorded: slow.jpg's
                # size settled before the tick's did, so the daemon has read the incomplete slow.jpg by then.
                tick = inbox / f"tick-{k}.jpg"
                tick.write_bytes(synthetic.smear_jpeg(300 + k))
                poll(lambda: rows(db, f"path = '{tick}'"), what=f"tick {k} recorded")  # noqa: B023 - polled within this iteration
                if k < len(chunks) - 1:
                    assert not rows(db, f"path = '{slow}'"), rows(db, f"path = '{slow}'")
        rec = poll(lambda: rows(db, f"path = '{slow}'"), what="slow.jpg recorded once complete")
    finally:
        assert d.terminate() == 0, d.output()
    assert [r["status"] for r in rows(db, f"path = '{slow}'")] == ["classified"], rec
    assert rec[0]["sha256"] == hashlib.sha256(data).hexdigest()

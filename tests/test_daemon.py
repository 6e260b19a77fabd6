"""The daemon as a clinic runs it: a real subprocess, a real inbox, a real SQLite file."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
from pathlib import Path

from daemon_support import DaemonProc, cli, model_path, poll, real_images, rows, runs, write_config  # noqa: F401

from edge.imaging import synthetic


def _fill(inbox: Path, n_real: int, n_syn: int, start: int = 0) -> list:
    inbox.mkdir(parents=True, exist_ok=True)
    out = []
    for p in real_images(n_real):
        shutil.copy(p, inbox / p.name)
        out.append(inbox / p.name)
    for i in range(start, start + n_syn):
        q = inbox / f"syn-{i:04d}.jpg"
        q.write_bytes(synthetic.smear_jpeg(i))
        out.append(q)
    return out


def test_backlog_and_live_images_are_classified_like_classify_json(tmp_path, model_path):
    cfg = write_config(tmp_path, model_path)
    db, inbox = tmp_path / "db.sqlite", tmp_path / "inbox"
    # One sample folder per image, as if each came from its own slide.
    backlog = []
    for p in _fill(tmp_path / "backlog", 6, 3):
        (inbox / p.stem).mkdir(parents=True)
        backlog.append(inbox / p.stem / p.name)
        os.replace(p, backlog[-1])
    d = DaemonProc(cfg, watchdog_usec=400_000).wait_ready()
    try:
        live = _fill(tmp_path / "staging", 0, 3, start=100)
        for p in live:  # a move in from elsewhere: one IN_MOVED_TO, never a half-written file
            (inbox / p.stem).mkdir()
            os.replace(p, inbox / p.stem / p.name)
        expected = {str(p) for p in backlog} | {str(inbox / p.stem / p.name) for p in live}
        got = poll(lambda: (r := rows(db)) and len(r) >= len(expected) and r, what="all images recorded")
        assert {r["path"] for r in got} == expected
        assert all(r["status"] == "classified" for r in got), [(r["path"], r["reason"]) for r in got]
        d.wait_message("WATCHDOG=1")
        assert d.wait_message("STATUS=").startswith("STATUS=")
    finally:
        assert d.terminate() == 0, d.output()
    assert sum(" INFO edge.daemon.service: " in line and "total=" in line for line in d.output().splitlines()) == len(
        expected
    )
    out = cli("--config", str(cfg), "classify", "--json", "--no-db", str(inbox))
    answers = {j["path"]: j for j in map(json.loads, out.stdout.splitlines())}
    for r in got:
        assert answers[r["path"]]["label"] == r["label"]
        assert abs(answers[r["path"]]["score"] - r["malignant_score"]) < 1e-6


def test_kill_9_mid_stream_then_restart_records_every_image_exactly_once(tmp_path, model_path):
    cfg = write_config(tmp_path, model_path)
    db, inbox = tmp_path / "db.sqlite", tmp_path / "inbox"
    files = _fill(inbox, 20, 40)
    d = DaemonProc(cfg).wait_ready()
    poll(lambda: len(rows(db)) >= 5, what="some rows before the kill")
    d.terminate(signal.SIGKILL)
    partial = len(rows(db))
    # Images arriving while the daemon is down are picked up by the next backlog scan.
    more = _fill(inbox, 0, 5, start=500)
    d = DaemonProc(cfg).wait_ready()
    try:
        poll(lambda: len(rows(db)) >= len(files) + len(more), what="every image recorded after the restart")
    finally:
        assert d.terminate() == 0, d.output()
    got = rows(db)
    assert len(got) == len(files) + len(more) and partial <= len(got)
    assert len({r["path"] for r in got}) == len(got)
    reasons = [r["exit_reason"] for r in runs(db)]
    assert reasons[0].startswith("unclean") and reasons[-1] == "stopped by SIGTERM"


def test_sigterm_exits_cleanly_and_closes_the_run(tmp_path, model_path):
    cfg = write_config(tmp_path, model_path)
    d = DaemonProc(cfg).wait_ready()
    assert d.terminate(signal.SIGTERM) == 0
    (run,) = runs(tmp_path / "db.sqlite")
    assert run["stopped_at"] is not None and run["exit_reason"] == "stopped by SIGTERM"
    assert "STOPPING=1" in d.messages


def test_missing_or_corrupt_model_refuses_to_start_before_touching_the_inbox(tmp_path, model_path):
    cfg = write_config(tmp_path, tmp_path / "nope.tflite")
    d = DaemonProc(cfg)
    code = d.proc.wait(timeout=60)
    d.close()
    assert code != 0
    assert "model file not found" in d.output()
    assert not (tmp_path / "inbox").exists() and not (tmp_path / "db.sqlite").exists()
    bad = tmp_path / "bad.tflite"
    bad.write_bytes(model_path.read_bytes()[:1000])
    shutil.copy(model_path.with_suffix(".json"), bad.with_suffix(".json"))
    d = DaemonProc(write_config(tmp_path, bad))
    assert d.proc.wait(timeout=60) != 0
    d.close()
    assert "does not match its card" in d.output()
    assert not (tmp_path / "inbox").exists()


def test_move_after_commit_and_bad_files_do_not_stop_the_others(tmp_path, model_path):
    cfg = write_config(
        tmp_path, model_path, after="move", done_dir=str(tmp_path / "done"), rejected_dir=str(tmp_path / "rejected")
    )
    db, inbox = tmp_path / "db.sqlite", tmp_path / "inbox"
    inbox.mkdir()
    (inbox / "empty.jpg").write_bytes(b"")
    (inbox / "text.jpg").write_text("not an image")
    _fill(inbox, 0, 2)
    (inbox / ".hidden.jpg").write_bytes(synthetic.smear_jpeg(1))
    (inbox / "upload.tmp").write_bytes(synthetic.smear_jpeg(2))
    d = DaemonProc(cfg).wait_ready()
    try:
        poll(lambda: len(rows(db)) >= 4, what="4 rows")
        poll(
            lambda: sorted(p.name for p in (tmp_path / "done").glob("*")) == ["syn-0000.jpg", "syn-0001.jpg"],
            what="classified files moved to done/",
        )
        poll(
            lambda: sorted(p.name for p in (tmp_path / "rejected").glob("*")) == ["empty.jpg", "text.jpg"],
            what="rejected files moved to rejected/",
        )
    finally:
        assert d.terminate() == 0, d.output()
    assert len(rows(db)) == 4  # temporary and hidden names are never picked up
    # The daemon's own lock stays (hidden, empty of images); nothing else but what it must not touch.
    assert sorted(p.name for p in inbox.iterdir()) == [".edge-screen.lock", ".hidden.jpg", "upload.tmp"]


def test_sighup_reloads_and_keeps_classifying(tmp_path, model_path):
    cfg = write_config(tmp_path, model_path)
    db, inbox = tmp_path / "db.sqlite", tmp_path / "inbox"
    d = DaemonProc(cfg).wait_ready()
    try:
        d.messages.clear()
        d.proc.send_signal(signal.SIGHUP)
        d.wait_message("RELOADING=1")
        d.wait_message("READY=1")
        p = inbox / "after-reload.jpg"
        p.write_bytes(synthetic.smear_jpeg(77))
        (rec,) = poll(lambda: rows(db, f"path = '{p}'"), what="image after reload recorded")
    finally:
        assert d.terminate() == 0, d.output()
    assert rec["status"] == "classified" and "reloaded: model" in d.output()


def test_a_newline_in_a_file_name_cannot_forge_a_journal_line(tmp_path, model_path):
    cfg = write_config(tmp_path, model_path)
    db, inbox = tmp_path / "db.sqlite", tmp_path / "inbox"
    inbox.mkdir()
    forged = "a.jpg\nERROR edge.daemon.service: forged.jpg"
    (inbox / forged).write_bytes(synthetic.smear_jpeg(3))
    d = DaemonProc(cfg).wait_ready()
    try:
        poll(lambda: rows(db), what="the image recorded")
    finally:
        assert d.terminate() == 0, d.output()
    lines = d.output().splitlines()
    assert not any(line.startswith("ERROR edge.daemon.service: forged") for line in lines), lines
    assert any("a.jpg\\nERROR edge.daemon.service: forged.jpg" in line for line in lines)


def test_an_image_overwritten_while_the_daemon_was_down_is_screened_at_restart(tmp_path, model_path):
    cfg = write_config(tmp_path, model_path)
    db, inbox = tmp_path / "db.sqlite", tmp_path / "inbox"
    inbox.mkdir()
    same = inbox / "field-001.jpg"
    same.write_bytes(synthetic.smear_jpeg(1))
    untouched = inbox / "field-002.jpg"
    untouched.write_bytes(synthetic.smear_jpeg(2))
    d = DaemonProc(cfg).wait_ready()
    try:
        poll(lambda: len(rows(db)) == 2, what="both images recorded")
    finally:
        assert d.terminate() == 0, d.output()
    # The camera reuses the name while the daemon is down (new bytes, a later modification time).
    new = synthetic.smear_jpeg(99)
    same.write_bytes(new)
    os.utime(same, None)
    d = DaemonProc(cfg).wait_ready()
    try:
        got = poll(lambda: (r := rows(db)) and len(r) >= 3 and r, what="the new content recorded")
    finally:
        assert d.terminate() == 0, d.output()
    mine = [r for r in got if r["path"] == str(same)]
    assert {r["sha256"] for r in mine} == {
        hashlib.sha256(synthetic.smear_jpeg(1)).hexdigest(),
        hashlib.sha256(new).hexdigest(),
    }
    assert len([r for r in got if r["path"] == str(untouched)]) == 1, "an unchanged file is not redone"


def test_an_inbox_reached_through_a_symlink_records_each_image_once(tmp_path, model_path):
    real = tmp_path / "real-inbox"
    real.mkdir()
    (tmp_path / "inbox").symlink_to(real, target_is_directory=True)
    cfg = write_config(tmp_path, model_path)
    db = tmp_path / "db.sqlite"
    data = synthetic.smear_jpeg(4)
    (real / "backlog.jpg").write_bytes(data)
    d = DaemonProc(cfg).wait_ready()
    try:
        poll(lambda: len(rows(db)) == 1, what="the backlog image recorded")
        (real / "backlog.jpg").write_bytes(data)  # rewritten in place: an event for a recorded file
        (tmp_path / "staging.jpg").write_bytes(synthetic.smear_jpeg(5))
        os.replace(tmp_path / "staging.jpg", tmp_path / "inbox" / "live.jpg")
        got = poll(
            lambda: (r := rows(db)) and any(x["path"].endswith("live.jpg") for x in r) and r,
            what="the live image recorded",
        )
    finally:
        assert d.terminate() == 0, d.output()
    assert sorted(Path(r["path"]).name for r in got) == ["backlog.jpg", "live.jpg"], [r["path"] for r in got]
    assert all(Path(r["path"]).parent == real.resolve() for r in got), [r["path"] for r in got]


def test_a_second_daemon_on_the_same_inbox_refuses_to_start_and_status_sees_a_killed_one(tmp_path, model_path):
    cfg = write_config(tmp_path, model_path)
    db, inbox = tmp_path / "db.sqlite", tmp_path / "inbox"
    first = DaemonProc(cfg).wait_ready()
    try:
        second = DaemonProc(cfg)
        code = second.proc.wait(timeout=60)
        assert code == 4 and "another edge-screen daemon" in second.output(), second.output()
        assert "Traceback" not in second.output()
        (inbox / "one.jpg").write_bytes(synthetic.smear_jpeg(3))
        poll(lambda: len(rows(db)) == 1, what="the first daemon still working")
        st = json.loads(cli("--config", str(cfg), "status", "--json").stdout)
        assert st["last_run"]["alive"] is True and st["last_run"]["pid"] == first.proc.pid
    finally:
        first.proc.kill()
        first.proc.wait()
    st = json.loads(cli("--config", str(cfg), "status", "--json").stdout)
    assert st["last_run"]["stopped_at"] is None and st["last_run"]["alive"] is False
    assert "not running" in cli("--config", str(cfg), "status").stdout
    again = DaemonProc(cfg).wait_ready()  # the kernel dropped the killed daemon's lock
    assert again.terminate() == 0, again.output()


def test_a_database_deleted_under_the_daemon_stops_it_and_loses_no_image(tmp_path, model_path):
    cfg = write_config(
        tmp_path, model_path, after="move", done_dir=str(tmp_path / "done"), rejected_dir=str(tmp_path / "rejected")
    )
    db, inbox = tmp_path / "db.sqlite", tmp_path / "inbox"
    inbox.mkdir()
    (inbox / "first.jpg").write_bytes(synthetic.smear_jpeg(1))
    d = DaemonProc(cfg).wait_ready()
    try:
        poll(lambda: (tmp_path / "done" / "first.jpg").exists(), what="first.jpg recorded and moved")
        for p in tmp_path.glob("db.sqlite*"):
            p.unlink()
        for i in range(3):
            (tmp_path / f"s{i}.jpg").write_bytes(synthetic.smear_jpeg(10 + i))
            os.replace(tmp_path / f"s{i}.jpg", inbox / f"after-{i}.jpg")
        code = d.proc.wait(timeout=60)
    finally:
        d.terminate()
    assert code == 4 and "was deleted or replaced" in d.output(), d.output()
    assert "Traceback" not in d.output()
    # Nothing recorded into the deleted file was moved out of the inbox: a restart screens it all.
    left = sorted(p.name for p in inbox.glob("after-*.jpg"))
    assert left == ["after-0.jpg", "after-1.jpg", "after-2.jpg"]
    d = DaemonProc(cfg).wait_ready()
    try:
        got = poll(lambda: (r := rows(db)) and len(r) >= 3 and r, what="the new database filled")
    finally:
        assert d.terminate() == 0, d.output()
    assert sorted(Path(r["path"]).name for r in got) == left


def test_an_inbox_deleted_and_re_created_is_watched_again(tmp_path, model_path):
    cfg = write_config(tmp_path, model_path)
    db, inbox = tmp_path / "db.sqlite", tmp_path / "inbox"
    inbox.mkdir()
    d = DaemonProc(cfg).wait_ready()
    try:
        (inbox / "before.jpg").write_bytes(synthetic.smear_jpeg(1))
        poll(lambda: len(rows(db)) == 1, what="before.jpg recorded")
        shutil.rmtree(inbox)
        inbox.mkdir()
        (tmp_path / "s.jpg").write_bytes(synthetic.smear_jpeg(2))
        os.replace(tmp_path / "s.jpg", inbox / "after.jpg")
        poll(lambda: len(rows(db)) == 2, what="after.jpg recorded in the re-created inbox")
    finally:
        assert d.terminate() == 0, d.output()
    assert "watching it again" in d.output()


def test_a_commit_that_fails_is_retried_while_the_daemon_runs(tmp_path, model_path):
    """The database refuses writes for a while (a trigger stands in for a full disk or a read-only
    remount); once it accepts them again the image is recorded without a restart."""
    import sqlite3

    cfg = write_config(tmp_path, model_path)
    db, inbox = tmp_path / "db.sqlite", tmp_path / "inbox"
    inbox.mkdir()
    d = DaemonProc(cfg).wait_ready()
    try:
        with sqlite3.connect(db) as c:
            c.execute("CREATE TABLE full_disk (x)")
            c.execute("INSERT INTO full_disk VALUES (1)")
            c.execute(
                "CREATE TRIGGER refuse BEFORE INSERT ON images WHEN (SELECT count(*) FROM full_disk) > 0 "
                "BEGIN SELECT RAISE(ABORT, 'database or disk is full'); END"
            )
        (tmp_path / "s.jpg").write_bytes(synthetic.smear_jpeg(5))
        os.replace(tmp_path / "s.jpg", inbox / "during.jpg")
        poll(lambda: "NOT RECORDED; retrying" in d.output(), what="the failed commit reported")
        with sqlite3.connect(db) as c:
            c.execute("DELETE FROM full_disk")
        got = poll(lambda: rows(db), what="the image recorded after the database recovered")
    finally:
        assert d.terminate() == 0, d.output()
    assert [Path(r["path"]).name for r in got] == ["during.jpg"]

"""Every command tells the truth (issue 14, items 13 and 14): `status` fits 80 columns and counts what
the daemon will really screen, its "last error" is an error, an inbox that does not exist is not "ok";
`report` and `samples` at 80 columns never fold a file name or a reason into fragments; `samples --format
json` carries the sign-off; bad options exit 2 as the README's table says.

Real parts: the daemon and every command run as subprocesses on a real SQLite database.
"""

from __future__ import annotations

import json
import os
import re
import sqlite3
from pathlib import Path

import web_support as ws
from conftest import fake_record
from daemon_support import DaemonProc, cli, model_path, poll, rows, write_config  # noqa: F401 - model_path: fixture

from edge.imaging import synthetic
from edge.store.database import Store

NARROW = {"COLUMNS": "80"}


def _fits(text: str, width: int = 80) -> None:
    lines = text.splitlines()
    assert lines and max(len(line) for line in lines) <= width, max(lines, key=len)


def _unwrapped(text: str) -> str:
    return re.sub(r"\s+", " ", text)


# ------------------------------------------------------------------------------------------------ status
def test_status_fits_80_columns_and_counts_only_what_the_daemon_will_screen(tmp_path, model_path):
    cfg = write_config(tmp_path, model_path)
    inbox, db = tmp_path / "inbox", tmp_path / "db.sqlite"
    (inbox / "S-1").mkdir(parents=True)
    (inbox / "not a sample").mkdir()
    for i in range(2):
        (inbox / "S-1" / f"field-{i}.jpg").write_bytes(synthetic.smear_jpeg(i))
    (inbox / "not a sample" / "x.jpg").write_bytes(synthetic.smear_jpeg(5))  # rejected: bad sample id
    outside = tmp_path / "outside.jpg"
    outside.write_bytes(synthetic.smear_jpeg(6))
    (inbox / "link-out.jpg").symlink_to(outside)  # rejected: symlink out of the inbox
    blank = inbox / "blank.jpg"
    blank.write_bytes(synthetic.encode(synthetic.bad_image("white")))  # unreadable: a quality refusal
    newest = max(p.lstat().st_mtime for p in inbox.rglob("*")) + 5
    os.utime(blank, (newest, newest))  # screened last, so it is the last unreadable/rejected row
    d = DaemonProc(cfg).wait_ready()
    try:
        poll(lambda: len(rows(db)) == 5, what="all five inbox files recorded")
    finally:
        assert d.terminate() == 0, d.output()
    by_name = {Path(r["path"]).name: r for r in rows(db)}
    assert by_name["blank.jpg"]["status"] == "unreadable"
    assert {by_name[n]["status"] for n in ("x.jpg", "link-out.jpg")} == {"rejected"}
    future = newest + 3600  # a recorded file touched (clock change, a copy tool): the daemon skips it
    os.utime(inbox / "S-1" / "field-0.jpg", (future, future))

    st = json.loads(cli("--config", str(cfg), "status", "--json").stdout)
    assert st["backlog"] == 0  # it said 3 (two files refused before they were read, one touched) for ever
    assert st["last_error"]["status"] == "rejected" and not st["last_error"]["path"].endswith("blank.jpg")
    text = cli("--config", str(cfg), "status", env=NARROW).stdout
    _fits(text)
    assert re.search(r"^backlog +0 file\(s\)", text, re.M) and "blank.jpg" not in text
    assert re.search(r"^last error .*(x\.jpg|link-out\.jpg)", text, re.M)
    assert str(model_path) in text.replace("\n" + " " * 11, "")  # the model's path, on lines of its own
    (inbox / "S-1" / "field-9.jpg").write_bytes(synthetic.smear_jpeg(9))  # real backlog still counts
    assert json.loads(cli("--config", str(cfg), "status", "--json").stdout)["backlog"] == 1


def test_status_on_an_inbox_that_does_not_exist_does_not_say_ok(tmp_path, model_path):
    cfg = write_config(tmp_path, model_path)
    Store.open(tmp_path / "db.sqlite", device_id="test-device").close()
    inbox = tmp_path / "inbox"
    assert not inbox.exists()
    text = cli("--config", str(cfg), "status", env=NARROW).stdout
    _fits(text)
    assert "does not exist" in text and not re.search(r"^disk +ok", text, re.M)
    st = json.loads(cli("--config", str(cfg), "status", "--json").stdout)
    assert (st["inbox_exists"], st["backlog"]) == (False, None) and str(inbox) in st["disk"]["missing"]
    assert not inbox.exists()  # status only looks


# ------------------------------------------------------------------------------------------------ report
def test_report_at_80_columns_never_folds_a_file_name(tmp_path):
    db = tmp_path / "dev.sqlite"
    with Store.open(db, device_id="dev-a") as store:
        store.record_many(
            [fake_record(i, device_id="dev-a", prefix="/inbox/PAT-0042/IMG_20260512_083015_patient") for i in range(30)]
        )
        names = {
            Path(r.path).name
            for r in store.iter_images()
            if r.status != "classified" or r.verdict == "malignant" or r.needs_review
        }
        reasons = {r.reason for r in store.iter_images() if r.status in ("unreadable", "rejected")}
    text = cli("report", "--db", str(db), "--all", env=NARROW).stdout
    _fits(text)
    lines = [line.strip() for line in text.splitlines()]
    shown = {n for n in names if any(n in line for line in lines)}
    assert shown == names  # each whole on one line (46 characters: they were folded after 33 before)
    assert all(r in _unwrapped(text) for r in reasons)  # reasons wrap at spaces only


def test_report_bad_options_exit_2_and_a_missing_database_4(tmp_path):
    with Store.open(tmp_path / "dev.sqlite", device_id="dev-a") as store:
        store.record_many([fake_record(i, device_id="dev-a") for i in range(3)])
    db = str(tmp_path / "dev.sqlite")
    for args, code, words in (
        (["--since", "2026-13-01"], 2, "--since"),
        (["--format", "html"], 2, "--out"),
        (["--today", "--all"], 2, "--today"),
        (["--db", str(tmp_path / "none.sqlite")], 4, "no database"),
    ):
        p = cli("report", *(["--db", db] if "--db" not in args else []), *args, check=False)
        assert p.returncode == code, (args, p.returncode, p.stderr)
        assert words in p.stderr and len(p.stderr.strip().splitlines()) == 1 and "Traceback" not in p.stderr
    assert not (tmp_path / "none.sqlite").exists()


# ----------------------------------------------------------------------------------------------- samples
def test_samples_reasons_fit_and_json_carries_the_sign_off(tmp_path):
    config = ws.write_config(tmp_path)
    db = ws.build_db(
        tmp_path,
        [
            ws.SampleSpec("S-READY", 5, [0.92, 0.15, 0.75, 0.97, 0.08]),
            ws.SampleSpec("PATIENT-2026-000123-LEFT-HAND-SMEAR-B", 4, [0.1, 0.05]),
            ws.SampleSpec("S-SIGNED", 3, [0.9]),
        ],
    )
    with sqlite3.connect(db) as con:  # as the review app's sign-off leaves it (edge.store.reviews.sign_off)
        con.execute(
            "UPDATE samples SET status = 'signed', signed_at = '2026-12-01 10:00:00.000000', "
            "signed_by = 'alice', final_verdict = 'malignant', final_label = 'Pre-B' "
            "WHERE sample_id = 'S-SIGNED'"
        )
    text = cli("--config", str(config), "samples", env=NARROW).stdout
    _fits(text)
    data = json.loads(cli("--config", str(config), "samples", "--format", "json").stdout)
    by_id = {s["sample_id"]: s for s in data}
    for s in data:
        assert s["sample_id"] in text.split()  # never folded
        for reason in s["review_reasons"] if s["status"] != "signed" else ():
            assert reason in _unwrapped(text), reason  # whole, wrapped at spaces only
    assert len(text.splitlines()) <= 3 * len(data) + 2  # 17 lines for one sample before
    signed = by_id["S-SIGNED"]
    assert (signed["signed_by"], signed["final_verdict"], signed["final_label"]) == ("alice", "malignant", "Pre-B")
    assert signed["signed_at"].startswith("2026-12-01T10:00:00") and signed["ready_at"]
    assert "signed by alice at 2026-12-01 10:00 UTC: malignant, Pre-B" in _unwrapped(text)
    ready = by_id["S-READY"]
    assert ready["ready_at"] and ready["signed_at"] is None and ready["final_label"] is None
    assert {"ready_at", "signed_at", "signed_by", "final_verdict", "final_label"} <= set(ready)


def test_a_mistyped_path_is_a_usage_error_not_a_traceback(tmp_path):
    for args in (
        ["explain", str(tmp_path / "typo.jpg"), "--out", str(tmp_path / "m.png")],
        ["capture", "--fake", str(tmp_path / "no-such-folder"), "-n", "1"],
    ):
        p = cli(*args, check=False)
        assert p.returncode == 2 and "does not exist" in p.stderr and "Traceback" not in p.stderr, (args, p.stderr)

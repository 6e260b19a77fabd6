"""Camera sources: the fake camera feeds the daemon; without picamera2, capture says what is missing."""

from __future__ import annotations

import sys

from daemon_support import DaemonProc, cli, model_path, poll, rows, write_config  # noqa: F401

from edge.daemon.camera import FakeSource, capture_loop, write_atomic


def test_write_atomic_leaves_no_partial_or_temporary_file(tmp_path):
    p = write_atomic(tmp_path / "inbox", "a.jpg", b"\xff\xd8" + b"x" * 1000)
    assert p.read_bytes().startswith(b"\xff\xd8") and [f.name for f in p.parent.iterdir()] == ["a.jpg"]


def test_fake_camera_images_are_classified_by_the_daemon(tmp_path, model_path):
    cfg = write_config(tmp_path, model_path)
    db = tmp_path / "db.sqlite"
    d = DaemonProc(cfg).wait_ready()
    try:
        files = capture_loop(FakeSource(seed=40), tmp_path / "inbox", interval=0, count=3)
        out = cli("--config", str(cfg), "capture", "--synthetic", "-n", "2").stdout.split()
        # --sample: a new patient folder, made while the daemon runs, its stills one sample
        sample = cli("--config", str(cfg), "capture", "--synthetic", "-n", "2", "--sample", "PAT-42").stdout.split()
        got = poll(lambda: (r := rows(db)) and len(r) >= 7 and r, what="7 captured images recorded")
    finally:
        assert d.terminate() == 0, d.output()
    assert {r["path"] for r in got} == {str(f) for f in files} | set(out) | set(sample)
    # The synthetic camera repeats its stills: the sample's two are duplicates of the first capture's.
    assert all(r["status"] in ("classified", "duplicate") and r["label"] for r in got), [r["status"] for r in got]
    assert {r["sample_id"] for r in got if r["path"] in sample} == {"PAT-42"}
    assert all(str(tmp_path / "inbox" / "PAT-42") in p for p in sample)
    bad = cli("--config", str(cfg), "capture", "--synthetic", "--sample", "../escape", check=False)
    assert bad.returncode == 2 and "invalid sample id" in bad.stderr and not (tmp_path / "escape").exists()


def test_capture_without_picamera2_prints_one_clear_line_and_fails(tmp_path, model_path):
    if any("picamera2" in m for m in sys.modules) or _has_picamera2():
        return  # on a real Pi the camera path is exercised by hand
    p = cli("--config", str(write_config(tmp_path, model_path)), "capture", check=False)
    assert p.returncode != 0
    lines = [ln for ln in p.stderr.splitlines() if ln.strip()]
    assert lines == [
        "error: picamera2 is not installed: on Raspberry Pi OS `sudo apt install python3-picamera2` "
        "and create the venv with --system-site-packages"
    ]
    assert not (tmp_path / "inbox").exists() or not list((tmp_path / "inbox").iterdir())


def _has_picamera2() -> bool:
    import importlib.util

    return importlib.util.find_spec("picamera2") is not None

"""Database and folder faults (issue 14, items 10 and 16): `serve` and the daemon on a deleted, replaced,
missing or read-only database, and on a read-only data folder or inbox.

Real processes throughout: `edge-screen serve` and `edge-screen run` as subprocesses, driven over HTTP with
the standard library (no browser needed: what is checked is status codes, exit codes and the database).
A read-only folder is a real read-only bind mount in a private mount namespace (`unshare -rm`), so it is
read-only for root too; where user namespaces are not allowed those tests skip with the reason.
"""

from __future__ import annotations

import http.client
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from html.parser import HTMLParser
from pathlib import Path
from typing import Dict, List, Optional
from urllib.parse import urlencode, urlsplit

import pytest
import web_support as ws
from daemon_support import ROOT, _env, model_path, poll, write_config  # noqa: F401 - model_path: fixture

from edge.store.database import Store

# 8 benign fields each: enough readable fields for the shipped card's sample rule (min 8), no review needed, so a
# plain benign sign-off is a consistent one however strict the sign-off form becomes.
SPECS = [ws.SampleSpec(f"S-{i}", 8, [0.1, 0.05, 0.2]) for i in range(4)]


def read_only(folder: Path, *cmd: str) -> List[str]:
    """``cmd`` run with ``folder`` bind-mounted read-only (a real EROFS, also for root)."""
    return [
        "unshare",
        "-rm",
        "sh",
        "-c",
        'mount --bind "$0" "$0" && mount -o remount,bind,ro "$0" "$0" && exec "$@"',
        str(folder),
        *cmd,
    ]


def _unshare_works() -> bool:
    if shutil.which("unshare") is None or shutil.which("nsenter") is None:
        return False
    with tempfile.TemporaryDirectory() as d:
        probe = subprocess.run(
            read_only(Path(d), "sh", "-c", 'touch "$0/x" 2>/dev/null; test ! -e "$0/x"', d),
            capture_output=True,
            timeout=30,
        )
    return probe.returncode == 0


READ_ONLY_MOUNTS = _unshare_works()
needs_mounts = pytest.mark.skipif(
    not READ_ONLY_MOUNTS, reason="needs unshare/nsenter and user namespaces for a read-only bind mount"
)


def edge(config: Path, *args: str) -> List[str]:
    return [sys.executable, "-m", "edge", "--config", str(config), *args]


def run(cmd: List[str], timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout, env=_env())


def one_line_error(p: subprocess.CompletedProcess) -> str:
    """The failure's message: exactly one line on stderr (a log line's prefix allowed), no traceback."""
    lines = [ln for ln in p.stderr.splitlines() if ln.strip()]
    assert "Traceback" not in p.stderr, p.stderr
    errors = [ln for ln in lines if "ERROR" in ln or ln.startswith("Error:") or "error:" in ln]
    assert len(errors) == 1, p.stderr
    return errors[0]


# ------------------------------------------------------------------------------------------- HTTP client
class _Forms(HTMLParser):
    def __init__(self):
        super().__init__()
        self.forms: Dict[str, Dict[str, str]] = {}
        self._cur: Optional[str] = None

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "form":
            self._cur = a.get("id") or a.get("action") or f"form{len(self.forms)}"
            self.forms[self._cur] = {}
        elif tag == "input" and self._cur is not None and a.get("type") == "hidden" and a.get("name"):
            self.forms[self._cur][a["name"]] = a.get("value") or ""

    def handle_endtag(self, tag):
        if tag == "form":
            self._cur = None


class Web:
    """A logged-in user of the review app: a cookie, the forms' hidden fields, no redirects followed."""

    def __init__(self, url: str):
        u = urlsplit(url)
        self.url, self.host, self.port = url, u.hostname, u.port
        self.cookie = ""

    def request(self, method: str, path: str, form: Optional[dict] = None):
        conn = http.client.HTTPConnection(self.host, self.port, timeout=30)
        headers = {"Cookie": self.cookie} if self.cookie else {}
        body = None
        if form is not None:
            body = urlencode(form)
            headers.update({"Content-Type": "application/x-www-form-urlencoded", "Origin": self.url})
        try:
            conn.request(method, path, body=body, headers=headers)
            r = conn.getresponse()
            text = r.read().decode("utf-8", "replace")
        finally:
            conn.close()
        cookie = r.getheader("Set-Cookie")
        if cookie:
            self.cookie = cookie.split(";", 1)[0]
        return r.status, text

    def hidden(self, path: str, form_id: str) -> Dict[str, str]:
        status, text = self.request("GET", path)
        assert status == 200, (status, text[:500])
        return _hidden(text, form_id)

    def login(self, name: str = "rev", password: str = ws.PASSWORD) -> int:
        p = _Forms()
        p.feed(self.request("GET", "/login")[1])
        form = dict(next(iter(p.forms.values()), {}), name=name, password=password)
        return self.request("POST", "/login", form)[0]

    def sign_off(self, sample_id: str, verdict: str = "benign") -> int:
        # confirmed: the summary step is the browser's; a script confirms on the version it read
        form = dict(self.hidden(f"/sample/{sample_id}", "signoff"), verdict=verdict, comment="checked", confirmed="yes")
        return self.request("POST", f"/sample/{sample_id}/signoff", form)[0]


@pytest.fixture
def review_app(tmp_path):
    config = ws.write_config(tmp_path)
    db = ws.build_db(tmp_path, SPECS)
    r = ws.add_user(config, "rev", "reviewer")
    assert r.returncode == 0, r.stderr
    return config, db


def signed(db: Path) -> List[str]:
    rows = ws.q(
        db,
        "SELECT s.sample_id FROM samples s JOIN reviews r ON r.sample_id = s.sample_id "
        "AND r.kind = 'signoff' WHERE s.status = 'signed' ORDER BY s.sample_id",
    )
    return [r["sample_id"] for r in rows]


# ----------------------------------------------------------------------------------------------- item 10
def test_serve_where_there_is_no_database_says_so_and_creates_none(tmp_path):
    config = ws.write_config(tmp_path)
    p = run(edge(config, "serve", "--port", "0"))
    assert p.returncode == 4
    assert "no database at" in one_line_error(p) and str(tmp_path / "db.sqlite") in p.stderr
    assert not (tmp_path / "db.sqlite").exists()


def test_deleted_database_is_refused_not_acknowledged_and_serve_exits_4(review_app):
    config, db = review_app
    server = ws.ServeProc(config)
    try:
        web = Web(server.url)
        assert web.login() == 303
        assert web.sign_off("S-0") == 303
        assert signed(db) == ["S-0"]
        saved = {sfx: Path(f"{db}{sfx}").read_bytes() for sfx in ("", "-wal")}  # a restored backup, later
        form = dict(web.hidden("/sample/S-1", "signoff"), verdict="benign", confirmed="yes")
        for suffix in ("", "-wal", "-shm"):
            Path(f"{db}{suffix}").unlink(missing_ok=True)
        status, text = web.request("POST", "/sample/S-1/signoff", form)
        assert status == 503 and "deleted or replaced" in text
        assert poll(lambda: server.proc.poll() is not None, what="serve to stop by itself")
        assert server.proc.returncode == 4, server.output()
        assert "database file" in server.output() and "deleted or replaced" in server.output()
        assert not db.exists()  # never re-created
        # Restarted (systemd would), it refuses to create an empty database.
        p = run(edge(config, "serve", "--port", "0"))
        assert p.returncode == 4 and "no database at" in p.stderr and not db.exists()
        for sfx, data in saved.items():
            Path(f"{db}{sfx}").write_bytes(data)
    finally:
        server.stop()
    assert signed(db) == ["S-0"]  # the refused sign-off is nowhere


def test_replaced_database_is_noticed_on_the_next_request(review_app):
    config, db = review_app
    server = ws.ServeProc(config)
    try:
        web = Web(server.url)
        assert web.login() == 303
        copy = db.with_name("copy.sqlite")
        shutil.copy(db, copy)
        os.replace(copy, db)  # another inode at the same path: e.g. a restore, or a daemon that re-created it
        status, text = web.request("GET", "/")
        assert status == 503 and "deleted or replaced" in text
        assert poll(lambda: server.proc.poll() is not None, what="serve to stop by itself")
        assert server.proc.returncode == 4
    finally:
        server.stop()


def test_every_acknowledged_sign_off_is_on_disk_after_kill_9(review_app):
    config, db = review_app
    server = ws.ServeProc(config)
    acknowledged = []
    try:
        web = Web(server.url)
        assert web.login() == 303
        for s in SPECS:
            if web.sign_off(s.sample_id) == 303:
                acknowledged.append(s.sample_id)
        server.proc.send_signal(signal.SIGKILL)
        server.proc.wait(timeout=30)
    finally:
        server.stop()
    assert acknowledged == [s.sample_id for s in SPECS]
    assert signed(db) == acknowledged


def test_read_only_database_gives_a_clear_page_and_a_log_line(review_app, caplog):
    """In process: a filesystem cannot be remounted read-only under a process that has the database open
    for writing (EBUSY), so SQLite's own read-only mode stands in for it (the same SQLITE_READONLY error)."""
    from sqlalchemy import event

    from edge.config import load_config
    from edge.web import create_app

    config, db = review_app
    cfg = load_config(str(config))
    store = Store.open(db, device_id=ws.DEVICE)
    app = create_app(cfg, store)
    client = app.test_client()
    r = client.post("/login", data={"name": "rev", "password": ws.PASSWORD})
    assert r.status_code == 303
    page = client.get("/sample/S-2").get_data(as_text=True)
    form = dict(_hidden(page, "signoff"), verdict="benign", confirmed="yes")

    @event.listens_for(store.engine, "connect")
    def _read_only(dbapi_conn, _record):
        dbapi_conn.execute("PRAGMA query_only = ON")

    store.engine.dispose()  # every connection from now on is read-only
    with caplog.at_level("ERROR", logger="edge.web"):
        r = client.post("/sample/S-2/signoff", data=form)
        assert r.status_code == 503 and "read-only" in r.get_data(as_text=True)
        other = app.test_client()
        r = other.post("/login", data={"name": "rev", "password": ws.PASSWORD})
        assert r.status_code == 503 and "read-only" in r.get_data(as_text=True)  # not a 500 on every login
    lines = [rec.getMessage() for rec in caplog.records if "database is read-only" in rec.getMessage()]
    assert len(lines) == 1, lines  # one line a minute, not one per request
    store.close()
    assert signed(db) == []


def _hidden(page: str, form_id: str) -> Dict[str, str]:
    p = _Forms()
    p.feed(page)
    return p.forms[form_id]


# ----------------------------------------------------------------------------------------------- item 16
@needs_mounts
def test_serve_on_a_read_only_data_folder_exits_4_in_one_line(review_app, tmp_path):
    config, db = review_app
    p = run(read_only(tmp_path, *edge(config, "serve", "--port", "0")))
    assert p.returncode == 4 and "read-only" in one_line_error(p)


@needs_mounts
@pytest.mark.parametrize("what", ["data", "inbox"])
def test_daemon_on_a_read_only_data_folder_or_inbox_exits_4_in_one_line(tmp_path, model_path, what):
    config = write_config(tmp_path, model_path)
    (tmp_path / "inbox").mkdir()
    data = tmp_path / "data"
    data.mkdir()
    config.write_text(config.read_text().replace(str(tmp_path / "db.sqlite"), str(data / "db.sqlite")))
    assert run(edge(config, "config", "check")).returncode == 0  # creates the database, as `run` would
    folder = data if what == "data" else tmp_path / "inbox"
    for cmd in ("run", "config"):
        p = run(read_only(folder, *edge(config, *([cmd, "check"] if cmd == "config" else [cmd]))))
        assert p.returncode == 4, p.stderr
        line = one_line_error(p)
        assert ("database error" if what == "data" else "inbox error") in line and "read-only" in line


@needs_mounts
def test_config_check_reports_an_inbox_that_cannot_be_created(tmp_path, model_path):
    config = write_config(tmp_path, model_path)
    parent = tmp_path / "mnt"
    parent.mkdir()
    config.write_text(config.read_text().replace(str(tmp_path / "inbox"), str(parent / "inbox")))
    p = run(read_only(parent, *edge(config, "config", "check")))
    assert p.returncode == 4
    assert f"cannot create {parent / 'inbox'}" in one_line_error(p) and "Read-only file system" in p.stderr
    assert "config OK" not in p.stdout


def test_a_commit_into_a_deleted_database_file_is_not_reported_as_saved(tmp_path):
    """The race the request check cannot see: the file goes between the check and the commit. SQLite
    commits into the unlinked file without an error; Store.write raises after it instead of returning."""
    from sqlalchemy import text

    from edge.store.database import DatabaseGone

    db = tmp_path / "dev.sqlite"
    store = Store.open(db, device_id="dev")
    try:
        with pytest.raises(DatabaseGone, match="deleted or replaced"):
            with store.write() as conn:
                conn.execute(text("CREATE TABLE t (x)"))
                for suffix in ("", "-wal", "-shm"):
                    Path(f"{db}{suffix}").unlink(missing_ok=True)
        with pytest.raises(DatabaseGone):
            with store.write():
                pass  # refused before it begins, too
    finally:
        store.close()
    assert not db.exists()

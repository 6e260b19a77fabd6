"""The review app's security fixes of issue 14 (items 6, 7, 8, 9, 12), each against a real `edge-screen serve`
subprocess on a free port, spoken to in raw HTTP (http.client: the exact Host and X-Forwarded-* headers and
the unfollowed redirects are what is tested), with the database read back with sqlite3 and the accounts
changed through the real `edge-screen user` commands.

Every test uses its own client address (X-Forwarded-For from 127.0.0.1, a configured trusted proxy) and
its own user names, so the log-in throttle of one test never meets another's; waiting for a slow-down or a
lock to pass is done by moving its time back in the database, never by sleeping.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import sqlite3
import subprocess
import urllib.parse
from pathlib import Path
from typing import Dict, Tuple

import daemon_support as ds
import pytest
import web_support as ws
from daemon_support import model_path  # the fixture
from http_support import Reply, login, request, session_cookie, session_cookie_line

from edge.store.database import Store
from edge.store.records import ImageRecord

SERVER_NAME = "edge-01.lab.example"
WEB_KEYS = (
    f'server_names = ["{SERVER_NAME}"]\ntrusted_proxies = ["127.0.0.1"]\n'
    "login_slowdown_after = 3\nlogin_lock_after = 5\nlogin_client_lock_after = 8\nlogin_lock_minutes = 15\n"
)


def cli(config: Path, *args: str, stdin: str = "") -> subprocess.CompletedProcess:
    return ds.cli("--config", str(config), *args, check=False, stdin=stdin)


def record(db: Path, rec: ImageRecord) -> str:
    with Store.open(db, device_id=ws.DEVICE) as store:
        return store.record(rec)


def rewind(db: Path, key: str) -> None:
    """As if the slow-down or lock of ``key`` had run out: its next try is allowed now."""
    ws.execute(db, "UPDATE login_throttle SET retry_at = '2000-01-01 00:00:00.000000' WHERE key = ?", key)


@pytest.fixture(scope="module")
def site(tmp_path_factory, model_path):
    folder = tmp_path_factory.mktemp("websec")
    config = ws.write_config(folder, model=model_path)
    config.write_text(config.read_text() + WEB_KEYS)  # [web] is the file's last section
    db = ws.build_db(
        folder,
        [ws.SampleSpec("S-SEC", 2, [0.1]), ws.SampleSpec("S-LINKS", 3, [0.9, 0.2]), ws.SampleSpec("S-DIR", 2, [0.9])],
    )
    for name, role in (("rev", "reviewer"), ("locky", "reviewer"), ("locky2", "reviewer")):
        r = ws.add_user(config, name, role)
        assert r.returncode == 0, r.stderr
    server = ws.ServeProc(config)
    yield server, db, config, folder
    server.stop()


# ------------------------------------------------------------------------------------ 6: open redirect
def test_next_after_log_in_stays_on_this_site(site):
    server, db, _, _ = site
    sessions = ws.q(db, "SELECT count(*) AS n FROM web_sessions")[0]["n"]
    # Browsers drop tabs and newlines from a URL: "/\t/evil.example" is "//evil.example" to them.
    for nxt in ("/\t/evil.example", "/\n/evil.example", "/\r\nSet-Cookie: x=1", "/\x00"):
        r = login(server.url, "rev", client="10.6.0.1", next=nxt)
        assert r.status == 400 and "control character" in r.text, (nxt, r.status)
        assert "location" not in r.headers
    assert ws.q(db, "SELECT count(*) AS n FROM web_sessions")[0]["n"] == sessions  # refused before log-in
    for nxt, where in (
        ("//evil.example", "/"),
        ("https://evil.example/x", "/"),
        ("/\\evil.example", "/"),
        ("http:/evil.example", "/"),
        ("evil.example", "/"),
        ("/sample/S-SEC", "/sample/S-SEC"),
        ("/sample/S-SEC?done=field", "/sample/S-SEC?done=field"),
    ):
        r = login(server.url, "rev", client="10.6.0.1", next=nxt)
        assert r.status == 303 and r.headers["location"] == where, (nxt, r.headers.get("location"))
    # Logged in, GET /login?next=... redirects at once: the same rule, a newline a 400 (a 500 before).
    cookie = session_cookie(r)
    r = request(server.url, "GET", "/login?next=%2F%0A%2Fevil.example", headers={"Cookie": cookie})
    assert r.status == 400
    r = request(server.url, "GET", "/login?next=%2F%09%2Fevil.example", headers={"Cookie": cookie})
    assert r.status == 400
    # A page whose path holds a newline sends to log-in with the path percent-encoded, and back to it.
    r = request(server.url, "GET", "/sample/S%0ASEC")
    assert r.status == 303
    nxt = urllib.parse.parse_qs(urllib.parse.urlsplit(r.headers["location"]).query)["next"][0]
    assert nxt == "/sample/S%0ASEC"
    r = login(server.url, "rev", client="10.6.0.1", next=nxt)
    assert r.status == 303 and r.headers["location"] == "/sample/S%0ASEC"
    assert "Traceback" not in server.output()


# ------------------------------------------------------------------------------- 7: log-in throttling
def _fail_until_locked(server, db, name: str, client_of) -> int:
    """Wrong passwords for ``name`` until it is locked; slow-downs are checked, then rewound. Returns the
    number of failures counted."""
    failures = 0
    for attempt in range(40):
        r = login(server.url, name, "not the password", client=client_of(attempt))
        if r.status == 401:
            failures += 1
            continue
        assert r.status == 429, r.text
        assert int(r.headers["retry-after"]) >= 1
        if "locked until" in r.text:
            return failures
        assert "wait" in r.text and "before trying again" in r.text
        # Slowed down: even the right password is not looked at.
        assert login(server.url, name, client=client_of(attempt)).status == 429
        rewind(db, f"user:{name}")
    raise AssertionError(f"{name} was never locked")


def test_failed_log_ins_slow_down_then_lock_a_user(site):
    server, db, config, _ = site
    # A different client each time: the user name alone is throttled here.
    failures = _fail_until_locked(server, db, "locky", lambda i: f"10.7.0.{i + 1}")
    assert failures == 5  # web.login_lock_after
    r = login(server.url, "locky", client="10.7.1.1")  # the right password, from a fresh client: still locked
    assert r.status == 429 and "locked until" in r.text and "edge-screen user enable" in r.text
    # The same for the name in another case, and for a name that does not exist (no telling which exist).
    assert login(server.url, "LOCKY", client="10.7.1.2").status == 429
    assert _fail_until_locked(server, db, "nobody-here", lambda i: f"10.7.2.{i + 1}") == 5
    out = server.output()
    assert "log-in LOCKED for user:locky" in out and "log-in slowed down for user:locky" in out
    # Unlocked by time: the lock's end has passed.
    rewind(db, "user:locky")
    r = login(server.url, "locky", client="10.7.1.1")
    assert r.status == 303
    assert ws.q(db, "SELECT count(*) AS n FROM login_throttle WHERE key = 'user:locky'")[0]["n"] == 0

    # Unlocked by an admin: `user enable`.
    _fail_until_locked(server, db, "locky2", lambda i: f"10.7.3.{i + 1}")
    assert login(server.url, "locky2", client="10.7.4.1").status == 429
    p = cli(config, "user", "enable", "locky2")
    assert p.returncode == 0 and "log-in lock lifted" in p.stdout, p.stderr
    assert login(server.url, "locky2", client="10.7.4.1").status == 303
    ev = ws.q(db, "SELECT action, actor, detail FROM user_events WHERE user_name = 'locky2' ORDER BY created_at")
    assert [e["action"] for e in ev] == ["add", "lock", "enable"]
    assert ev[1]["actor"].startswith("web:10.7.3.") and ev[1]["detail"].startswith("5 failed log-ins; locked until ")
    assert ev[2]["detail"] == "log-in lock lifted"
    assert ws.q(db, "SELECT count(*) AS n FROM user_events WHERE user_name LIKE 'nobody%'")[0]["n"] == 0


def test_failed_log_ins_lock_a_client(site):
    server, db, _, _ = site
    client, n = "10.7.9.9", 0
    for i in range(40):  # one wrong password per name: only the client's count grows
        r = login(server.url, f"guess{i}", "not the password", client=client)
        if r.status == 401:
            n += 1
            continue
        assert r.status == 429
        if "locked until" in r.text:
            break
        rewind(db, f"client:{client}")
    assert n == 8 and "this computer" in r.text  # web.login_client_lock_after
    assert login(server.url, "rev", client=client).status == 429  # the right password: not even checked
    assert login(server.url, "rev", client="10.7.9.10").status == 303  # another computer is not locked
    assert f"log-in LOCKED for client:{client}" in server.output()


# --------------------------------------------------------------- 8: images only as they were recorded
def _thumb(server, cookie: str, image_id: str, what: str = "thumb.jpg") -> Reply:
    return request(server.url, "GET", f"/field/{image_id}/{what}", headers={"Cookie": cookie})


def test_images_are_served_only_as_recorded(site):
    server, db, config, folder = site
    cookie = session_cookie(login(server.url, "rev", client="10.8.0.1"))
    outside = folder / "outside"
    outside.mkdir()
    fields = ws.q(db, "SELECT id, path, sha256 FROM images WHERE sample_id = 'S-LINKS' ORDER BY path")
    good, swapped, rewritten = fields
    assert _thumb(server, cookie, good["id"]).status == 200
    secret = outside / "secret.jpg"
    shutil.copyfile(swapped["path"], secret)  # the very same bytes: only "no links" can refuse it

    # A link out of the inbox that the daemon refused (recorded as rejected, with the sample's id).
    link_out = Path(good["path"]).with_name("link-out.jpg")
    link_out.symlink_to(secret)
    link_id = record(
        db,
        ImageRecord(
            path=str(link_out),
            status="rejected",
            reason=f"symlink points outside the inbox (to {secret})",
            sha256=hashlib.sha256(b"symlink:" + os.fsencode(os.readlink(link_out))).hexdigest(),
            sample_id="S-LINKS",
        ),
    )
    # A recorded file swapped for a link afterwards, and one whose content was replaced.
    os.unlink(swapped["path"])
    os.symlink(secret, swapped["path"])
    Path(rewritten["path"]).write_bytes(Path(good["path"]).read_bytes())
    # A sample folder swapped for a link to a copy of it: same names, same bytes, one link on the way.
    sdir = Path(ws.q(db, "SELECT path FROM images WHERE sample_id = 'S-DIR' LIMIT 1")[0]["path"]).parent
    shutil.move(str(sdir), str(outside / "S-DIR"))
    sdir.symlink_to(outside / "S-DIR")

    for image_id, status, why in (
        (link_id, 403, "symbolic link"),
        (swapped["id"], 403, "symbolic link"),
        (rewritten["id"], 409, "not the recorded file"),
    ):
        for what in ("thumb.jpg", "explain.png", "image"):  # thumbnail, map, the full field
            r = _thumb(server, cookie, image_id, what)
            assert (r.status, r.headers["content-type"].split(";")[0]) == (status, "text/plain"), (image_id, what)
            assert why in r.text
    for row in ws.q(db, "SELECT id FROM images WHERE sample_id = 'S-DIR'"):
        for what in ("thumb.jpg", "image"):
            r = _thumb(server, cookie, row["id"], what)
            assert r.status == 403 and "symbolic link" in r.text
    for what in ("thumb.jpg", "image"):  # the good one still shows
        assert _thumb(server, cookie, good["id"], what).status == 200
    assert "refused" in server.output()

    # The HTML report embeds none of them either.
    out = folder / "report.html"
    p = cli(config, "report", "--all", "--format", "html", "--out", str(out))
    assert p.returncode == 0, p.stderr
    cells = report_cells(out.read_text())
    assert "<img" in cells["S-LINKS", Path(good["path"]).name]
    for name in (Path(swapped["path"]).name, Path(rewritten["path"]).name, "link-out.jpg"):
        assert "<img" not in cells["S-LINKS", name] and "refused" in cells["S-LINKS", name], name
    for row in ws.q(db, "SELECT path FROM images WHERE sample_id = 'S-DIR'"):
        assert "<img" not in cells["S-DIR", Path(row["path"]).name]
        assert "symbolic link" in cells["S-DIR", Path(row["path"]).name]


def report_cells(page: str) -> Dict[Tuple[str, str], str]:
    """(sample id, file name) -> the HTML of its cell in the report's per-sample galleries."""
    out = {}
    for block in page.split('<div class="sample">')[1:]:
        sid = re.search(r'<h3 id="sample-([^"]+)"', block).group(1)
        for body, name in re.findall(r'<div class="item">(.*?)<div class="path">([^<]*)</div></div>', block):
            out[sid, name] = body
    return out


# -------------------------------------------------------------------------------- 9: bind and proxy
def test_host_header_must_name_this_server(site):
    server, _, _, _ = site
    port = urllib.parse.urlsplit(server.url).port
    for host in ("evil.example", f"evil.example:{port}", f"{SERVER_NAME}.evil.example"):
        r = request(server.url, "GET", "/login", headers={"Host": host})
        assert r.status == 400 and "does not answer to that host name" in r.text, host
    for host in (f"{SERVER_NAME}:{port}", f"127.0.0.1:{port}", f"localhost:{port}", SERVER_NAME):
        assert request(server.url, "GET", "/login", headers={"Host": host}).status == 200, host
    assert "Host 'evil.example' is not one of web.server_names" in server.output()


def test_secure_cookie_only_when_a_trusted_proxy_says_https(site):
    server, db, config, folder = site
    https = {"X-Forwarded-Proto": "https"}
    r = login(server.url, "rev", client="10.9.0.1", headers=https)
    assert r.status == 303 and "Secure" in [p.strip() for p in session_cookie_line(r).split(";")]
    r = login(server.url, "rev", client="10.9.0.1")
    assert r.status == 303 and "Secure" not in session_cookie_line(r)
    # The same headers from an address that is not a configured proxy are not believed.
    plain_cfg = folder / "plain.toml"  # the same database, no trusted proxy
    plain_cfg.write_text(config.read_text().replace(WEB_KEYS, ""))
    plain = ws.ServeProc(plain_cfg)
    try:
        r = login(plain.url, "rev", client="10.9.0.2", headers=https)
        assert r.status == 303 and "Secure" not in session_cookie_line(r)
        # X-Forwarded-For from an untrusted peer is not a new client for the throttle either.
        for i in range(3):
            login(plain.url, f"who{i}", "not the password", client=f"10.9.1.{i}")
        assert ws.q(db, "SELECT count(*) AS n FROM login_throttle WHERE key LIKE 'client:10.9.1.%'")[0]["n"] == 0
        assert ws.q(db, "SELECT failures FROM login_throttle WHERE key = 'client:127.0.0.1'")[0]["failures"] == 3
    finally:
        plain.stop()


def test_serve_binds_other_machines_only_when_told(site):
    _, _, config, folder = site
    for args, code, message in (
        (["--host", "0.0.0.0"], 2, "not a loopback address"),
        (["--host", "192.0.2.10"], 2, "--allow-remote"),
    ):
        p = cli(config, "serve", "--port", "0", *args)
        assert p.returncode == code and message in p.stderr and len(p.stderr.strip().splitlines()) == 1, p.stderr
    # 0.0.0.0 with --allow-remote needs the names clients use (the Host check).
    bare = folder / "bare.toml"
    bare.write_text(config.read_text().replace(f'server_names = ["{SERVER_NAME}"]\n', ""))
    p = cli(bare, "serve", "--port", "0", "--host", "0.0.0.0", "--allow-remote")
    assert p.returncode == 2 and "needs web.server_names" in p.stderr
    remote = ws.ServeProc(config, "--host", "0.0.0.0", "--allow-remote")
    try:
        assert "reachable from other machines (--allow-remote)" in remote.output()
        assert request(remote.url.replace("0.0.0.0", "127.0.0.1"), "GET", "/login").status == 200
    finally:
        remote.stop()
    # config check warns about a host that is not loopback.
    hosted = folder / "hosted.toml"
    hosted.write_text(config.read_text().replace('host = "127.0.0.1"', 'host = "0.0.0.0"'))
    p = cli(hosted, "config", "check")
    assert p.returncode == 0 and 'warning: web.host = "0.0.0.0" is not a loopback address' in p.stderr, p.stderr
    p = cli(config, "config", "check")
    assert p.returncode == 0 and "warning" not in p.stderr


# ------------------------------------------------------------------------------------------ 12: users
def test_user_disable_enable_passwd_are_audited(site):
    server, db, config, _ = site
    new_pw = "a different long passphrase"
    assert ws.add_user(config, "alice", "reviewer").returncode == 0
    cookie = session_cookie(login(server.url, "alice", client="10.12.0.1"))
    assert request(server.url, "GET", "/", headers={"Cookie": cookie}).status == 200
    # Names are unique without regard to case, and a log-in finds the name in any case.
    r = ws.add_user(config, "Alice", "viewer")
    assert r.returncode == 1 and "already exists (as 'alice'" in r.stderr
    assert ws.q(db, "SELECT name FROM users WHERE lower(name) = 'alice'") == [{"name": "alice"}]
    assert login(server.url, "ALICE", client="10.12.0.2").status == 303
    # Common passwords are refused, for a new user and for a new password.
    for pw in ("password", "Password1", "letmein123", "  iloveyou  "):
        r = ws.add_user(config, "bob", "reviewer", pw)
        assert r.returncode == 1 and "too common" in r.stderr, (pw, r.stderr)
    r = ws.add_user(config, "bobby", "reviewer", "Bobby's password")
    assert r.returncode == 1 and "contains the user name" in r.stderr
    assert ws.q(db, "SELECT count(*) AS n FROM users WHERE name LIKE 'bob%'")[0]["n"] == 0

    p = cli(config, "user", "disable", "alice")
    assert p.returncode == 0 and "disabled alice" in p.stdout
    assert request(server.url, "GET", "/", headers={"Cookie": cookie}).status == 303  # its session ended
    assert login(server.url, "alice", client="10.12.0.3").status == 401
    assert "disabled" in cli(config, "user", "list").stdout
    p = cli(config, "user", "enable", "alice")
    assert p.returncode == 0 and "enabled alice" in p.stdout
    cookie = session_cookie(login(server.url, "alice", client="10.12.0.4"))

    p = cli(config, "user", "passwd", "alice", stdin="password123\n")
    assert p.returncode == 1 and "too common" in p.stderr
    p = cli(config, "user", "passwd", "alice", stdin=new_pw + "\n")
    assert p.returncode == 0 and "password of alice changed (1 session(s) ended)" in p.stdout, p.stderr
    assert new_pw not in p.stdout + p.stderr
    assert request(server.url, "GET", "/", headers={"Cookie": cookie}).status == 303
    assert login(server.url, "alice", client="10.12.0.5").status == 401
    assert login(server.url, "alice", new_pw, client="10.12.0.6").status == 303
    for args in (("disable", "nobody"), ("enable", "nobody")):
        p = cli(config, "user", *args)
        assert p.returncode == 1 and p.stderr.strip() == "Error: no user 'nobody'", p.stderr

    events = ws.q(db, "SELECT action, actor FROM user_events WHERE user_name = 'alice' ORDER BY created_at")
    assert [e["action"] for e in events] == ["add", "disable", "enable", "passwd"]
    assert all(e["actor"].startswith("os:") for e in events)
    log = cli(config, "user", "log", "alice").stdout.splitlines()
    assert [line.split("\t")[2] for line in log] == ["add", "disable", "enable", "passwd"]
    with pytest.raises(sqlite3.IntegrityError, match="append-only"):
        ws.execute(db, "DELETE FROM user_events WHERE user_name = 'alice'")
    with pytest.raises(sqlite3.IntegrityError, match="append-only"):
        ws.execute(db, "UPDATE user_events SET actor = 'nobody'")


def test_image_file_is_only_a_plain_recorded_file(tmp_path):
    """media.image_file (the page's "file missing", and the path any other reader gets): no link anywhere on
    the way, a regular file of the recorded size."""
    from types import SimpleNamespace

    from edge.web.media import image_file

    (tmp_path / "real").mkdir()
    f = tmp_path / "real" / "field.jpg"
    f.write_bytes(b"\xff\xd8\xff" + b"x" * 100)
    (tmp_path / "linked").symlink_to(tmp_path / "real")
    (tmp_path / "real" / "link.jpg").symlink_to(f)
    os.mkfifo(tmp_path / "real" / "fifo.jpg")

    def rec(path, size=103, moved_to=None):
        return SimpleNamespace(path=str(path), moved_to=moved_to, bytes=size)

    assert image_file(rec(f)) == f
    assert image_file(rec(f, size=None)) == f
    assert image_file(rec(tmp_path / "gone.jpg", moved_to=str(f))) == f
    for bad in (
        rec(f, size=104),
        rec(tmp_path / "real" / "link.jpg"),
        rec(tmp_path / "linked" / "field.jpg"),
        rec(tmp_path / "real" / "fifo.jpg", size=0),
        rec(tmp_path / "real" / ".." / "real" / "field.jpg"),
    ):
        assert image_file(bad) is None, bad.path

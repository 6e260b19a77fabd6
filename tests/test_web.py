"""The review web app end to end: a real `edge-screen serve` process on a free port, driven by Playwright with
the system Chromium, and the database read back with sqlite3.

Skipped, with the reason, where there is no Chromium or no playwright package. The server and its database
are shared by the module; each test uses its own sample or checks only rows it made, so the order of the
tests does not matter. ``S-OTHER`` is a ready sample every refusal test aims at: it must never change.
"""

from __future__ import annotations

import hashlib

import pytest
import web_support as ws
from browser_support import browser, login, needs_chromium  # noqa: F401 - browser: the fixture
from daemon_support import model_path  # noqa: F401 - the fixture

pytestmark = needs_chromium

EVIL = "http://evil.example"


@pytest.fixture(scope="module")
def app(tmp_path_factory, model_path):
    folder = tmp_path_factory.mktemp("web")
    config = ws.write_config(folder, model=model_path)
    # Median 0.75: malignant and inside the review band under the 2.0.0 card's sample rule (0.499) and
    # the 3.0.0 one (0.568).
    db = ws.build_db(
        folder,
        [
            ws.SampleSpec("S-READY", 5, [0.92, 0.15, 0.75, 0.97, 0.08]),
            ws.SampleSpec("S-OTHER", 4, [0.1, 0.05]),
            ws.SampleSpec("S-COLLECT", 2, [0.1], close=False),
        ],
    )
    ws.build_db(folder, [ws.SampleSpec("S-FOREIGN", 2, [0.9])], device="other-device")
    for name, role in (("rev", "reviewer"), ("view", "viewer")):
        r = ws.add_user(config, name, role)
        assert r.returncode == 0, r.stderr
        assert ws.PASSWORD not in r.stdout + r.stderr
    server = ws.ServeProc(config)
    yield server, db
    server.stop()


def csrf(page) -> str:
    return page.locator("input[name=csrf_token]").first.get_attribute("value")


def snapshot(db, sample_id="S-OTHER"):
    """Everything a refused request must leave as it was."""
    return (
        ws.q(db, "SELECT * FROM samples WHERE sample_id = ?", sample_id),
        ws.q(db, "SELECT * FROM reviews WHERE sample_id = ?", sample_id),
        ws.q(db, "SELECT * FROM images WHERE sample_id = ? ORDER BY id", sample_id),
    )


def field_ids(db, sample_id):
    return [r["id"] for r in ws.q(db, "SELECT id FROM images WHERE sample_id = ? ORDER BY path", sample_id)]


def test_review_and_sign_off_in_the_browser(app, browser):
    server, db = app
    images_before = ws.q(db, "SELECT * FROM images WHERE sample_id = 'S-READY' ORDER BY id")
    ctx, page = login(browser, server.url)
    page.wait_for_url(server.url + "/")
    ready = page.locator("#ready a")
    assert ready.first.inner_text() == "S-READY"  # needs review: before S-OTHER
    assert "S-COLLECT" in page.locator("#collecting").inner_text()
    assert "S-FOREIGN" not in page.content()
    ready.first.click()
    page.wait_for_url(server.url + "/sample/S-READY")
    assert page.locator("section.field").count() == 5
    assert "inside the review band" in page.locator("#reasons").inner_text()
    thumb = page.locator("section.field img").first
    thumb.scroll_into_view_if_needed()
    ws.poll(
        lambda: page.evaluate("(img) => img.complete && img.naturalWidth > 0", thumb.element_handle()),
        what="the first thumbnail to load",
    )
    first = page.locator("section.field").first

    image_id = first.get_attribute("id")[2:]
    model_label = ws.q(db, "SELECT label FROM images WHERE id = ?", image_id)[0]["label"]
    corrected = next(lab for lab in first.locator("select[name=label] option").all_inner_texts() if lab != model_label)
    first.locator("select[name=label]").select_option(corrected)
    first.locator("input[name=comment]").fill("nucleoli visible")
    first.locator("button[type=submit]").click()
    page.wait_for_selector(".notice")
    assert "field review recorded" in page.locator(".notice").inner_text()
    assert "(corrected)" in page.locator(f"#f-{image_id}").inner_text()
    rows = ws.q(db, "SELECT * FROM reviews WHERE image_id = ?", image_id)
    assert len(rows) == 1
    img = ws.q(db, "SELECT * FROM images WHERE id = ?", image_id)[0]
    assert (rows[0]["kind"], rows[0]["reviewer"], rows[0]["reviewer_label"], rows[0]["comment"]) == (
        "field",
        "rev",
        corrected,
        "nucleoli visible",
    )
    assert (rows[0]["model_label"], rows[0]["model_score"], rows[0]["model_sha256"]) == (
        img["label"],
        img["malignant_score"],
        img["model_sha256"],
    )

    page.check("#signoff input[name=verdict][value=malignant]")
    page.select_option("#signoff select[name=label]", "Pre-B")
    page.fill("#signoff textarea[name=comment]", "blasts in most fields")
    page.click("#signoff button[type=submit]")
    # A summary to confirm first: nothing is signed yet.
    page.wait_for_selector("#confirm-summary")
    assert "Final verdict: malignant, Pre-B." in page.locator("#confirm-summary").inner_text()
    assert ws.q(db, "SELECT status FROM samples WHERE sample_id = 'S-READY'")[0]["status"] == "ready"
    page.click("#confirm-signoff button[type=submit]")
    page.wait_for_selector(".notice")
    assert "sample signed off" in page.locator(".notice").inner_text()
    assert page.locator("#signoff").count() == 0 and page.locator("form.review-form").count() == 0
    s = ws.q(db, "SELECT * FROM samples WHERE sample_id = 'S-READY'")[0]
    assert (s["status"], s["signed_by"], s["final_verdict"], s["final_label"]) == (
        "signed",
        "rev",
        "malignant",
        "Pre-B",
    )
    assert s["signed_at"] is not None and s["verdict"] == "malignant"  # the model's verdict is kept beside
    so = ws.q(db, "SELECT * FROM reviews WHERE sample_id = 'S-READY' AND kind = 'signoff'")
    assert len(so) == 1 and (so[0]["reviewer_verdict"], so[0]["reviewer_label"]) == ("malignant", "Pre-B")
    assert "sign-off" in page.locator("#history").inner_text()
    assert ws.q(db, "SELECT * FROM images WHERE sample_id = 'S-READY' ORDER BY id") == images_before
    # Signed: it leaves the queue for the signed list.
    page.goto(server.url + "/")
    assert "S-READY" in page.locator("#signed").inner_text()
    ctx.close()


def test_wrong_password_is_refused(app, browser):
    server, db = app
    before = ws.q(db, "SELECT count(*) AS n FROM web_sessions")[0]["n"]
    ctx, page = login(browser, server.url, password="not the password")
    page.wait_for_selector(".message")
    assert "wrong user name or password" in page.locator(".message").inner_text()
    assert page.url.startswith(server.url + "/login")
    assert ws.q(db, "SELECT count(*) AS n FROM web_sessions")[0]["n"] == before
    ctx.close()


def test_nothing_is_readable_without_login(app, browser):
    server, db = app
    ctx = browser.new_context()
    page = ctx.new_page()
    for path in ("/", "/sample/S-OTHER"):
        page.goto(server.url + path)
        assert page.url.startswith(server.url + "/login"), path
        assert "S-OTHER" not in page.locator("main").inner_text()
    fid = field_ids(db, "S-OTHER")[0]
    for path in (f"/field/{fid}/thumb.jpg", f"/field/{fid}/explain.png"):
        r = ctx.request.get(server.url + path, max_redirects=0)
        assert r.status == 401, path
    ctx.close()


def test_post_without_csrf_token_is_refused(app, browser):
    server, db = app
    ctx, page = login(browser, server.url)
    page.goto(server.url + "/sample/S-OTHER")
    before = snapshot(db)
    fid = field_ids(db, "S-OTHER")[0]
    for form in ({"label": "Benign"}, {"label": "Benign", "csrf_token": "forged"}):
        r = ctx.request.post(f"{server.url}/sample/S-OTHER/field/{fid}/review", form=form, max_redirects=0)
        assert r.status == 403 and "security token is missing or wrong" in r.text()
    r = ctx.request.post(f"{server.url}/sample/S-OTHER/signoff", form={"verdict": "benign"}, max_redirects=0)
    assert r.status == 403
    assert snapshot(db) == before
    ctx.close()


def test_post_from_another_site_is_refused(app, browser):
    server, db = app
    ctx, page = login(browser, server.url)
    page.goto(server.url + "/sample/S-OTHER")
    token, before = csrf(page), snapshot(db)
    r = ctx.request.post(
        f"{server.url}/sample/S-OTHER/signoff",
        form={"verdict": "benign", "csrf_token": token},
        headers={"Origin": EVIL},
        max_redirects=0,
    )
    assert r.status == 403 and "sent from another site" in r.text()
    r = ctx.request.post(
        f"{server.url}/sample/S-OTHER/signoff",
        form={"verdict": "benign", "csrf_token": token},
        headers={"Referer": EVIL + "/page"},
        max_redirects=0,
    )
    assert r.status == 403
    assert snapshot(db) == before
    ctx.close()


def test_expired_session_goes_back_to_login(app, browser):
    server, db = app
    ctx, page = login(browser, server.url)
    page.goto(server.url + "/sample/S-OTHER")
    before = snapshot(db)
    token = next(c["value"] for c in ctx.cookies() if c["name"] == "edge_screen_session")
    assert next(c for c in ctx.cookies() if c["name"] == "edge_screen_session")["httpOnly"]
    digest = hashlib.sha256(token.encode()).hexdigest()
    assert ws.q(db, "SELECT count(*) AS n FROM web_sessions WHERE token_sha256 = ?", digest)[0]["n"] == 1
    ws.execute(db, "UPDATE web_sessions SET expires_at = '2000-01-01 00:00:00.000000' WHERE token_sha256 = ?", digest)
    # The form on the open page is submitted after expiry: refused, back to the login page with the message.
    form = page.locator("section.field").first
    form.locator("select[name=label]").select_option("Benign")
    form.locator("button[type=submit]").click()
    page.wait_for_selector(".message")
    assert page.url.startswith(server.url + "/login")
    assert "your session expired, log in again" in page.locator(".message").inner_text()
    assert snapshot(db) == before
    page.goto(server.url + "/sample/S-OTHER")
    assert page.url.startswith(server.url + "/login")
    ctx.close()


def test_viewer_sees_everything_but_cannot_change_anything(app, browser):
    server, db = app
    ctx, page = login(browser, server.url, name="view")
    page.goto(server.url + "/sample/S-OTHER")
    assert page.locator("section.field").count() == 4
    assert page.locator("form.review-form").count() == 0 and page.locator("#signoff").count() == 0
    assert page.locator("#readonly").count() == 1
    token, before = csrf(page), snapshot(db)  # the logout form's token is the session's
    fid = field_ids(db, "S-OTHER")[0]
    # Viewers may look, explanation maps included: made by a child `edge-screen explain`, a real PNG.
    thumb = ctx.request.get(f"{server.url}/field/{fid}/thumb.jpg")
    assert thumb.status == 200 and thumb.body()[:3] == b"\xff\xd8\xff"
    emap = ctx.request.get(f"{server.url}/field/{fid}/explain.png", timeout=120_000)
    assert emap.status == 200 and emap.body()[:8] == b"\x89PNG\r\n\x1a\n", emap.text()[:200]
    r = ctx.request.post(
        f"{server.url}/sample/S-OTHER/field/{fid}/review",
        form={"label": "Benign", "csrf_token": token},
        max_redirects=0,
    )
    assert r.status == 403 and "viewer" in r.text()
    r = ctx.request.post(
        f"{server.url}/sample/S-OTHER/signoff", form={"verdict": "benign", "csrf_token": token}, max_redirects=0
    )
    assert r.status == 403
    assert snapshot(db) == before
    ctx.close()


def test_bad_input_is_refused_with_a_message(app, browser):
    server, db = app
    ctx, page = login(browser, server.url)
    page.goto(server.url + "/sample/S-OTHER")
    token, before = csrf(page), snapshot(db)
    other, foreign = field_ids(db, "S-OTHER")[0], field_ids(db, "S-FOREIGN")[0]

    r = ctx.request.post(
        f"{server.url}/sample/S-OTHER/field/{other}/review",
        form={"label": "Leukemia", "csrf_token": token},
        max_redirects=0,
    )
    assert r.status == 400 and "is not one of the model card&#39;s labels" in r.text()
    r = ctx.request.post(
        f"{server.url}/sample/S-OTHER/signoff",
        form={"verdict": "malignant", "label": "Leukemia", "csrf_token": token},
        max_redirects=0,
    )
    assert r.status == 400 and "Leukemia" in r.text()
    r = ctx.request.post(
        f"{server.url}/sample/S-OTHER/signoff", form={"verdict": "maybe", "csrf_token": token}, max_redirects=0
    )
    assert r.status == 400 and "final verdict" in r.text()
    # A field of another sample, and a sample of another device, are not found here.
    r = ctx.request.post(
        f"{server.url}/sample/S-OTHER/field/{foreign}/review",
        form={"label": "Benign", "csrf_token": token},
        max_redirects=0,
    )
    assert r.status == 404 and "no field" in r.text()
    assert ctx.request.get(f"{server.url}/field/{foreign}/thumb.jpg").status == 404
    page.goto(server.url + "/sample/S-FOREIGN")
    assert (
        "no sample &#39;S-FOREIGN&#39; on this device" in page.content()
        or "no sample 'S-FOREIGN' on this device" in page.locator(".message").inner_text()
    )
    r = ctx.request.post(
        f"{server.url}/sample/NO-SUCH/signoff", form={"verdict": "benign", "csrf_token": token}, max_redirects=0
    )
    assert r.status == 404 and "no sample" in r.text()
    assert snapshot(db) == before
    assert ws.q(db, "SELECT count(*) AS n FROM reviews WHERE sample_id IN ('S-FOREIGN', 'NO-SUCH')")[0]["n"] == 0
    ctx.close()


def test_sign_off_of_a_collecting_sample_is_refused(app, browser):
    server, db = app
    ctx, page = login(browser, server.url)
    page.goto(server.url + "/sample/S-COLLECT")
    assert page.locator("#signoff").count() == 0
    token, before = csrf(page), snapshot(db, "S-COLLECT")
    r = ctx.request.post(
        f"{server.url}/sample/S-COLLECT/signoff", form={"verdict": "benign", "csrf_token": token}, max_redirects=0
    )
    assert r.status == 409 and "is collecting, not ready" in r.text()
    assert snapshot(db, "S-COLLECT") == before
    ctx.close()


def test_user_add_refuses_bad_input(app):
    server, db = app
    config = server.log.parent / "edge-screen.toml"
    for name, role, password, message in (
        ("rev", "reviewer", ws.PASSWORD, "already exists"),
        ("new", "reviewer", "pw12345", "too short"),
        ("new", "reviewer", "", "empty password"),
    ):
        r = ws.add_user(config, name, role, password)
        assert r.returncode == 1 and message in r.stderr and len(r.stderr.strip().splitlines()) == 1
        assert not password or password not in r.stdout + r.stderr
    assert ws.q(db, "SELECT count(*) AS n FROM users WHERE name = 'new'")[0]["n"] == 0

"""The review workstation in a real Chromium against a real `edge-screen serve`, at 1280, 768 and 390 px:
cells not scores, fewer clicks, risk in plain words, a safe sign-off, tablet and phone widths.

The samples are screened by the real pipeline and model (web_support.screen_db), so the cells, their boxes,
classes and scores on the pages are the ones the device recorded. Screenshots go to $EDGE_SCREEN_SHOTS (or
the test's temporary folder) for a person to look at. Skipped without Chromium or playwright.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import web_support as ws
from browser_support import WIDTHS, browser, loaded, needs_chromium, shots  # noqa: F401 - the fixtures
from browser_support import login as signed_in
from daemon_support import model_path

from edge.imaging.fieldcells import field_cells
from edge.web.plain import field_reason

pytestmark = needs_chromium

# The shipped card's minimum of readable fields (3.0.0: 8, 3.1.0: 4, 3.2.0: 3); U-FEW has 2 readable fields.
MIN_READABLE = ws.card()["sample_rule"]["min_readable"]
assert MIN_READABLE > 2, "U-FEW must stay below the rule's minimum"


@pytest.fixture(scope="module")
def app(tmp_path_factory, model_path):
    folder = tmp_path_factory.mktemp("ui")
    config = ws.write_config(folder, model=model_path)
    db = ws.screen_db(folder, model_path, {"U-MAL": 8, "U-FEW": 2, "U-STALE": 8, "U-LATE": 8, "U-KEYS": 4})
    # Two unreadable fields in U-FEW (too bright everywhere; no white cell): too few readable for the rule.
    ws.screen_more(folder, model_path, "U-FEW", {"white.jpg": ws.flat_jpeg(252), "noise.jpg": ws.noise_jpeg(1)})
    # U-BAND: fields whose scores lie in the card's review band (recorded directly, as the library does).
    ws.build_db(folder, [ws.SampleSpec("U-BAND", 2, [0.55, 0.6])])
    r = ws.add_user(config, "tech", "reviewer")
    assert r.returncode == 0, r.stderr
    server = ws.ServeProc(config)
    yield server, db, folder, model_path
    server.stop()


def login(browser, url: str, width: str = "desktop", js: bool = True):
    """The technologist signed in at ``width``: (context, page) on the queue."""
    ctx, page = signed_in(browser, url, "tech", width=width, js=js)
    page.wait_for_url(url + "/")
    return ctx, page


# ------------------------------------------------------------------------------------ 3. risk you can see
@pytest.mark.parametrize("width", ["desktop", "phone"])
def test_queue_says_why_each_sample_is_there(app, browser, shots, width):
    server, db, _, _ = app
    ctx, page = login(browser, server.url, width)
    rows = page.locator("#ready tbody tr")
    assert rows.count() == 6
    for i in range(rows.count()):
        assert rows.nth(i).locator("ul.why li").count() >= 1, rows.nth(i).inner_text()
    few = page.locator("#ready tbody tr", has=page.locator("a", has_text="U-FEW"))
    text = few.inner_text()
    assert f"too few readable fields: 2 of the {MIN_READABLE} needed" in text and "2 unreadable" in text
    assert "rule needs" not in text  # the figures are in the title, the words on the page
    # (Generated smears without ../shared are also outside the validated range: that reason may come first.)
    titles = [li.get_attribute("title") or "" for li in few.locator("ul.why li").all()]
    assert any(t.startswith("only 2 readable field(s)") for t in titles), titles
    mal = page.locator("#ready tbody tr", has=page.locator("a", has_text="U-MAL"))
    s = ws.q(db, "SELECT verdict FROM samples WHERE sample_id = 'U-MAL'")[0]
    if s["verdict"] == "malignant":  # the subtype beside the verdict: the commonest label of its malignant fields
        labels = [r["label"] for r in ws.image_rows(db, "U-MAL") if r["verdict"] == "malignant"]
        top = max(set(labels), key=lambda x: (labels.count(x), x))
        assert mal.locator(".subtype").inner_text() == top
    band = page.locator("#ready tbody tr", has=page.locator("a", has_text="U-BAND"))
    assert "2 fields marked for review" in band.inner_text()
    page.screenshot(path=str(shots / f"queue-{width}.png"), full_page=True)
    # A field marked review or unreadable says why, in plain words.
    page.goto(server.url + "/sample/U-FEW")
    for r in ws.image_rows(db, "U-FEW"):
        if r["status"] != "classified":
            sec = page.locator(f"#f-{r['id']}")
            assert field_reason(r["reason"]).text in sec.locator("ul.why").inner_text()
            assert field_reason(r["reason"]).text != r["reason"]
    page.goto(server.url + "/sample/U-BAND")
    for r in ws.image_rows(db, "U-BAND"):
        assert r["needs_review"] == 1
        assert (
            "uncertain call: neither clearly benign nor clearly malignant"
            in page.locator(f"#f-{r['id']} ul.why").inner_text()
        )
    ctx.close()


# ------------------------------------------------------------------------------------ 1. cells, not scores
@pytest.mark.parametrize("width", ["desktop", "phone"])
def test_cells_not_scores(app, browser, shots, width):
    server, db, _, _ = app
    ctx, page = login(browser, server.url, width)
    page.goto(server.url + "/sample/U-MAL")
    recs = [r for r in ws.image_rows(db, "U-MAL") if r["status"] == "classified"]
    assert recs
    for r in recs:
        cells = field_cells(r["segmentation"])
        sec = page.locator(f"#f-{r['id']}")
        crops = sec.locator("a.cell")
        assert crops.count() == len(cells) > 0
        shown = []
        for i in range(crops.count()):
            img = crops.nth(i).locator("img")
            img.scroll_into_view_if_needed()
            ws.poll(lambda img=img: loaded(page, img), what="a cell crop to load")
            box = img.bounding_box()
            assert box["width"] >= 96 and box["height"] >= 96, box
            cap = crops.nth(i).locator(".cap").inner_text()
            m = re.search(r"(\d\.\d\d)$", cap)
            shown.append(float(m.group(1)))
            if cells[i].label:
                assert cells[i].label in cap
        assert shown == sorted(shown, reverse=True)  # most malignant first
        assert shown[0] == pytest.approx(max(r["segmentation"]["cell_scores"]), abs=0.006)
    page.screenshot(path=str(shots / f"sample-{width}.png"), full_page=False)

    # A click on a cell opens the whole field, its cells outlined and numbered.
    target = recs[0]
    cells = field_cells(target["segmentation"])
    page.locator(f"#f-{target['id']} a.cell").first.click()
    page.wait_for_url(re.compile(rf"/sample/U-MAL/field/{target['id']}#cell-1$"))
    svg = page.locator("#field-svg")
    assert svg.locator("g.box").count() == len(cells)
    assert [svg.locator("g.box text").nth(i).text_content() for i in range(len(cells))] == [
        str(c.number) for c in cells
    ]
    rect = svg.locator("#box-1 rect")
    assert (int(rect.get_attribute("x")), int(rect.get_attribute("width"))) == (cells[0].x, cells[0].w)
    ws.poll(
        lambda: page.evaluate(
            "() => { const i = document.querySelector('#field-svg image'); return i && i.getBBox().width > 0; }"
        ),
        what="the field image",
    )
    full = ctx.request.get(server.url + page.locator("#field-svg image").get_attribute("href"))
    assert full.status == 200 and full.body() == Path(target["path"]).read_bytes()  # full resolution: the file
    # Zoom and pan (the viewBox moves; the file is not fetched again).
    before = svg.get_attribute("viewBox")
    page.click("[data-zoom=in]")
    zoomed = [float(v) for v in svg.get_attribute("viewBox").split()]
    assert zoomed[2] < float(before.split()[2])
    b = svg.bounding_box()
    page.mouse.move(b["x"] + b["width"] / 2, b["y"] + b["height"] / 2)
    page.mouse.down()
    page.mouse.move(b["x"] + b["width"] / 2 + 40, b["y"] + b["height"] / 2 + 30, steps=4)
    page.mouse.up()
    panned = [float(v) for v in svg.get_attribute("viewBox").split()]
    assert panned[0] < zoomed[0] and panned[1] < zoomed[1] and panned[2] == pytest.approx(zoomed[2])
    page.screenshot(path=str(shots / f"field-{width}.png"), full_page=False)

    # Each cell's explanation map: readable size, a legend, and where the cell is on the field.
    det = page.locator("#cell-1 details.map")
    det.locator("summary").click()
    m = det.locator("img")
    ws.poll(lambda: loaded(page, m), timeout=120, what="cell 1's explanation map")
    assert page.evaluate("(i) => i.naturalWidth", m.element_handle()) >= 448
    assert m.bounding_box()["width"] >= min(340, WIDTHS[width][0] - 60)
    assert "drove the call" in det.locator(".legend").inner_text()
    here = page.locator("#cell-1 svg.place rect.here")
    assert (int(here.get_attribute("x")), int(here.get_attribute("y"))) == (cells[0].x, cells[0].y)
    page.locator("#cell-1").screenshot(path=str(shots / f"cell-map-{width}.png"))
    ctx.close()


# ------------------------------------------------------------------------------------ 2. fewer clicks
def test_keyboard_and_confirm_all_without_a_reload(app, browser, shots):
    server, db, _, _ = app
    ctx, page = login(browser, server.url)
    page.goto(server.url + "/sample/U-KEYS")
    page.evaluate("() => { window.sameDocument = true; }")
    ids = [s.get_attribute("data-field") for s in page.locator("section.field").all()]
    labels = page.locator("section.field").first.locator("select option[data-key]").all_inner_texts()
    # j: the first field; 2: its class is the card's second label, recorded in place.
    page.keyboard.press("j")
    page.keyboard.press("2")
    ws.poll(
        lambda: ws.q(db, "SELECT reviewer_label FROM reviews WHERE image_id = ?", ids[0]), what="the keyed field review"
    )
    assert ws.q(db, "SELECT reviewer_label FROM reviews WHERE image_id = ?", ids[0])[0]["reviewer_label"] == labels[1]
    ws.poll(lambda: page.locator(f"#f-{ids[0]} .reviewed").count() == 1, what="the field to show its review")
    # Focus moved on to the next field; c confirms it as shown.
    assert page.evaluate("() => document.activeElement.dataset.field") == ids[1]
    page.keyboard.press("c")
    ws.poll(lambda: ws.q(db, "SELECT 1 FROM reviews WHERE image_id = ?", ids[1]), what="the confirmed field")
    # "Confirm all as shown": the rest, one click.
    ws.poll(lambda: page.locator("#confirm-all button").count() == 1, what="the confirm-all button")
    page.click("#confirm-all button")
    ws.poll(lambda: page.locator("#confirm-all").count() == 0, what="the page to update")
    rows = ws.q(db, "SELECT image_id, reviewer_label, model_label FROM reviews WHERE sample_id = 'U-KEYS'")
    readable = [r["id"] for r in ws.image_rows(db, "U-KEYS") if r["status"] == "classified"]
    assert sorted(r["image_id"] for r in rows) == sorted(readable)
    assert page.evaluate("() => window.sameDocument === true")  # no page load for any of it
    # n: the next sample in the queue's order.
    nxt = page.locator("#next-sample")
    if nxt.count():
        href = nxt.get_attribute("href")
        page.keyboard.press("n")
        page.wait_for_url(server.url + href)
    ctx.close()


def test_forms_work_without_javascript(app, browser):
    server, db, _, _ = app
    ctx, page = login(browser, server.url, js=False)
    page.goto(server.url + "/sample/U-STALE")
    sec = page.locator("section.field").first
    fid = sec.get_attribute("data-field")
    sec.locator("button[type=submit]").click()
    page.wait_for_selector(".notice")
    assert "field review recorded" in page.locator(".notice").inner_text()
    assert ws.q(db, "SELECT count(*) AS n FROM reviews WHERE image_id = ?", fid)[0]["n"] == 1
    ctx.close()


# ------------------------------------------------------------------------------------ 4. a safe sign-off
def test_unreadable_fields_get_no_preset_label(app, browser):
    server, db, _, _ = app
    ctx, page = login(browser, server.url)
    page.goto(server.url + "/sample/U-FEW")
    bad = [r for r in ws.image_rows(db, "U-FEW") if r["status"] != "classified"]
    assert len(bad) == 2
    for r in bad:
        sel = page.locator(f"#f-{r['id']} select[name=label]")
        assert sel.input_value() == ""
        page.locator(f"#f-{r['id']} button[type=submit]").click()  # the browser asks for a class first
    assert ws.q(db, "SELECT count(*) AS n FROM reviews WHERE image_id IN (?, ?)", bad[0]["id"], bad[1]["id"]) == [
        {"n": 0}
    ]
    token = page.locator("input[name=csrf_token]").first.get_attribute("value")
    r = ctx.request.post(
        f"{server.url}/sample/U-FEW/field/{bad[0]['id']}/review",
        form={"label": "", "csrf_token": token},
        max_redirects=0,
    )
    assert r.status == 400
    ctx.close()


def test_inconsistent_and_stale_sign_offs_are_refused(app, browser, shots):
    server, db, folder, model = app
    ctx, page = login(browser, server.url)
    page.goto(server.url + "/sample/U-FEW")
    before = ws.q(db, "SELECT * FROM samples WHERE sample_id = 'U-FEW'")
    # Benign with a malignant subtype: refused with the reason, at the confirmation step already.
    page.check("#signoff input[value=benign]")
    page.select_option("#signoff select[name=label]", "Pro-B")
    page.fill("#signoff textarea[name=comment]", "only three fields")
    page.click("#signoff button[type=submit]")
    assert "a benign sign-off cannot carry the malignant subtype Pro-B" in page.locator(".message").inner_text()
    # Too few readable fields: the comment is required (the browser asks; the server refuses without it).
    page.goto(server.url + "/sample/U-FEW")
    assert page.locator("#signoff textarea[required]").count() == 1
    token = page.locator("input[name=csrf_token]").first.get_attribute("value")
    version = page.locator("#signoff input[name=version]").get_attribute("value")
    r = ctx.request.post(
        f"{server.url}/sample/U-FEW/signoff",
        max_redirects=0,
        form={"verdict": "malignant", "csrf_token": token, "version": version, "confirmed": "yes"},
    )
    assert r.status == 400 and f"only 2 readable field(s), the rule needs {MIN_READABLE}" in r.text()
    assert ws.q(db, "SELECT * FROM samples WHERE sample_id = 'U-FEW'") == before

    # A stale page: a field arrives after the page was drawn; its sign-off is refused.
    page.goto(server.url + "/sample/U-STALE")
    page.check("#signoff input[value=malignant]")
    page.fill("#signoff textarea[name=comment]", "seen enough")
    ws.screen_more(folder, model, "U-STALE", {"arrived-late.jpg": ws.noise_jpeg(7)})
    page.click("#signoff button[type=submit]")
    assert "the sample changed: reload" in page.locator(".message").inner_text()
    assert ws.q(db, "SELECT count(*) AS n FROM reviews WHERE sample_id = 'U-STALE' AND kind = 'signoff'") == [{"n": 0}]
    # Stale between the summary and its confirmation: refused too.
    page.goto(server.url + "/sample/U-STALE")
    page.check("#signoff input[value=benign]")
    page.fill("#signoff textarea[name=comment]", "seen enough")
    page.click("#signoff button[type=submit]")
    page.wait_for_selector("#confirm-summary")
    ws.screen_more(folder, model, "U-STALE", {"arrived-later.jpg": ws.noise_jpeg(8)})
    page.click("#confirm-signoff button[type=submit]")
    assert "the sample changed: reload" in page.locator(".message").inner_text()
    assert ws.q(db, "SELECT status FROM samples WHERE sample_id = 'U-STALE'") == [{"status": "ready"}]
    ctx.close()


@pytest.mark.parametrize("width", ["desktop", "phone"])
def test_confirmed_sign_off_shows_its_comment_and_late_fields(app, browser, shots, width):
    server, db, folder, model = app
    sid = "U-LATE" if width == "desktop" else "U-MAL"
    ctx, page = login(browser, server.url, width)
    page.goto(server.url + f"/sample/{sid}")
    s = ws.q(db, "SELECT * FROM samples WHERE sample_id = ?", sid)[0]
    other = "benign" if s["verdict"] == "malignant" else "malignant"
    page.check(f"#signoff input[value={other}]")
    page.fill("#signoff textarea[name=comment]", "checked every cell; <b>not</b> what the model said")
    page.click("#signoff button[type=submit]")
    summary = page.locator("#confirm-summary")
    text = summary.inner_text()
    assert f"You sign {other.upper()}; the model said {s['verdict']} (score {s['score']:.3f})." in text
    assert f"on {s['readable']} readable of {s['fields']} fields" in text
    assert "Comment: checked every cell; <b>not</b> what the model said" in text
    assert summary.locator("li.disagree").count() == 1
    page.screenshot(path=str(shots / f"confirm-{width}.png"), full_page=True)
    got = page.evaluate(CHECK_LAYOUT)
    assert got["overflow"] <= 0 and got["small"] == [] and got["oneLine"], got
    page.click("#confirm-signoff button[type=submit]")
    page.wait_for_selector(".notice")
    row = ws.q(db, "SELECT * FROM samples WHERE sample_id = ?", sid)[0]
    assert (row["status"], row["final_verdict"], row["late_fields"] or 0) == ("signed", other, 0)
    so = ws.q(db, "SELECT * FROM reviews WHERE sample_id = ? AND kind = 'signoff'", sid)[0]
    assert so["model_score"] == s["score"]  # the score on the page the reviewer confirmed
    assert page.locator("#signed-card q.comment").inner_text() == "checked every cell; <b>not</b> what the model said"

    # A field recorded after the sign-off: shown as late, flagged, and in the queue's late list.
    ws.screen_more(folder, model, sid, {f"after-signoff-{width}.jpg": ws.noise_jpeg(9)})
    late_id = ws.q(db, "SELECT id FROM images WHERE filename = ?", f"after-signoff-{width}.jpg")[0]["id"]
    assert ws.q(db, "SELECT late_fields, fields FROM samples WHERE sample_id = ?", sid) == [
        {"late_fields": 1, "fields": s["fields"]}
    ]
    page.goto(server.url + f"/sample/{sid}")
    assert "1 field arrived after the sign-off" in page.locator("#late-banner").inner_text()
    sec = page.locator("section.field").first
    assert sec.get_attribute("id") == f"f-{late_id}" and "late" in sec.get_attribute("class")
    page.screenshot(path=str(shots / f"signed-late-{width}.png"), full_page=False)
    page.goto(server.url + "/")
    assert f"{sid}" in page.locator("#late").inner_text() and "1 late field" in page.locator("#late").inner_text()
    ctx.close()


# ------------------------------------------------------------------------------------ 5. tablet and phone
CHECK_LAYOUT = """() => {
  const bad = [];
  const vis = (e) => { const r = e.getBoundingClientRect(); const s = getComputedStyle(e);
                       return r.width > 0 && r.height > 0 && s.visibility !== 'hidden'; };
  for (const e of document.querySelectorAll('a[href], button, select, textarea, input:not([type=hidden]), summary')) {
    if (!vis(e)) continue;
    const t = (e.type === 'radio' || e.type === 'checkbox') ? e.closest('label') : e;
    const r = t.getBoundingClientRect();
    if (r.height < 44 || r.width < 44) bad.push((e.id || e.name || e.textContent || e.tagName).trim().slice(0, 40)
                                                + ' ' + Math.round(r.width) + 'x' + Math.round(r.height));
  }
  const head = document.querySelector('header.top').getBoundingClientRect();
  const tops = [...document.querySelectorAll('header.top > *')].filter(vis).map(e => e.getBoundingClientRect());
  const inside = tops.every(r => r.top >= head.top && r.bottom <= head.bottom + 0.5);
  const spread = Math.max(...tops.map(r => r.top)) - Math.min(...tops.map(r => r.top));
  return {overflow: document.documentElement.scrollWidth - window.innerWidth, small: bad,
          headerHeight: head.height, oneLine: inside && spread < 20};
}"""


@pytest.mark.parametrize("width", ["tablet", "phone"])
def test_tablet_and_phone_widths(app, browser, shots, width):
    server, db, _, _ = app
    w, h = WIDTHS[width]
    anon = browser.new_context(viewport={"width": w, "height": h})
    login_page = anon.new_page()
    login_page.goto(server.url + "/login")
    got = login_page.evaluate(CHECK_LAYOUT)
    assert got["overflow"] <= 0 and got["small"] == [] and got["oneLine"], ("login", got)
    anon.close()
    ctx, page = login(browser, server.url, width)
    fid = [r["id"] for r in ws.image_rows(db, "U-FEW") if r["status"] == "classified"][0]
    for name, path in (("queue", "/"), ("sample", "/sample/U-FEW"), ("field", f"/sample/U-FEW/field/{fid}")):
        page.goto(server.url + path)
        got = page.evaluate(CHECK_LAYOUT)
        assert got["overflow"] <= 0, (name, got)
        assert got["small"] == [], (name, got["small"])
        assert got["oneLine"] and got["headerHeight"] <= 60, (name, got)
        page.screenshot(path=str(shots / f"{name}-{width}-layout.png"), full_page=True)
    ctx.close()


def test_cells_and_fields_need_a_login(app, browser):
    server, db, _, _ = app
    fid = [r["id"] for r in ws.image_rows(db, "U-MAL") if r["status"] == "classified"][0]
    ctx = browser.new_context()
    for path in (f"/field/{fid}/cell/1.jpg", f"/field/{fid}/cell/1/explain.png", f"/field/{fid}/image"):
        r = ctx.request.get(server.url + path, max_redirects=0)
        assert r.status == 401, path
    page = ctx.new_page()
    page.goto(server.url + f"/sample/U-MAL/field/{fid}")
    assert page.url.startswith(server.url + "/login")
    ctx.close()
    # Logged in: a cell that the field does not have is a 404, not someone else's picture.
    ctx, page = login(browser, server.url)
    assert ctx.request.get(server.url + f"/field/{fid}/cell/99.jpg").status == 404
    assert ctx.request.get(server.url + "/field/no-such-field/image").status == 404
    ctx.close()

"""The review queue says when this microscope is outside the validated range (Flask's test client on a real
store; the Playwright tests cover the pages in a browser)."""

from __future__ import annotations

import dataclasses

from conftest import fake_record

from edge.config import Config
from edge.store.database import Store
from edge.store.reviews import add_user
from edge.web import create_app
from edge.web.auth import COOKIE, start_session


def _client(tmp_path, domain, **fields):
    store = Store.open(f"sqlite:///{tmp_path / 'db.sqlite'}", device_id="scope-1")
    recs = []
    for i in range(4):
        r = dataclasses.replace(
            fake_record(i * 4, device_id="scope-1"), magnification=3.4, domain=domain, sample_id="PAT-1", **fields
        )
        recs.append(r)
    store.record_many(recs)
    user = add_user(store, "tech", "a long enough passphrase", "reviewer")
    token, _ = start_session(store, user, 60)
    app = create_app(Config(), store)
    client = app.test_client()
    client.set_cookie(COOKIE, token)
    return client, store


def _page(tmp_path, domain, url: str, **fields) -> str:
    """The page at ``url`` for four fields of sample PAT-1 recorded with ``domain`` (and ``fields``)."""
    client, store = _client(tmp_path, domain, **fields)
    try:
        return client.get(url).get_data(as_text=True)
    finally:
        store.close()


def test_queue_warns_when_recent_fields_are_outside_the_range(tmp_path):
    page = _page(
        tmp_path, "magnification 3.4x the training scale (measured from its red cells), validated 0.5-2.0x", "/"
    )
    assert 'id="optics-warning"' in page and "outside the range the model was validated on" in page
    assert "magnification 3.4x the training scale" in page


def test_no_warning_inside_the_range(tmp_path):
    page = _page(tmp_path, None, "/")
    assert "Ready for review" in page and 'id="optics-warning"' not in page


def test_the_sample_page_says_in_plain_words_why_pale_fields_do_not_count(tmp_path):
    from edge.vocabulary import PALE

    page = _page(tmp_path, PALE, "/sample/PAT-1")
    assert "4 field(s) whose white cell was too pale to read with confidence" in page
    assert "readable fields</span><b>0 / 4</b>" in page  # shown, not counted


def test_a_field_outside_the_range_says_why_once_in_plain_words_with_its_figures(tmp_path):
    """The sample page tells each of the monitor's reasons in plain words with the recorded figures beside
    them (no hover needed on a tablet), and does not repeat the raw reasons in a second banner."""
    raw = "stain unlike the validated slides (cell lightness 52.9, validated 64.1-87.6)"
    page = _page(tmp_path, raw, "/sample/PAT-1", needs_review=True)
    assert page.count("a benign answer here does not rule out blasts") == 4  # one per field, all four classified
    assert page.count(f"<small>({raw})</small>") == 4
    sections = page.split('<section class="field')[1:]
    assert len(sections) == 4 and all(sec.count("52.9") == 1 for sec in sections)
    assert '<ul class="why domain">' in page


def test_a_cell_like_an_immature_granulocyte_is_not_called_a_microscope_outside_the_range(tmp_path):
    from edge.vocabulary import GRANULOCYTE

    flag = f"{GRANULOCYTE} (read-out 21.3, flagged from 16.8)"
    client, store = _client(tmp_path, flag, needs_review=True)
    try:
        queue = client.get("/").get_data(as_text=True)
        sample = client.get("/sample/PAT-1").get_data(as_text=True)
    finally:
        store.close()
    assert 'id="optics-warning"' not in queue
    assert "4 field(s) with a cell like an immature granulocyte (left shift" in sample
    assert sample.count("a cell looks like an immature granulocyte") == 4

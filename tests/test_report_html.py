"""edge-screen report as HTML: a thumbnail and occlusion map per flagged image, nothing external, and a page
that headless Chromium renders."""

from __future__ import annotations

import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import cv2
import numpy as np
import pytest
from report_support import model_path, report_db

from edge.inference.classifier import Classifier
from edge.report.html import render_html, write_html
from edge.report.query import build_report
from edge.report.window import make_window


@pytest.fixture(scope="module")
def db(tmp_path_factory):
    return report_db(tmp_path_factory.mktemp("report"))


class _Page(HTMLParser):
    def __init__(self):
        super().__init__()
        self.attrs, self.items, self._item, self.text = [], {}, None, []

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        self.attrs.append((tag, a))
        if tag == "div" and (a.get("class") == "item"):
            self._item = a["id"][4:]
            self.items[self._item] = {"imgs": {}, "text": ""}
        if tag == "img" and self._item:
            self.items[self._item]["imgs"][a.get("class")] = a.get("src", "")

    def handle_data(self, data):
        self.text.append(data)
        if self._item:
            self.items[self._item]["text"] += data


@pytest.fixture(scope="module")
def classifier():
    return Classifier(model_path())


@pytest.fixture(scope="module")
def html_report(db, classifier, tmp_path_factory):
    path, _, deleted = db
    data = build_report(path, make_window(all_time=True))
    out = write_html(
        data, tmp_path_factory.mktemp("html") / "report.html", maps=True, classifier=classifier, progress=False
    )
    return data, out, deleted


def test_html_has_thumbnail_and_map_for_each_flagged_image(html_report):
    data, out, deleted = html_report
    text = out.read_text(encoding="utf-8")
    page = _Page()
    page.feed(text)
    page.close()
    assert set(page.items) == {f.image_id for f in data.flagged}
    for f in data.flagged:
        item = page.items[f.image_id]
        if Path(f.path) == deleted:
            assert "file missing" in item["text"] and not item["imgs"]
        else:
            assert item["imgs"]["thumb"].startswith("data:image/jpeg;base64,")
            assert item["imgs"]["map"].startswith("data:image/jpeg;base64,")
            assert "7×7" in item["text"] and "map" in item["text"]
    # The missing file is stated, and every other flagged image is still there.
    assert sum(1 for i in page.items.values() if "file missing" in i["text"]) == 1


def test_html_has_no_external_urls_and_carries_the_numbers(html_report):
    data, out, _ = html_report
    text = out.read_text(encoding="utf-8")
    page = _Page()
    page.feed(text)
    for tag, attrs in page.attrs:
        for k in ("src", "href", "xlink:href", "action"):
            v = (attrs.get(k) or "").strip().lower()
            assert not v or v.startswith("data:") or v.startswith("#"), (tag, k, v[:60])
    assert "http://" not in text and "https://" not in text
    assert not any(tag in ("script", "link", "iframe") for tag, _ in page.attrs)
    assert sum(1 for tag, _ in page.attrs if tag == "svg") >= 3
    body = " ".join(page.text)
    assert f"Malignant or needs review ({len(data.flagged)})" in body


def test_html_without_maps_and_with_a_gallery_limit(db):
    data = build_report(db[0], make_window(all_time=True))
    page = _Page()
    page.feed(render_html(data, maps=False, gallery_limit=2, progress=False))
    assert len(page.items) == 2
    assert all("map" not in i["imgs"] for i in page.items.values())
    assert f"The 2 most urgent of {len(data.flagged)} flagged images" in " ".join(page.text)


def test_html_renders_in_headless_chromium(html_report, tmp_path):
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    if exe is None:
        pytest.skip("chromium is not on PATH (scripts/ci-chromium.sh installs it from the distribution)")
    _, out, _ = html_report
    shot = tmp_path / "shot.png"
    cmd = [
        exe,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        f"--user-data-dir={tmp_path / 'profile'}",
        f"--screenshot={shot}",
        "--window-size=1200,1600",
        out.resolve().as_uri(),
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=180)
    assert shot.is_file(), proc.stderr[-2000:]
    img = cv2.imread(str(shot))
    assert img is not None and img.shape[:2] == (1600, 1200)
    grey = cv2.cvtColor(img, cv2.COLOR_BGR2GRAY)
    assert float(grey.std()) > 5.0
    assert len(np.unique(img.reshape(-1, 3), axis=0)) > 50  # text, charts and photos, not one flat colour

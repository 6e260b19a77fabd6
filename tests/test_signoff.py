"""A safe sign-off in the library (edge.store.reviews, edge.store.samples): inconsistent sign-offs refused, a
stale page's sign-off refused, fields after the sign-off counted as late, "confirm all" confirming only what was shown;
and the plain words and cell boxes the review pages are built from (edge.web.plain, edge.imaging.fieldcells)."""

from __future__ import annotations

import hashlib
import json
from types import SimpleNamespace

import numpy as np
import pytest
import web_support as ws
from daemon_support import cli, model_path

from edge.export.merge import export_to
from edge.imaging.fieldcells import cell_boxes, field_cells
from edge.report.formats import to_json
from edge.report.query import build_report
from edge.report.window import make_window
from edge.store import reviews
from edge.store.database import Store
from edge.store.records import ImageRecord
from edge.store.reviews import CHANGED, ReviewConflict, ReviewError
from edge.store.samples import late_field_ids
from edge.store.schema import utcnow
from edge.web.plain import field_reason, field_review_reasons, queue_reason, sample_reasons


@pytest.fixture
def env(tmp_path):
    # S1: 2 fields (the shipped rule wants more readable); S9: 9 fields, enough.
    db = ws.build_db(tmp_path, [ws.SampleSpec("S1", 2, [0.9, 0.2]), ws.SampleSpec("S9", 9, [0.95, 0.9, 0.97])])
    store = Store.open(db, device_id=ws.DEVICE, sample_rule=ws.card_rule())
    reviews.add_user(store, "rev", ws.PASSWORD, "reviewer")
    yield store, db, tmp_path
    store.close()


def state(db):
    return [ws.q(db, f"SELECT * FROM {t} ORDER BY 1") for t in ("images", "samples", "reviews")]


# The shipped card's minimum of readable fields (3.0.0: 8, 3.1.0: 4, 3.2.0: 3); S1 has 2 readable fields.
MIN_READABLE = ws.card()["sample_rule"]["min_readable"]
assert MIN_READABLE > 2, "S1 must stay below the rule's minimum"


def add_field(store, tmp_path, sample_id: str, score: float, n: int) -> str:
    """One more field recorded the way the pipeline records it (record_many, the store opened with the card's
    rule)."""
    path = tmp_path / "inbox" / sample_id / f"late-{n}.jpg"
    path.write_bytes(b"late field %d" % n)
    model_id = ws.q(tmp_path / "db.sqlite", "SELECT id FROM models")[0]["id"]
    rec = ImageRecord(
        path=str(path),
        sha256=hashlib.sha256(path.read_bytes()).hexdigest(),
        status="classified",
        label="Benign" if score < 0.5 else "Pro-B",
        malignant_score=score,
        verdict="malignant" if score >= 0.5 else "benign",
        model_id=model_id,
        sample_id=sample_id,
        probabilities={"Benign": 1 - score, "Pro-B": score},
        recorded_at=utcnow(),
    )
    return store.record_many([rec])[0]


def test_inconsistent_sign_offs_are_refused_and_change_nothing(env):
    store, db, _ = env
    before = state(db)
    version = {sid: store.samples.get(sid).version for sid in ("S1", "S9")}
    for args, kw, message in (
        (("S9", "benign", "Pro-B"), {}, "a benign sign-off cannot carry the malignant subtype Pro-B"),
        (("S9", "malignant", "Benign"), {}, "a malignant sign-off cannot be labelled Benign"),
        (("S1", "malignant"), {}, rf"only 2 readable field\(s\), the rule needs {MIN_READABLE}: say in the comment"),
        (("S1", "malignant"), {"comment": "   "}, "only 2 readable"),
        (("S9", "malignant"), {"version": "0" * 16}, "the sample changed: reload"),
    ):
        with pytest.raises(ReviewError, match=message) as e:
            reviews.sign_off(store, "rev", *args, **{"version": version[args[0]], **kw})
        assert "\n" not in str(e.value)
        with pytest.raises(ReviewError, match=message):
            reviews.check_sign_off(store, "rev", *args, **{"version": version[args[0]], **kw})
    assert state(db) == before
    # The same sample with the comment the rule asks for, and a consistent label: accepted.
    r = reviews.sign_off(
        store,
        "rev",
        "S1",
        "malignant",
        "Pro-B",
        "only 2 fields on this smear, blasts in 2",
        version=store.samples.get("S1").version,
    )
    assert r.reviewer_verdict == "malignant"


def test_a_sample_that_changed_since_the_page_is_refused(env):
    store, db, tmp_path = env
    seen = store.samples.get("S9")
    assert seen.verdict == "malignant"
    # Fields arrive while the reviewer looks at the page: the aggregate moves on.
    for n in range(12):
        add_field(store, tmp_path, "S9", 0.02, n)
    now = store.samples.get("S9")
    assert now.verdict == "benign" and now.version != seen.version
    before = state(db)
    with pytest.raises(ReviewConflict, match=f"^{CHANGED}$"):
        reviews.sign_off(store, "rev", "S9", "malignant", "Pro-B", version=seen.version)
    assert state(db) == before
    r = reviews.sign_off(store, "rev", "S9", "benign", version=now.version)
    assert r.model_score == now.score  # the score the reviewer saw


def test_fields_after_sign_off_are_late_and_counted(env):
    store, db, tmp_path = env
    s = store.samples.get("S9")
    reviews.sign_off(store, "rev", "S9", "malignant", "Pro-B", version=s.version)
    signed = store.samples.get("S9")
    assert signed.late_fields == 0
    clinic = tmp_path / "clinic.sqlite"
    assert export_to(store, clinic).conflicts == []
    ids = [add_field(store, tmp_path, "S9", 0.9, n) for n in range(2)]
    after = store.samples.get("S9")
    # What was signed stays as it was; the two new fields are counted apart, and the row moved on (export).
    assert (after.fields, after.readable, after.verdict, after.score) == (
        signed.fields,
        signed.readable,
        signed.verdict,
        signed.score,
    )
    assert after.late_fields == 2 and after.updated_at > signed.updated_at
    assert after.to_json()["late_fields"] == 2
    assert late_field_ids(after, store.samples.fields(after)) == set(ids)
    assert ws.q(db, "SELECT late_fields FROM samples WHERE sample_id = 'S9'")[0]["late_fields"] == 2
    # ... in `samples` (the table and the JSON), the report, and the export (the clinic's copy moves on).
    config = ws.write_config(tmp_path)
    table = cli("--config", str(config), "samples", "--status", "signed", env={"COLUMNS": "160"}).stdout
    assert "2 late field(s) arrived after the sign-off" in " ".join(table.split())
    js = json.loads(cli("--config", str(config), "samples", "--format", "json").stdout)
    assert {x["sample_id"]: x["late_fields"] for x in js} == {"S1": 0, "S9": 2}
    report = to_json(build_report(db, make_window(all_time=True)))
    assert {b["sample_id"]: b["late_fields"] for b in report["samples"]} == {"S1": 0, "S9": 2}
    sent = export_to(store, clinic)
    assert sent.conflicts == [] and sent.samples_updated == 1
    assert ws.q(clinic, "SELECT late_fields, fields, status FROM samples WHERE sample_id = 'S9'") == [
        {"late_fields": 2, "fields": signed.fields, "status": "signed"}
    ]


def test_confirm_all_confirms_only_the_fields_shown(env):
    store, db, tmp_path = env
    shown = [r["id"] for r in ws.q(db, "SELECT id FROM images WHERE sample_id = 'S9' ORDER BY path")]
    first = reviews.review_field(store, "rev", shown[0], "Benign")  # a correction made before
    new_id = add_field(store, tmp_path, "S9", 0.9, 99)  # arrives after the page was drawn
    done = reviews.confirm_fields(store, "rev", "S9", shown)
    assert sorted(r.image_id for r in done) == sorted(shown[1:])
    rows = ws.q(db, "SELECT * FROM reviews WHERE sample_id = 'S9' AND kind = 'field'")
    assert len(rows) == 9 and new_id not in {r["image_id"] for r in rows}
    assert all(r["reviewer_label"] == r["model_label"] for r in rows if r["id"] != first.id)
    ws.execute(db, "UPDATE images SET status = 'unreadable', label = NULL WHERE id = ?", new_id)
    before = state(db)
    with pytest.raises(ReviewError, match="no field to confirm"):
        reviews.confirm_fields(store, "rev", "S9", [])
    with pytest.raises(ReviewError, match="no field 'nope' in sample S9"):
        reviews.confirm_fields(store, "rev", "S9", [shown[1], "nope"])
    with pytest.raises(ReviewError, match="is unreadable: it has no label to confirm"):
        reviews.confirm_fields(store, "rev", "S9", [new_id])
    assert state(db) == before


def test_plain_words():
    assert field_reason("overexposed: mean brightness 241.7 > 240.22").text == "too bright to read"
    assert field_reason("out of focus: Laplacian variance 3.1 < 20").text == "out of focus"
    # A refusal the microscope's settings cause says which setting.
    assert "lamp" in field_reason("badly exposed: 12.0% of cell pixels clipped black or white > 5.0%").text
    mag = field_reason(
        "magnification 9.3x the training scale (measured from 12 red cells) is outside the supported 0.6-8x"
    )
    assert mag.text.startswith("magnification 9.3× is outside") and "objective" in mag.text
    r = field_reason("something new the pipeline says")
    assert r.text == r.detail == "something new the pipeline says"  # never hidden behind a translation
    words = [
        r.text
        for r in sample_reasons(
            ["score 0.750 is inside the review band 0.230-0.906", "only 3 readable field(s), the rule needs 8"]
        )
    ]
    assert words == [
        "uncertain: the score is neither clearly benign nor clearly malignant",
        "too few readable fields: 3 of the 8 needed",
    ]
    rec = SimpleNamespace(needs_review=True, malignant_score=0.12, verdict="benign", domain=None)
    assert [r.text for r in field_review_reasons(rec, (0.25, 0.92), [0.1, 0.95])] == [
        "called benign, but one cell looks malignant"
    ]
    confident = SimpleNamespace(needs_review=False, review_reasons=[], verdict="malignant", closed_by="rule")
    assert queue_reason(confident)[0].text == "confident malignant call: check and sign"


def test_cell_boxes_map_the_working_field_to_the_file():
    cell = SimpleNamespace(y=100, x=50)
    # optical: a 1000x800 file decoded at 1/2 (500x400), resampled to the working 250x200.
    assert cell_boxes([cell], (200, 250), (400, 500), (1000, 800), 72, "optical", "none") == [
        [int(round((50 - 36) * 4)), int(round((100 - 36) * 4)), 288, 288]
    ]
    # fixed: the centre square of a 640x480 file resized to 224.
    ((x, y, w, h),) = cell_boxes(
        [SimpleNamespace(y=112, x=112)], (224, 224), (480, 640), (640, 480), 72, "fixed", "center-square"
    )
    assert (x + w / 2, y + h / 2) == pytest.approx((320, 240), abs=1) and w == h == round(72 * 480 / 224)


def test_field_cells_most_malignant_first_and_not_counted_last():
    seg = {
        "cell_positions": [{"y": 10, "x": 10}, {"y": 20, "x": 20}, {"y": 30, "x": 30}],
        "cell_boxes": [[0, 0, 5, 5], [1, 1, 5, 5], [2, 2, 5, 5]],
        "ood_distances": [1.0, 9.0, 2.0],
        "cells_ignored": 1,
        "cell_scores": [0.2, 0.8],
        "cell_labels": ["Benign", "Pro-B"],
    }
    cells = field_cells(seg)
    assert [(c.number, c.index, c.label, c.score, c.counted) for c in cells] == [
        (1, 2, "Pro-B", 0.8, True),
        (2, 0, "Benign", 0.2, True),
        (3, 1, None, None, False),
    ]
    assert field_cells({"cell_fraction": 0.1}) == []
    assert json.dumps([c.centre for c in cells]) == "[[30, 30], [10, 10], [20, 20]]"


def test_explain_maps_the_cell_asked_for(model_path):
    from daemon_support import real_images

    from edge.imaging.decode import decode_file
    from edge.imaging.preprocess import decode_target, preprocess_image
    from edge.inference.classifier import Classifier
    from edge.inference.explain import explain_image, panel

    def preprocess_file(p, params):
        return preprocess_image(decode_file(p, target=decode_target(params)).rgb, params)

    clf = Classifier(model_path, num_threads=1)
    path = next((p for p in real_images(40) if len(preprocess_file(p, clf.preprocessing).cells) >= 2), None)
    if path is None:
        pytest.skip("no smear with two white cells in ../shared")
    pre = preprocess_file(path, clf.preprocessing)
    for k in (0, 1):
        e = explain_image(path, clf, grid=3, cell_at=(pre.cells[k].y, pre.cells[k].x))
        assert np.array_equal(e.resized, pre.model_inputs[k])
        assert panel(e).shape[0] >= 224  # a 112-pixel cell is enlarged to be read on a screen
    r = cli("explain", str(path), "--out", "/dev/null", "--cell-at", "3", check=False)
    assert r.returncode == 2 and "expected Y,X" in r.stderr


def test_a_field_racing_the_sign_off_is_never_attached_silently(tmp_path):
    """12 races of a sign-off (on the page's version) against a field arriving: each ends either refused
    ("the sample changed") with the sample still ready, or signed with the field counted as late."""
    import threading

    specs = [ws.SampleSpec(f"R{i}", 9, [0.95, 0.9]) for i in range(12)]
    db = ws.build_db(tmp_path, specs)
    outcomes = []
    with Store.open(db, device_id=ws.DEVICE) as a, Store.open(db, device_id=ws.DEVICE) as b:
        reviews.add_user(a, "rev", ws.PASSWORD, "reviewer")
        for i, spec in enumerate(specs):
            seen = a.samples.get(spec.sample_id)
            go = threading.Barrier(2)
            result = {}

            def sign(go=go, sid=spec.sample_id, version=seen.version, result=result):
                go.wait()
                try:
                    reviews.sign_off(a, "rev", sid, "malignant", version=version)
                    result["signed"] = True
                except ReviewConflict as e:
                    result["refused"] = str(e)

            t = threading.Thread(target=sign)
            t.start()
            go.wait()
            add_field(b, tmp_path, spec.sample_id, 0.02, i)
            t.join()
            now = a.samples.get(spec.sample_id)
            if "signed" in result:
                assert (now.status, now.fields, now.late_fields) == ("signed", seen.fields, 1)
                outcomes.append("late")
            else:
                assert result["refused"] == CHANGED and now.status == "ready" and now.fields == seen.fields + 1
                outcomes.append("refused")
    assert len(outcomes) == 12

"""Samples: ids, the verdict rule, aggregates kept with their fields, the ready rule, and the daemon's
subfolders (a real daemon subprocess, real folders)."""

from __future__ import annotations

import json
import sqlite3
from datetime import timedelta

import pytest
from daemon_support import DaemonProc, cli, model_path, poll, rows, write_config  # noqa: F401

from edge.imaging import synthetic
from edge.store.database import Store
from edge.store.records import ImageRecord
from edge.store.samples import SampleError, SampleRule, judge, validate_sample_id
from edge.store.schema import samples as samples_table
from edge.store.schema import utcnow

RULE = SampleRule(statistic="mean", threshold=0.5, review_band=(0.4, 0.6), min_readable=3, disagreement=0.3)


@pytest.mark.parametrize("good", ["PAT-0001", "a", "2026-11-28_smear.2", "X" * 64])
def test_valid_sample_ids(good):
    assert validate_sample_id(good) == good


@pytest.mark.parametrize("bad", ["", "..", "../etc", "a/b", ".hidden", "-x", "a..b", "Jane Doe", "X" * 65, "é"])
def test_sample_ids_with_path_tricks_are_refused(bad):
    with pytest.raises(SampleError, match="invalid sample id"):
        validate_sample_id(bad)


def test_judge_mean_rule_and_review_reasons():
    v = judge(["classified"] * 4, [0.9, 0.8, 0.95, 0.7], RULE)
    assert v.verdict == "malignant" and v.score == pytest.approx(0.8375) and not v.needs_review
    v = judge(["classified"] * 4 + ["unreadable"], [0.1, 0.2, 0.05, 0.1, None], RULE)
    assert v.verdict == "benign" and (v.fields, v.readable) == (5, 4) and not v.needs_review
    few = judge(["classified", "unreadable", "unreadable"], [0.9, None, None], RULE)
    assert few.needs_review and "only 1 readable" in few.reasons[0]
    band = judge(["classified"] * 3, [0.5, 0.45, 0.55], RULE)
    assert band.needs_review and any("review band" in r for r in band.reasons)
    split = judge(["classified"] * 3, [0.99, 0.99, 0.0], RULE)  # mean 0.66: malignant, one field says benign
    assert split.verdict == "malignant" and any("disagree" in r for r in split.reasons)
    assert judge(["classified"], [0.9], None).reasons == ["the model card has no sample rule"]


def test_quantile_and_fraction_rules():
    q = SampleRule(
        statistic="quantile", q=0.75, threshold=0.5, review_band=(0.45, 0.55), min_readable=1, disagreement=1.0
    )
    assert q.statistic_of([0.0, 0.1, 0.2, 1.0]) == pytest.approx(0.4)
    f = SampleRule(
        statistic="fraction_malignant",
        threshold=0.5,
        review_band=(0.4, 0.6),
        min_readable=1,
        disagreement=1.0,
        field_threshold=0.38,
    )
    assert f.statistic_of([0.39, 0.1, 0.9, 0.2]) == pytest.approx(0.5)
    assert SampleRule.from_card({"sample_rule": f.to_dict()}, 0.9) == f


def _rec(i: int, sample: str, score, status="classified") -> ImageRecord:
    return ImageRecord(
        path=f"/inbox/{sample}/{i}.jpg",
        sha256=f"{sample}-{i}".ljust(64, "0"),
        status=status,
        malignant_score=score,
        label="Pro-B" if score and score >= 0.5 else "Benign",
        verdict=None if score is None else ("malignant" if score >= 0.5 else "benign"),
        sample_id=sample,
    )


def test_aggregates_follow_their_fields_and_a_signed_sample_does_not_move(tmp_path):
    store = Store.open(tmp_path / "db.sqlite", device_id="dev", sample_rule=RULE)
    store.record_many([_rec(i, "PAT-1", 0.9) for i in range(3)] + [_rec(9, "PAT-2", None, "unreadable")])
    lib = store.samples
    s = lib.get("PAT-1")
    assert (s.fields, s.readable, s.status, s.verdict, s.needs_review) == (3, 3, "collecting", "malignant", False)
    assert s.score == pytest.approx(0.9)
    s2 = lib.get("PAT-2")
    assert (s2.fields, s2.readable, s2.verdict, s2.needs_review) == (1, 0, None, True)
    store.record_many([_rec(3, "PAT-1", 0.1)])  # one more field, recomputed in its own transaction
    assert lib.get("PAT-1").fields == 4 and lib.get("PAT-1").score == pytest.approx(0.7)
    with store.engine.begin() as c:  # a reviewer signed it (edge.store.reviews does this in its transaction)
        c.execute(samples_table.update().where(samples_table.c.sample_id == "PAT-1").values(status="signed"))
    store.record_many([_rec(4, "PAT-1", 0.0)])
    assert lib.get("PAT-1").fields == 4  # a late field is recorded but does not change what was signed
    assert [r.path for r in lib.fields(lib.get("PAT-1"))][0] == "/inbox/PAT-1/0.jpg"  # highest score first


def test_ready_rule_needs_enough_readable_fields_and_quiet_time(tmp_path):
    store = Store.open(tmp_path / "db.sqlite", device_id="dev", sample_rule=RULE)
    store.record_many([_rec(i, "FULL", 0.1) for i in range(3)] + [_rec(0, "THIN", 0.1)])
    lib = store.samples
    assert lib.promote_idle(min_readable=3, idle_s=60) == []  # enough fields, but the last came just now
    later = utcnow() + timedelta(seconds=61)
    assert lib.promote_idle(min_readable=3, idle_s=60, now=later) == ["FULL"]
    assert lib.get("THIN").status == "collecting"
    assert lib.close("THIN").status == "ready" and lib.get("THIN").closed_by == "manual"
    with pytest.raises(SampleError, match="no sample 'NOPE'"):
        lib.close("NOPE")
    with pytest.raises(SampleError, match="invalid sample id"):
        lib.close("../THIN")


def _samples_config(tmp_path, model_path, **daemon):
    cfg = write_config(tmp_path, model_path, **daemon)
    cfg.write_text(cfg.read_text() + "[samples]\nmin_readable = 2\nidle_s = 0.5\n")
    return cfg


def test_daemon_groups_subfolders_into_samples_moves_them_together_and_stores_where(tmp_path, model_path):
    cfg = _samples_config(
        tmp_path, model_path, after="move", done_dir=str(tmp_path / "done"), rejected_dir=str(tmp_path / "rejected")
    )
    db, inbox = tmp_path / "db.sqlite", tmp_path / "inbox"
    for folder in ("PAT-7", "Jane Doe", "PAT-8/deeper"):
        (inbox / folder).mkdir(parents=True)
    (inbox / "root.jpg").write_bytes(synthetic.smear_jpeg(0))
    (inbox / "Jane Doe" / "x.jpg").write_bytes(synthetic.smear_jpeg(5))
    (inbox / "PAT-8" / "deeper" / "y.jpg").write_bytes(synthetic.smear_jpeg(6))  # not a sample: never screened
    d = DaemonProc(cfg).wait_ready()
    try:
        (inbox / "PAT-7" / "a.jpg").write_bytes(synthetic.smear_jpeg(1))  # live, after the watch started
        (inbox / "NEW-1").mkdir()  # a folder created after start is watched too
        (inbox / "NEW-1" / "b.jpg").write_bytes(synthetic.smear_jpeg(2))
        (inbox / "PAT-7" / "c.jpg").write_bytes(synthetic.smear_jpeg(3))
        poll(lambda: len(rows(db)) >= 5, what="5 rows")
        poll(lambda: _status(db, "PAT-7") == "ready", what="PAT-7 ready after its quiet time")
    finally:
        assert d.terminate() == 0, d.output()
    by_name = {r["filename"]: r for r in rows(db)}
    assert set(by_name) == {"root.jpg", "x.jpg", "a.jpg", "b.jpg", "c.jpg"}
    assert by_name["a.jpg"]["sample_id"] == by_name["c.jpg"]["sample_id"] == "PAT-7"
    assert by_name["b.jpg"]["sample_id"] == "NEW-1"
    assert by_name["root.jpg"]["sample_id"].startswith("day-")
    assert by_name["x.jpg"]["status"] == "rejected" and "invalid sample id 'Jane Doe'" in by_name["x.jpg"]["reason"]
    # after = "move": the sample's fields stay together and every row says where its file went (issue 8, 25)
    assert by_name["a.jpg"]["moved_to"] == str(tmp_path / "done" / "PAT-7" / "a.jpg")
    assert (tmp_path / "done" / "PAT-7" / "c.jpg").is_file() and (
        tmp_path / "rejected" / "Jane Doe" / "x.jpg"
    ).is_file()
    assert all(r["moved_to"] and (tmp_path / r["moved_to"]).exists() for r in rows(db))
    out = json.loads(cli("--config", str(cfg), "samples", "--format", "json").stdout)
    pat7 = next(s for s in out if s["sample_id"] == "PAT-7")
    assert (pat7["fields"], pat7["readable"], pat7["status"]) == (2, 2, "ready")
    assert {"sample_id", "fields", "readable", "status", "verdict", "score", "needs_review"} <= set(pat7)
    assert next(s for s in out if s["sample_id"] == "NEW-1")["status"] == "collecting"  # 1 field < min_readable
    assert "ready" in cli("--config", str(cfg), "sample", "close", "NEW-1").stdout
    bad = cli("--config", str(cfg), "sample", "close", "../NEW-1", check=False)
    assert bad.returncode == 1 and "invalid sample id" in bad.stderr and "Traceback" not in bad.stderr
    table = cli("--config", str(cfg), "samples", env={"COLUMNS": "80"}).stdout
    assert "PAT-7" in table and max(len(line) for line in table.splitlines()) <= 80
    # The report: one block per sample with its fields' thumbnails read from where after=move put them.
    html = tmp_path / "r.html"
    cli("--config", str(cfg), "report", "--all", "--format", "html", "--out", str(html))
    page = html.read_text()
    block = page[page.index('id="sample-PAT-7"') :]
    block = block[: block.index('<div class="sample">')] if '<div class="sample">' in block else block
    assert block.count('alt="thumbnail"') == 2 and "file missing" not in block
    rep = json.loads(cli("--config", str(cfg), "report", "--all", "--format", "json").stdout)
    assert {s["sample_id"] for s in rep["samples"]} >= {"PAT-7", "NEW-1"}


def _status(db, sample_id):
    with sqlite3.connect(db) as c:
        row = c.execute("SELECT status FROM samples WHERE sample_id = ?", (sample_id,)).fetchone()
    return row[0] if row else None

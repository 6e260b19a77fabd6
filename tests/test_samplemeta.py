"""Patient and specimen ids per sample: sample.json (parsed strictly, read without following links, picked up
by a real daemon), `sample meta`, the database, `samples`, and the clinic export's anonymisation."""

from __future__ import annotations

import json
import os
import re
import sqlite3

import pytest
from daemon_support import DaemonProc, cli, model_path, poll, rows, write_config  # noqa: F401

from edge.export.anon import anonymizer
from edge.imaging import synthetic
from edge.store.database import Store
from edge.store.records import ImageRecord
from edge.store.reviews import add_user, sign_off
from edge.store.samplemeta import (
    MetaConflict,
    MetaError,
    apply_meta_file,
    get_meta,
    parse_meta,
    read_meta_file,
    set_meta,
    validate_identifier,
)
from edge.store.samples import SampleError, SampleRule

RULE = SampleRule(statistic="mean", threshold=0.5, review_band=(0.4, 0.6), min_readable=1, disagreement=1.0)


def _store(tmp_path, *sample_ids, device="dev"):
    store = Store.open(tmp_path / "db.sqlite", device_id=device, sample_rule=RULE)
    store.record_many(
        [
            ImageRecord(
                path=f"/inbox/{s}/0.jpg",
                sha256=s.ljust(64, "0"),
                status="classified",
                malignant_score=0.9,
                label="Pro-B",
                verdict="malignant",
                sample_id=s,
            )
            for s in sample_ids
        ]
    )
    return store


@pytest.mark.parametrize("good", ["MRN-004711", "4711", "urn:x/1.2", "A" * 64, "acc_2026.000123"])
def test_valid_identifiers(good):
    assert validate_identifier("patient", good) == good


@pytest.mark.parametrize(
    "bad, why",
    [
        ("Jane Doe", "a space is not allowed"),
        ("-1", "must start with a letter or digit"),
        ("A" * 65, "65 characters"),
        ("MRN#1", "'#' is not allowed"),
        ("Müller", "U+00FC is not allowed"),
        ("a\nb", "U+000A is not allowed"),
        ("", "empty"),
        (4711, "expected a string in quotes, got a number"),
        (True, "expected a string in quotes"),
    ],
)
def test_bad_identifiers_say_why_without_the_value(bad, why):
    with pytest.raises(MetaError, match=f"^patient: .*{re.escape(why)}") as e:
        validate_identifier("patient", bad)
    assert len(str(e.value).splitlines()) == 1
    if isinstance(bad, str) and len(bad) > 1:
        assert bad not in str(e.value)  # messages go to logs and exports: never the identifier itself


def test_sample_json_parsing():
    assert parse_meta(b'{"patient": "MRN-1", "specimen": "ACC-1"}') == {"patient_id": "MRN-1", "specimen_id": "ACC-1"}
    assert parse_meta('\ufeff{"specimen": "ACC-1"}'.encode()) == {"specimen_id": "ACC-1"}  # a BOM (Notepad)
    assert parse_meta(b'{"patient": null, "specimen": ""}') == {"patient_id": None, "specimen_id": None}
    for data, why in (
        (b'{"patient": "MRN-1",}', "not valid JSON (line 1 column 21: Expecting property name"),
        (b'["MRN-1"]', "expected an object like"),
        (b'{"patinet": "MRN-1"}', "unknown key 'patinet'"),
        (b'{"patient": 4711}', "patient: expected a string"),
        (b"\xff\xfe{}", "not UTF-8 text"),
        (b'{"patient": "Jane Doe"}', "patient: a space is not allowed"),
    ):
        with pytest.raises(MetaError, match=re.escape(why)):
            parse_meta(data)


def test_sample_json_is_read_without_following_links_or_blocking(tmp_path):
    folder = tmp_path / "S-1"
    folder.mkdir()
    secret = tmp_path / "secret.json"
    secret.write_text('{"patient": "MRN-9"}')
    (folder / "sample.json").symlink_to(secret)
    with pytest.raises(MetaError, match="is a symlink"):
        read_meta_file(folder / "sample.json")
    (folder / "sample.json").unlink()
    os.mkfifo(folder / "sample.json")  # opening a FIFO for reading would block the daemon forever
    with pytest.raises(MetaError, match="not a regular file"):
        read_meta_file(folder / "sample.json")
    (folder / "sample.json").unlink()
    (folder / "sample.json").write_text(json.dumps({"patient": "MRN-1", "x": "y" * 5000}))
    with pytest.raises(MetaError, match="more than the 4,096 a sample.json may have"):
        read_meta_file(folder / "sample.json")


def test_set_meta_stores_changes_keeps_what_is_not_named_and_never_changes_a_signed_sample(tmp_path):
    store = _store(tmp_path, "S-1", "S-2")
    with pytest.raises(SampleError, match="no sample 'S-9'"):
        set_meta(store, "S-9", {"patient_id": "MRN-1"}, "cli")
    with pytest.raises(SampleError, match="invalid sample id"):
        set_meta(store, "../S-1", {"patient_id": "MRN-1"}, "cli")
    before = store.samples.get("S-1").updated_at
    meta, changed = set_meta(store, "S-1", {"patient_id": "MRN-1", "specimen_id": "ACC-1"}, "cli")
    assert changed and (meta.patient_id, meta.specimen_id, meta.source) == ("MRN-1", "ACC-1", "cli")
    after = store.samples.get("S-1").updated_at
    assert after > before  # the clinic export sends the sample again
    meta, changed = set_meta(store, "S-1", {"specimen_id": None}, "sample.json")
    assert changed and (meta.patient_id, meta.specimen_id, meta.source) == ("MRN-1", None, "sample.json")
    meta, changed = set_meta(store, "S-1", {"patient_id": "MRN-1"}, "cli")
    assert not changed and meta.source == "sample.json"  # nothing changed: nothing rewritten
    # Signed: the ids are part of what was signed.
    set_meta(store, "S-2", {"patient_id": "MRN-2"}, "cli")
    add_user(store, "dr-smith", "a long enough password", "reviewer")
    store.samples.close("S-2")
    sign_off(store, "dr-smith", "S-2", "malignant")
    with pytest.raises(MetaConflict, match="S-2 is signed .by dr-smith.: its patient and specimen"):
        set_meta(store, "S-2", {"patient_id": "MRN-3"}, "cli")
    assert set_meta(store, "S-2", {"patient_id": "MRN-2"}, "cli")[1] is False  # the same ids again: fine
    assert get_meta(store, "S-2").patient_id == "MRN-2"


def test_a_bad_sample_json_is_recorded_and_loses_nothing(tmp_path):
    store = _store(tmp_path, "S-1")
    inbox = tmp_path / "inbox"
    (inbox / "S-1").mkdir(parents=True)
    f = inbox / "S-1" / "sample.json"
    f.write_text('{"patient": "MRN-1", "specimen": "ACC-1"}')
    assert apply_meta_file(store, f, inbox).patient_id == "MRN-1"
    f.write_text('{"patient": "MRN-2", specimen: "ACC-2"}')
    assert apply_meta_file(store, f, inbox) is None
    m = get_meta(store, "S-1")
    assert (m.patient_id, m.specimen_id) == ("MRN-1", "ACC-1")  # what was stored stays
    assert m.error.startswith("sample.json: not valid JSON (line 1 column 22") and "\n" not in m.error
    f.write_text('{"patient": "MRN-2"}')
    m = apply_meta_file(store, f, inbox)
    assert (m.patient_id, m.specimen_id, m.error) == ("MRN-2", "ACC-1", None)  # corrected: used, reason gone
    # A sample.json that comes before the sample's first field makes the (empty) sample.
    (inbox / "S-NEW").mkdir()
    (inbox / "S-NEW" / "sample.json").write_text('{"specimen": "ACC-7"}')
    assert apply_meta_file(store, inbox / "S-NEW" / "sample.json", inbox).specimen_id == "ACC-7"
    s = store.samples.get("S-NEW")
    assert (s.fields, s.status) == (0, "collecting")


def test_anonymised_export_rows_hash_the_ids_alike():
    anon = anonymizer(b"k")
    a = anon({"sample_id": "S-1", "patient_id": "MRN-1", "specimen_id": "ACC-1", "device_id": "d"}, "samples")
    b = anon({"sample_id": "S-2", "patient_id": "MRN-1", "specimen_id": None, "device_id": "d"}, "samples")
    assert a["patient_id"] == b["patient_id"] and a["patient_id"].startswith("anon-") and "MRN" not in a["patient_id"]
    assert a["specimen_id"].startswith("anon-") and b["specimen_id"] is None


def test_sample_meta_command_and_samples_show_the_ids(tmp_path, model_path):
    cfg = write_config(tmp_path, model_path)
    _store(tmp_path, "S-1", "S-2", device="test-device").close()
    c = ("--config", str(cfg))
    out = cli(*c, "sample", "meta", "S-1", "--patient", "MRN-004711", "--specimen", "ACC-2026-000123").stdout
    assert out.strip() == "sample S-1: patient MRN-004711, specimen ACC-2026-000123 (from cli)"
    assert cli(*c, "sample", "meta", "S-1").stdout.startswith("sample S-1: patient MRN-004711, specimen ACC-2026")
    bad = cli(*c, "sample", "meta", "S-1", "--patient", "Jane Doe", check=False)
    assert bad.returncode == 2
    assert bad.stderr.strip().endswith("--patient: a space is not allowed (use A-Z a-z 0-9 . _ - : /)")
    assert "Jane" not in bad.stderr and len(bad.stderr.strip().splitlines()) == 1
    unknown = cli(*c, "sample", "meta", "S-9", "--patient", "MRN-1", check=False)
    assert unknown.returncode == 1 and "no sample 'S-9'" in unknown.stderr and "Traceback" not in unknown.stderr
    assert cli(*c, "sample", "meta", "S-9", check=False).returncode == 1
    js = {s["sample_id"]: s for s in json.loads(cli(*c, "samples", "--format", "json").stdout)}
    assert (js["S-1"]["patient_id"], js["S-1"]["specimen_id"], js["S-1"]["meta_source"]) == (
        "MRN-004711",
        "ACC-2026-000123",
        "cli",
    )
    assert (js["S-2"]["patient_id"], js["S-2"]["meta_error"]) == (None, None)
    table = cli(*c, "samples", env={"COLUMNS": "80"}).stdout
    assert "patient MRN-004711" in table and max(len(line) for line in table.splitlines()) <= 80
    assert "--patient" in cli(*c, "sample", "meta", "--help").stdout
    cleared = cli(*c, "sample", "meta", "S-1", "--specimen", "").stdout
    assert "specimen -" in cleared and "patient MRN-004711" in cleared


def _sample(db, sample_id):
    with sqlite3.connect(db) as c:
        c.row_factory = sqlite3.Row
        row = c.execute("SELECT * FROM samples WHERE sample_id = ?", (sample_id,)).fetchone()
    return dict(row) if row else None


def test_daemon_reads_sample_json_beside_the_fields(tmp_path, model_path):
    cfg = write_config(tmp_path, model_path)
    db, inbox = tmp_path / "db.sqlite", tmp_path / "inbox"
    (inbox / "PAT-1").mkdir(parents=True)
    (inbox / "PAT-1" / "sample.json").write_text('{"patient": "MRN-1", "specimen": "ACC-1"}')  # before start
    (inbox / "PAT-1" / "a.jpg").write_bytes(synthetic.smear_jpeg(1))
    d = DaemonProc(cfg).wait_ready()
    try:
        poll(lambda: (_sample(db, "PAT-1") or {}).get("patient_id") == "MRN-1", what="PAT-1's sample.json")
        (inbox / "PAT-2").mkdir()
        (inbox / "PAT-2" / "b.jpg").write_bytes(synthetic.smear_jpeg(2))
        (inbox / "PAT-2" / "sample.json").write_text('{"patient": "MRN-2", "specimen": ACC-2}')  # malformed, live
        poll(lambda: (_sample(db, "PAT-2") or {}).get("meta_error"), what="PAT-2's reason")
        (inbox / "PAT-3").mkdir()  # identifiers before any field: the sample exists from then on
        (inbox / "PAT-3" / "sample.json").write_text('{"specimen": "ACC-3"}')
        poll(lambda: (_sample(db, "PAT-3") or {}).get("specimen_id") == "ACC-3", what="PAT-3's sample.json")
        poll(lambda: len(rows(db)) >= 2, what="2 fields")
        assert _sample(db, "PAT-2")["meta_error"].startswith("sample.json: not valid JSON")
        assert _sample(db, "PAT-2")["patient_id"] is None
        # Corrected in place (an editor's save, then an atomic rename): used, the reason cleared.
        tmp = inbox / "PAT-2" / ".sample.json.tmp"
        tmp.write_text('{"patient": "MRN-2", "specimen": "ACC-2"}')
        tmp.rename(inbox / "PAT-2" / "sample.json")
        poll(lambda: (_sample(db, "PAT-2") or {}).get("patient_id") == "MRN-2", what="PAT-2 corrected")
        assert _sample(db, "PAT-2")["meta_error"] is None
    finally:
        assert d.terminate() == 0, d.output()
    assert sorted(r["filename"] for r in rows(db)) == ["a.jpg", "b.jpg"]  # sample.json is never a field
    assert _sample(db, "PAT-1")["fields"] == 1 and _sample(db, "PAT-3")["fields"] == 0
    assert "PAT-2: sample.json not used, the identifiers stay as they were: not valid JSON" in d.output()
    assert "MRN-2" not in d.output() and "ACC-1" not in d.output()  # the log names no patient


def test_ids_travel_to_the_clinic_database_and_a_later_change_follows(tmp_path):
    from edge.export.merge import export_to

    store = _store(tmp_path, "S-1")
    set_meta(store, "S-1", {"patient_id": "MRN-1"}, "cli")
    export_to(store, tmp_path / "clinic.sqlite")
    set_meta(store, "S-1", {"specimen_id": "ACC-1"}, "sample.json")
    s = export_to(store, tmp_path / "clinic.sqlite")
    assert s.samples_updated == 1 and not s.conflicts
    clinic = Store.open(tmp_path / "clinic.sqlite", device_id="dev")
    m = get_meta(clinic, "S-1")
    assert (m.patient_id, m.specimen_id, m.source) == ("MRN-1", "ACC-1", "sample.json")
    clinic.close()
    export_to(store, tmp_path / "anon.sqlite", anonymize_key=b"k")
    with sqlite3.connect(tmp_path / "anon.sqlite") as c:
        pid, spec = c.execute("SELECT patient_id, specimen_id FROM samples").fetchone()
    assert pid.startswith("anon-") and spec.startswith("anon-") and "MRN" not in pid


def test_only_a_sample_folder_s_sample_json_is_metadata(tmp_path):
    from edge.daemon.watcher import backlog
    from edge.store.samplemeta import is_meta_file, meta_files

    inbox = tmp_path / "inbox"
    for folder in ("S-1", "S-2", ".hidden"):
        (inbox / folder).mkdir(parents=True)
    (inbox / "S-1" / "Sample.JSON").write_text("{}")  # from a Windows share
    (inbox / ".hidden" / "sample.json").write_text("{}")
    (inbox / "sample.json").write_text("{}")  # at the root: an ordinary file (screened, refused as no image)
    (inbox / "S-2" / "a.jpg").write_bytes(b"x")
    assert is_meta_file(inbox / "S-1" / "Sample.JSON", inbox) and not is_meta_file(inbox / "sample.json", inbox)
    assert not is_meta_file(inbox / "S-1" / "deeper" / "sample.json", inbox)
    assert meta_files(inbox) == [inbox / "S-1" / "Sample.JSON"]
    # Not in the backlog (`status` counts it, the daemon screens it): the daemon reads it as metadata.
    assert sorted(backlog(inbox)) == [inbox / "S-2" / "a.jpg", inbox / "sample.json"]
    # A sample folder that is a symlink to elsewhere: its sample.json is not read.
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "sample.json").write_text('{"patient": "MRN-9"}')
    (inbox / "S-3").symlink_to(elsewhere)
    assert meta_files(inbox) == [inbox / "S-1" / "Sample.JSON"]
    store = _store(tmp_path, "S-3")
    assert apply_meta_file(store, inbox / "S-3" / "sample.json", inbox) is None
    m = get_meta(store, "S-3")
    assert m.patient_id is None and m.error == "sample.json: the sample folder is a symlink"

"""`export --format fhir`: one valid FHIR R4 Bundle per sample, preliminary until signed."""

import json
import sys

import pytest
from conftest import ImageRecord
from test_export import cli
from test_export_samples import KEY, add_fields, device, make_v2

from edge.export.fhir import FhirSystems, export_fhir
from edge.export.fhir_bundle import FIELD_CODE, SHA256_SYSTEM, VERDICT_CODE
from edge.export.fhir_codes import V3_INTERPRETATION as V3
from edge.export.merge import ExportError
from edge.store.reviews import add_user, review_field, sign_off
from edge.store.samplemeta import set_meta
from edge.store.schema import images

fhir_bundle = pytest.importorskip(
    "fhir.resources.R4B.bundle", reason="fhir.resources is not installed (pip install -e '.[fhir]' or '.[test]')"
)
Bundle = fhir_bundle.Bundle


@pytest.fixture
def clinic(tmp_path):
    """A device with a collecting sample (one unreadable field) and a signed one with a field review."""
    store, run_id, model_id = device(tmp_path)
    add_fields(store, "S-COLLECT", [0, 1, 6], run_id, model_id)  # 6: unreadable (out of focus)
    ids = add_fields(store, "S-SIGNED", [14, 15, 16, 17], run_id, model_id)
    # Through the review library, as the review app does it (a user, a field review, a sign-off).
    add_user(store, "dr-smith", "a long enough password", "reviewer")
    review_field(store, "dr-smith", ids[2], "Pro-B", comment="Jane Doe's smear")
    store.samples.close("S-SIGNED")
    sign_off(store, "dr-smith", "S-SIGNED", "malignant", final_label="Pro-B")
    yield store, ids
    store.close()


def resources(bundle, kind):
    return [e.resource for e in bundle.entry if e.resource.get_resource_type() == kind]


def test_one_valid_bundle_per_sample(clinic, tmp_path):
    store, ids = clinic
    seen = []
    s = export_fhir(store, tmp_path / "fhir", progress=lambda done, total: seen.append((done, total)))
    assert (s.bundles, sorted(s.files)) == (2, ["S-COLLECT.json", "S-SIGNED.json"])
    assert seen[-1] == (2, 2)
    sha = "ab" * 32
    for name, status, n_fields in (("S-COLLECT", "preliminary", 3), ("S-SIGNED", "final", 4)):
        path = tmp_path / "fhir" / f"{name}.json"
        b = Bundle.model_validate_json(path.read_text())
        assert b.type == "collection"
        sample = store.samples.get(name)
        full_urls = {e.fullUrl for e in b.entry}
        assert f"urn:uuid:{sample.id}" in full_urls
        [report] = resources(b, "DiagnosticReport")
        assert report.status == status
        assert report.identifier[0].value == f"dev-a/{name}"
        assert {r.reference for r in report.result} <= full_urls  # every reference resolves in the bundle
        obs = resources(b, "Observation")
        fields = [o for o in obs if o.code.text == FIELD_CODE]
        verdicts = [o for o in obs if o.code.text == VERDICT_CODE]
        assert len(fields) == n_fields == sample.fields and len(verdicts) == 1
        assert len(report.result) == n_fields + 1
        assert {o.status for o in obs} == {status}
        [dev] = resources(b, "Device")
        assert [(i.system, i.value) for i in dev.identifier] == [(SHA256_SYSTEM, sha)]
        assert dev.version[0].value == "2.0.0" and dev.deviceName[0].name == "edge-screen-mnv2-int8"
        for o in fields:
            assert f"urn:uuid:{o.id}" in full_urls
            if o.valueCodeableConcept is not None:  # classified: the class, its probabilities, the model
                assert o.device.reference == f"urn:uuid:{dev.id}"
                comps = {c.code.text: c.valueQuantity.value for c in o.component}
                assert "malignant score" in comps and len(comps) == 5
            else:
                assert o.dataAbsentReason.text.startswith("unreadable: out of focus") and o.device is None
        verdict = verdicts[0]
        assert verdict.valueCodeableConcept.text == (sample.final_verdict or sample.verdict)
        assert (sample.verdict or "no verdict") in report.conclusion
    signed = Bundle.model_validate_json((tmp_path / "fhir" / "S-SIGNED.json").read_text())
    [report] = resources(signed, "DiagnosticReport")
    assert report.performer[0].display == "dr-smith" and "signed by dr-smith" in report.conclusion
    reviewed = next(o for o in resources(signed, "Observation") if o.id == ids[2])
    assert "reviewer's label: Pro-B" in reviewed.note[0].text
    collecting = Bundle.model_validate_json((tmp_path / "fhir" / "S-COLLECT.json").read_text())
    assert not resources(collecting, "DiagnosticReport")[0].performer
    flagged = [
        o
        for o in resources(collecting, "Observation")
        if o.interpretation and o.interpretation[0].coding[0].code == "IND"
    ]
    assert flagged and all(
        [(c.system, c.code) for c in o.interpretation[0].coding] == [(V3, "IND"), ("urn:edge-screen", "needs-review")]
        for o in flagged
    )
    # The same database exported again gives the same files (stable ids, no export time inside).
    before = {p.name: p.read_text() for p in (tmp_path / "fhir").iterdir()}
    export_fhir(store, tmp_path / "fhir")
    assert {p.name: p.read_text() for p in (tmp_path / "fhir").iterdir()} == before


def test_anonymized_bundles(clinic, tmp_path):
    store, _ = clinic
    s = export_fhir(store, tmp_path / "fhir", anonymize_key=KEY)
    assert s.bundles == 2 and all(f.startswith("anon-") for f in s.files)
    for p in (tmp_path / "fhir").iterdir():
        text = p.read_text()
        for secret in ("S-SIGNED", "S-COLLECT", "dr-smith", "Jane", "dev-a", "/inbox"):
            assert secret not in text, secret
        b = Bundle.model_validate_json(text)
        [report] = resources(b, "DiagnosticReport")
        assert report.identifier[0].value.split("/")[1] + ".json" == p.name


def test_duplicates_are_not_fields_and_old_databases_have_no_samples(clinic, tmp_path):
    store, ids = clinic
    with store.engine.connect() as c:
        first = c.execute(images.select().where(images.c.id == ids[0])).one()
    store.record_many(
        [
            ImageRecord(
                path="/inbox/S-SIGNED/copy.jpg",
                sha256=first.sha256,
                status="duplicate",
                duplicate_of=first.id,
                sample_id="S-SIGNED",
            )
        ]
    )
    export_fhir(store, tmp_path / "fhir")
    b = Bundle.model_validate_json((tmp_path / "fhir" / "S-SIGNED.json").read_text())
    assert len([o for o in resources(b, "Observation") if o.code.text == FIELD_CODE]) == 4
    make_v2(tmp_path / "old.sqlite")
    assert export_fhir(tmp_path / "old.sqlite", tmp_path / "old-fhir").bundles == 0


def test_bad_out_and_missing_package_give_one_line(clinic, tmp_path, monkeypatch):
    store, _ = clinic
    a_file = tmp_path / "not-a-folder"
    a_file.write_text("x")
    with pytest.raises(ExportError, match="is a file, not a folder"):
        export_fhir(store, a_file)
    cfg = tmp_path / "c.toml"
    cfg.write_text(f'[database]\nurl = "sqlite:///{tmp_path}/dev-a.sqlite"\n[daemon]\ndevice_id = "dev-a"\n')
    r = cli("export", "--config", str(cfg), "--format", "fhir", "--out", str(a_file))
    assert r.exit_code == 1 and "is a file, not a folder" in r.output
    assert len(r.output.strip().splitlines()) == 1, r.output
    r = cli("export", "--config", str(cfg), "--format", "fhir")
    assert r.exit_code == 2 and "--out" in r.output
    r = cli("export", "--config", str(cfg), "--format", "fhir", "--out", str(tmp_path / "ok"))
    assert r.exit_code == 0 and "wrote 2 FHIR bundles (9 observations)" in r.output
    # Without the extra installed: one line naming it, and no folder made.
    for mod in [m for m in sys.modules if m == "fhir" or m.startswith("fhir.")]:
        monkeypatch.delitem(sys.modules, mod)
    monkeypatch.setitem(sys.modules, "fhir", None)
    r = cli("export", "--config", str(cfg), "--format", "fhir", "--out", str(tmp_path / "none"))
    assert r.exit_code == 1 and "pip install 'edge-screen[fhir]'" in r.output
    assert len(r.output.strip().splitlines()) == 1 and not (tmp_path / "none").exists()
    assert json.loads((tmp_path / "ok" / "S-COLLECT.json").read_text())["resourceType"] == "Bundle"


def test_the_same_sample_id_from_two_devices_gets_two_files(tmp_path):
    from edge.export.merge import merge

    for dev in ("dev-a", "dev-b"):
        store, run_id, model_id = device(tmp_path, dev)
        add_fields(store, "S-1", [0, 1], run_id, model_id)
        store.close()
    merge([tmp_path / "dev-a.sqlite", tmp_path / "dev-b.sqlite"], tmp_path / "clinic.sqlite")
    s = export_fhir(tmp_path / "clinic.sqlite", tmp_path / "fhir")
    assert sorted(s.files) == ["dev-a__S-1.json", "dev-b__S-1.json"]
    for name in s.files:
        b = Bundle.model_validate_json((tmp_path / "fhir" / name).read_text())
        assert resources(b, "DiagnosticReport")[0].identifier[0].value == name.replace("__", "/")[:-5]


# ------------------------------------------------------------------------- patient, specimen and codes
def _codes(node, path=""):
    """Every (path, code) of every Coding and Quantity in a bundle's JSON."""
    if isinstance(node, dict):
        if "code" in node and isinstance(node["code"], str):
            yield path, node["code"]
        for k, v in node.items():
            yield from _codes(v, f"{path}.{k}")
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from _codes(v, f"{path}[{i}]")


@pytest.fixture
def lab(tmp_path):
    """Three samples: two from one patient (one signed), one with nothing known about who it is from."""
    store, run_id, model_id = device(tmp_path)
    add_fields(store, "S-A", [0, 1, 2], run_id, model_id)
    ids = add_fields(store, "S-B", [14, 15, 16, 17], run_id, model_id)
    add_fields(store, "S-NONE", [3, 4], run_id, model_id)
    set_meta(store, "S-A", {"patient_id": "MRN-004711", "specimen_id": "ACC-2026-000123"}, "cli")
    set_meta(store, "S-B", {"patient_id": "MRN-004711"}, "sample.json")
    add_user(store, "dr-smith", "a long enough password", "reviewer")
    store.samples.close("S-B")
    sign_off(store, "dr-smith", "S-B", "malignant", final_label="Early Pre-B")
    yield store, ids
    store.close()


def test_patient_and_specimen_become_subject_and_specimen(lab, tmp_path):
    store, _ = lab
    systems = FhirSystems(patient="urn:oid:1.2.276.0.76.4.8", specimen="https://lab.example/accession")
    export_fhir(store, tmp_path / "fhir", systems=systems)
    a = Bundle.model_validate_json((tmp_path / "fhir" / "S-A.json").read_text())
    full_urls = {e.fullUrl for e in a.entry}
    [patient] = resources(a, "Patient")
    [specimen] = resources(a, "Specimen")
    assert [(i.system, i.value) for i in patient.identifier] == [(systems.patient, "MRN-004711")]
    assert (specimen.accessionIdentifier.system, specimen.accessionIdentifier.value) == (
        systems.specimen,
        "ACC-2026-000123",
    )
    assert [(c.system, c.code) for c in specimen.type.coding] == [("http://snomed.info/sct", "119297000")]
    assert specimen.subject.reference == f"urn:uuid:{patient.id}"
    [report] = resources(a, "DiagnosticReport")
    assert report.subject.reference == f"urn:uuid:{patient.id}" and report.subject.identifier.value == "MRN-004711"
    assert [r.reference for r in report.specimen] == [f"urn:uuid:{specimen.id}"]
    obs = resources(a, "Observation")
    assert len(obs) == 4  # the verdict and three fields: every one says whose and which specimen
    assert all(
        o.subject.reference == f"urn:uuid:{patient.id}" and o.specimen.reference == f"urn:uuid:{specimen.id}"
        for o in obs
    )
    assert {f"urn:uuid:{patient.id}", f"urn:uuid:{specimen.id}"} <= full_urls  # references resolve in the bundle
    # The same patient in another sample's bundle is the same Patient (a server files one patient);
    # a sample with a patient and no specimen has no Specimen and no specimen references.
    b = Bundle.model_validate_json((tmp_path / "fhir" / "S-B.json").read_text())
    assert [p.id for p in resources(b, "Patient")] == [patient.id] and not resources(b, "Specimen")
    [report_b] = resources(b, "DiagnosticReport")
    assert report_b.subject.reference == f"urn:uuid:{patient.id}" and not report_b.specimen
    assert all(o.specimen is None for o in resources(b, "Observation"))
    # Nothing known: no subject, as before.
    n = Bundle.model_validate_json((tmp_path / "fhir" / "S-NONE.json").read_text())
    assert not resources(n, "Patient") and not resources(n, "Specimen")
    assert resources(n, "DiagnosticReport")[0].subject is None
    assert all(o.subject is None for o in resources(n, "Observation"))


def test_standard_codes_conclusion_codes_and_no_spaces_in_codes(lab, tmp_path):
    store, _ = lab
    export_fhir(store, tmp_path / "fhir")
    for name in ("S-A", "S-B", "S-NONE"):
        text = (tmp_path / "fhir" / f"{name}.json").read_text()
        b = Bundle.model_validate_json(text)
        codes = list(_codes(json.loads(text)))
        spaced = [(p, c) for p, c in codes if any(ch.isspace() for ch in c)]
        assert not spaced, spaced
        [report] = resources(b, "DiagnosticReport")
        [verdict] = [o for o in resources(b, "Observation") if o.code.text == VERDICT_CODE]
        for concept in (report.code, verdict.code):  # LOINC "Blood smear finding ... by Light microscopy"
            assert ("http://loinc.org", "5909-7") in [(c.system, c.code) for c in concept.coding]
        sample = store.samples.get(name)
        final = sample.final_verdict or sample.verdict
        concl = [(c.system, c.code) for cc in report.conclusionCode for c in cc.coding]
        assert ("urn:edge-screen:verdict", final) in concl
        review = sample.needs_review and sample.status != "signed"
        assert ((V3, "IND") in concl) == review
        # the verdict's HL7 interpretation: IND while it needs review, else A (malignant) / N (benign)
        want = "IND" if review else {"malignant": "A", "benign": "N"}[final]
        assert verdict.interpretation[0].coding[0].system == V3 and verdict.interpretation[0].coding[0].code == want
    signed = json.loads((tmp_path / "fhir" / "S-B.json").read_text())
    report = next(e["resource"] for e in signed["entry"] if e["resource"]["resourceType"] == "DiagnosticReport")
    assert {"system": "urn:edge-screen:label", "code": "early-pre-b", "display": "Early Pre-B"} in [
        c for cc in report["conclusionCode"] for c in cc["coding"]
    ]
    comps = {c["code"]["coding"][0]["code"] for e in signed["entry"] for c in e["resource"].get("component", [])}
    assert {"probability-early-pre-b", "probability-pre-b", "malignant-score", "readable-fields"} <= comps


def test_anonymized_bundles_hide_patient_and_specimen(lab, tmp_path):
    store, _ = lab
    export_fhir(
        store,
        tmp_path / "fhir",
        anonymize_key=KEY,
        systems=FhirSystems(patient="urn:oid:1.2.3", specimen="urn:oid:1.2.4"),
    )
    texts = [p.read_text() for p in (tmp_path / "fhir").iterdir()]
    patients = set()
    for text in texts:
        for secret in ("MRN-004711", "ACC-2026-000123", "urn:oid:1.2.3"):
            assert secret not in text, secret
        b = Bundle.model_validate_json(text)
        for p in resources(b, "Patient"):
            assert p.identifier[0].system == "urn:edge-screen:anon-patient"
            assert p.identifier[0].value.startswith("anon-")
            patients.add(p.id)
    assert len(patients) == 1  # the two samples of one patient still share one (pseudonymous) Patient


def test_export_takes_identifier_systems_from_the_config(lab, tmp_path):
    store, _ = lab
    base = (
        f'[database]\nurl = "sqlite:///{tmp_path}/dev-a.sqlite"\n[daemon]\ndevice_id = "dev-a"\n'
        '[export]\npatient_system = "https://hospital.example/mrn"\n'
    )
    cfg = tmp_path / "c.toml"
    cfg.write_text(base)
    r = cli("export", "--config", str(cfg), "--format", "fhir", "--out", str(tmp_path / "out"))
    assert r.exit_code == 0, r.output
    b = Bundle.model_validate_json((tmp_path / "out" / "S-A.json").read_text())
    assert resources(b, "Patient")[0].identifier[0].system == "https://hospital.example/mrn"
    assert resources(b, "Specimen")[0].accessionIdentifier.system == "urn:edge-screen:specimen"  # the default
    cfg.write_text(base.replace("https://hospital.example/mrn", "hospital mrn"))
    r = cli("export", "--config", str(cfg), "--format", "fhir", "--out", str(tmp_path / "bad"))
    assert r.exit_code == 2 and "export.patient_system: expected an absolute URI" in r.output
    assert not (tmp_path / "bad").exists()

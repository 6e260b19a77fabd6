"""The FHIR R4 Bundle of one sample, as plain JSON-able dicts (written by :mod:`edge.export.fhir`).

Bundle layout (type ``collection``)::

    DiagnosticReport   the sample: preliminary until signed, final after; code LOINC 5909-7; conclusion =
                       verdict and score, conclusionCode = the same coded; performer = the signer; subject
                       -> Patient, specimen -> Specimen when known; result -> the observations below
    Observation        the sample verdict, LOINC 5909-7 (value = verdict, components = score and field
                       counts; interpretation = HL7 v3 A/N, or IND while it needs review)
    Observation  xN    one per field (value = predicted class; components = malignant score and per-class
                       probabilities; note = a reviewer's label; interpretation = IND when it needs review)
    Patient, Specimen  only when the sample has a patient or specimen id (edge/store/samplemeta.py): identifier
                       only (system from [export] patient_system / specimen_system); Specimen type SNOMED
                       CT 119297000 "Blood specimen", its accessionIdentifier the laboratory's id
    Device       xM    the model(s) that read the fields: name, card version, sha256 as identifier

``collection``, not ``document``: a document is an attested, immutable composition (a Composition first,
an author, a subject), and most samples leave the device before anyone signed them; the report's own
status (preliminary/final) says how far it got. The device never knows a patient by itself: without a
patient id given for the sample there is no subject, and the sample id is the link the clinic's systems
hold (DiagnosticReport.identifier = device_id/sample_id).

Codes: a standard code where one means what we report (LOINC 5909-7 "Blood smear finding [Identifier] in
Blood by Light microscopy" for the report and the sample verdict; HL7 v3 ObservationInterpretation for
normal/abnormal/needs review), our own ``urn:edge-screen`` codes beside or instead of it for what no
terminology has (a model's per-field class and probabilities). Codes never hold spaces ("early-pre-b").

fullUrls are ``urn:uuid:<row id>`` (samples.id, images.id, models.id), so the same sample exported twice
gives the same references, and a bundle re-sent after a sign-off replaces the preliminary one in a server
that keys on them.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Dict, List, Optional

from edge.export.fhir_codes import DEFAULT_SYSTEMS, FhirSystems, interpretation, slug, smear_finding, who
from edge.vocabulary import SampleStatus, Status

SYSTEM = "urn:edge-screen"  # our own code systems and identifiers: no registered terminology has them
LABEL_SYSTEM = f"{SYSTEM}:label"
VERDICT_SYSTEM = f"{SYSTEM}:verdict"
SAMPLE_SYSTEM = f"{SYSTEM}:sample"
SHA256_SYSTEM = f"{SYSTEM}:model-sha256"
UCUM = "http://unitsofmeasure.org"
OBS_CATEGORY = "http://terminology.hl7.org/CodeSystem/observation-category"
DATA_ABSENT = "http://terminology.hl7.org/CodeSystem/data-absent-reason"
FIELD_CODE = "blast classification of field"
VERDICT_CODE = "blood smear sample verdict"
# uuid5 namespace for the one resource without a row of its own (the verdict observation): stable ids.
NAMESPACE = uuid.UUID("6c1b0a8e-5f0e-4c3e-9a55-2f1d8d6b7e10")


@dataclass
class SampleData:
    """What one bundle is made of, already anonymised when asked."""

    sample: dict
    fields: List[dict]
    reviews: List[dict]
    models: Dict[str, dict]  # model row id -> models row (card parsed into "card_dict")


def _ts(t: Optional[datetime]) -> Optional[str]:
    return t.isoformat() if t is not None else None


def _ref(uid: str) -> dict:
    return {"reference": f"urn:uuid:{uid}"}


def _concept(text: str, code: Optional[str] = None, system: str = SYSTEM) -> dict:
    c: dict = {"text": text}
    if code:
        c["coding"] = [{"system": system, "code": code, "display": text}]
    return c


def _ratio(text: str, value: float, code: str) -> dict:
    return {"code": _concept(text, code), "valueQuantity": {"value": value, "unit": "1", "system": UCUM, "code": "1"}}


def _label(label: str) -> dict:
    return _concept(label, slug(label), LABEL_SYSTEM)


def _needs_review(reasons: List[str]) -> dict:
    return interpretation("IND", "needs review" + (": " + "; ".join(reasons) if reasons else ""), "needs-review")


def _verdict_interpretation(verdict: Optional[str]) -> Optional[dict]:
    return {
        "malignant": interpretation("A", "malignant: blasts suspected"),
        "benign": interpretation("N", "benign: no blasts suspected"),
    }.get(verdict or "")


def _note(r: dict) -> dict:
    what = [f"{r['kind']} review by {r['reviewer']}"]
    if r.get("reviewer_label"):
        what.append(f"reviewer's label: {r['reviewer_label']}")
    if r.get("reviewer_verdict"):
        what.append(f"reviewer's verdict: {r['reviewer_verdict']}")
    if r.get("comment"):
        what.append(r["comment"])
    return {"authorString": r["reviewer"], "time": _ts(r["created_at"]), "text": "; ".join(what)}


def _device(m: dict) -> dict:
    card = m.get("card_dict") or {}
    d: dict = {
        "resourceType": "Device",
        "id": m["id"],
        "status": "active",
        "identifier": [{"system": SHA256_SYSTEM, "value": m["sha256"]}],
        "deviceName": [{"name": m["name"], "type": "model-name"}],
        "type": _concept("blood-smear screening model (int8 TFLite)"),
    }
    if card.get("version"):
        d["version"] = [{"value": str(card["version"])}]
    return d


def _model_of(row: dict, data: SampleData) -> Optional[str]:
    """The models row id behind a field or the sample (by id, else by sha256: `classify` rows may lack one)."""
    if row.get("model_id") in data.models:
        return row["model_id"]
    return next((k for k, m in data.models.items() if m["sha256"] == row.get("model_sha256")), None)


def _field(img: dict, status: str, notes: List[dict], model: Optional[str], refs: dict) -> dict:
    o: dict = {
        "resourceType": "Observation",
        "id": img["id"],
        "status": status,
        "category": [{"coding": [{"system": OBS_CATEGORY, "code": "laboratory"}]}],
        "code": _concept(FIELD_CODE, "field-classification"),
        **refs,
        "identifier": [{"system": f"{SYSTEM}:image-sha256", "value": img["sha256"]}],
        "effectiveDateTime": _ts(img["capture_time"] or img["recorded_at"]),
        "issued": _ts(img["recorded_at"]),
    }
    if img["status"] == Status.CLASSIFIED and img["label"]:
        o["valueCodeableConcept"] = _label(img["label"])
        comps = []
        if img["malignant_score"] is not None:
            comps.append(_ratio("malignant score", img["malignant_score"], "malignant-score"))
        probs = json.loads(img["probabilities"]) if img["probabilities"] else {}
        comps += [
            _ratio(f"probability of {lab}", float(p), f"probability-{slug(lab)}") for lab, p in sorted(probs.items())
        ]
        if comps:
            o["component"] = comps
    else:
        o["dataAbsentReason"] = {
            "coding": [{"system": DATA_ABSENT, "code": "error"}],
            "text": f"{img['status']}: {img['reason'] or 'no result'}",
        }
    if model:
        o["device"] = _ref(model)
    if img["needs_review"]:
        o["interpretation"] = [_needs_review([])]
    if notes:
        o["note"] = notes
    return o


def build_bundle(data: SampleData, systems: FhirSystems = DEFAULT_SYSTEMS) -> dict:
    """The bundle for one sample as plain JSON-able dicts (validated by :func:`export_fhir`)."""
    s = data.sample
    signed = s["status"] == SampleStatus.SIGNED
    status = "final" if signed else "preliminary"
    subject = who(s, systems)
    refs = {k: v for k, v in (("subject", subject.subject), ("specimen", subject.specimen)) if v}
    by_image: Dict[str, List[dict]] = {}
    for r in data.reviews:
        if r["image_id"]:
            by_image.setdefault(r["image_id"], []).append(_note(r))
    sample_notes = [_note(r) for r in data.reviews if not r["image_id"]]
    used = {}
    fields = []
    for img in data.fields:
        m = _model_of(img, data)
        if m:
            used[m] = data.models[m]
        fields.append(_field(img, status, by_image.get(img["id"], []), m, refs))
    sm = _model_of(s, data)
    if sm:
        used[sm] = data.models[sm]

    verdict = s["final_verdict"] if signed and s["final_verdict"] else s["verdict"]
    vid = str(uuid.uuid5(NAMESPACE, f"verdict:{s['id']}"))
    v: dict = {
        "resourceType": "Observation",
        "id": vid,
        "status": status,
        "category": [{"coding": [{"system": OBS_CATEGORY, "code": "laboratory"}]}],
        "code": smear_finding(VERDICT_CODE, "sample-verdict"),
        **refs,
        "effectiveDateTime": _ts(s["last_field_at"] or s["created_at"]),
        "issued": _ts(s["updated_at"]),
        "component": [
            {"code": _concept("fields", "fields"), "valueInteger": int(s["fields"] or 0)},
            {"code": _concept("readable fields", "readable-fields"), "valueInteger": int(s["readable"] or 0)},
        ],
        "derivedFrom": [_ref(f["id"]) for f in fields],
    }
    if verdict:
        v["valueCodeableConcept"] = _concept(verdict, verdict, VERDICT_SYSTEM)
    else:
        v["dataAbsentReason"] = {
            "coding": [{"system": DATA_ABSENT, "code": "unknown"}],
            "text": "no verdict: " + ("; ".join(_reasons(s)) or "no readable field"),
        }
    if s["score"] is not None:
        v["component"].insert(0, _ratio("sample malignant score", s["score"], "sample-malignant-score"))
    rule = json.loads(s["rule"]) if s.get("rule") else None
    if rule:
        v["method"] = {"text": f"sample rule: {rule.get('statistic')} of field scores >= {rule.get('threshold')}"}
    review = bool(s["needs_review"]) and not signed
    judged = _needs_review(_reasons(s)) if review else _verdict_interpretation(verdict)
    if judged:
        v["interpretation"] = [judged]
    if sm:
        v["device"] = _ref(sm)
    if sample_notes:
        v["note"] = sample_notes

    report: dict = {
        "resourceType": "DiagnosticReport",
        "id": s["id"],
        "status": status,
        "identifier": [{"system": SAMPLE_SYSTEM, "value": f"{s['device_id']}/{s['sample_id']}"}],
        "category": [
            {
                "coding": [
                    {"system": "http://terminology.hl7.org/CodeSystem/v2-0074", "code": "HM", "display": "Hematology"}
                ]
            }
        ],
        "code": smear_finding(
            "blood smear screening for B-ALL blasts (screening aid, not a diagnosis)", "blast-screening"
        ),
        "effectiveDateTime": _ts(s["last_field_at"] or s["created_at"]),
        "issued": _ts(s["signed_at"] if signed and s["signed_at"] else s["updated_at"]),
        "result": [_ref(vid)] + [_ref(f["id"]) for f in fields],
        "conclusion": _conclusion(s, signed),
    }
    codes = [_concept(verdict, verdict, VERDICT_SYSTEM)] if verdict else []
    if signed and s.get("final_label"):
        codes.append(_label(s["final_label"]))
    if review:
        codes.append(_needs_review(_reasons(s)))
    if codes:
        report["conclusionCode"] = codes
    if subject.subject:
        report["subject"] = subject.subject
    if subject.specimen:
        report["specimen"] = [subject.specimen]
    if signed and s["signed_by"]:
        report["performer"] = [{"type": "Practitioner", "display": s["signed_by"]}]
    entries = [report, v] + fields + subject.resources + [_device(m) for m in used.values()]
    return {
        "resourceType": "Bundle",
        "id": str(uuid.uuid5(NAMESPACE, f"bundle:{s['id']}")),
        "identifier": {"system": SAMPLE_SYSTEM, "value": f"{s['device_id']}/{s['sample_id']}"},
        "type": "collection",
        "timestamp": _ts(s["updated_at"]),
        "entry": [{"fullUrl": f"urn:uuid:{e['id']}", "resource": e} for e in entries],
    }


def _reasons(s: dict) -> List[str]:
    return json.loads(s["review_reasons"]) if s.get("review_reasons") else []


def _conclusion(s: dict, signed: bool) -> str:
    model = f"{s['verdict'] or 'no verdict'}" + (f" (score {s['score']:.3f})" if s["score"] is not None else "")
    if signed:
        final = s["final_verdict"] or s["verdict"] or "no verdict"
        label = f", {s['final_label']}" if s.get("final_label") else ""
        return f"{final}{label}; signed by {s['signed_by']}; model: {model}"
    text = f"model: {model}; not signed"
    return text + ("; needs review: " + "; ".join(_reasons(s)) if s["needs_review"] and _reasons(s) else "")

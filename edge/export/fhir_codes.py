"""The FHIR export's terminology and its Patient and Specimen (edge/export/fhir_bundle.py builds the bundle).

Standard codes only where they mean what we report, checked against the code systems' own pages:

- LOINC 5909-7 "Blood smear finding [Identifier] in Blood by Light microscopy" (active, orderable and
  observable): the DiagnosticReport's code and the sample verdict's. The verdict is a finding read from a
  light-microscope smear, and its value is a coded finding; the smear-morphology panel 34994-4 would fit
  the report but is DISCOURAGED by LOINC, and the blast counts (26446-5 "Blasts/100 leukocytes", 709-6)
  would claim a count we do not make.
- HL7 v3 ObservationInterpretation: ``IND`` (Indeterminate) while a result needs a person's review, ``A``
  (Abnormal) for a malignant sample verdict, ``N`` (Normal) for a benign one.
- SNOMED CT 119297000 "Blood specimen" as Specimen.type.

A single field's class and the model's probabilities have no standard code: they keep ours
(``urn:edge-screen:…``), always without spaces.
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass
from typing import List, Optional

SYSTEM = "urn:edge-screen"
LOINC = "http://loinc.org"
SNOMED = "http://snomed.info/sct"
V3_INTERPRETATION = "http://terminology.hl7.org/CodeSystem/v3-ObservationInterpretation"
SMEAR_FINDING = ("5909-7", "Blood smear finding [Identifier] in Blood by Light microscopy")
BLOOD_SPECIMEN = ("119297000", "Blood specimen")
INTERPRETATIONS = {"IND": "Indeterminate", "A": "Abnormal", "N": "Normal"}
# uuid5 namespace of the Patient and Specimen ids: the same identifier gives the same resource id in
# every bundle, so a receiving server sees one patient, not one per sample.
NAMESPACE = uuid.UUID("0f3c5d7e-2a4b-4c8d-9e1f-6a7b8c9d0e21")


@dataclass(frozen=True)
class FhirSystems:
    """Identifier systems of the laboratory's patient and specimen ids ([export] in the config)."""

    patient: str = f"{SYSTEM}:patient"
    specimen: str = f"{SYSTEM}:specimen"


DEFAULT_SYSTEMS = FhirSystems()
# An anonymised export holds keyed hashes, not the laboratory's ids: they must not claim its system.
ANON_SYSTEMS = FhirSystems(patient=f"{SYSTEM}:anon-patient", specimen=f"{SYSTEM}:anon-specimen")


def slug(text: str) -> str:
    """A code from a label: lower case, runs of anything else than a-z 0-9 as one '-' ("Early Pre-B" ->
    "early-pre-b"), so that codes never hold spaces."""
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "x"


def coding(system: str, code: str, display: str) -> dict:
    return {"system": system, "code": code, "display": display}


def smear_finding(text: str, own_code: str) -> dict:
    """The LOINC code with ours beside it (a receiver that only knows one of them still files it)."""
    return {"coding": [coding(LOINC, *SMEAR_FINDING), coding(SYSTEM, own_code, text)], "text": text}


def interpretation(code: str, text: Optional[str] = None, own: Optional[str] = None) -> dict:
    """An HL7 v3 ObservationInterpretation concept; ``own``: our code beside it (e.g. needs-review)."""
    c = [coding(V3_INTERPRETATION, code, INTERPRETATIONS[code])]
    if own:
        c.append(coding(SYSTEM, own, own.replace("-", " ")))
    return {"coding": c, "text": text or INTERPRETATIONS[code]}


def _identifier(system: str, value: str) -> dict:
    return {"system": system, "value": value}


def _rid(kind: str, system: str, value: str) -> str:
    return str(uuid.uuid5(NAMESPACE, f"{kind}:{system}|{value}"))


def patient(value: str, systems: FhirSystems) -> dict:
    return {
        "resourceType": "Patient",
        "id": _rid("patient", systems.patient, value),
        "identifier": [_identifier(systems.patient, value)],
    }


def blood_specimen(value: str, systems: FhirSystems, subject: Optional[dict]) -> dict:
    s: dict = {
        "resourceType": "Specimen",
        "id": _rid("specimen", systems.specimen, value),
        "accessionIdentifier": _identifier(systems.specimen, value),
        "type": {"coding": [coding(SNOMED, *BLOOD_SPECIMEN)], "text": "blood smear"},
    }
    if subject:
        s["subject"] = _reference(subject, "identifier")
    return s


def _reference(resource: dict, key: str) -> dict:
    """A reference to a resource in the bundle, carrying its identifier too (a receiver that does not
    resolve bundle-internal references still matches the patient or specimen it has)."""
    ident = resource[key][0] if isinstance(resource[key], list) else resource[key]
    return {"reference": f"urn:uuid:{resource['id']}", "type": resource["resourceType"], "identifier": ident}


@dataclass
class Who:
    """A sample's Patient and Specimen resources (either may be absent) and the references to them."""

    resources: List[dict]
    subject: Optional[dict] = None
    specimen: Optional[dict] = None


def who(sample: dict, systems: FhirSystems) -> Who:
    pid, sid = sample.get("patient_id"), sample.get("specimen_id")
    out = Who(resources=[])
    pat = patient(pid, systems) if pid else None
    if pat:
        out.resources.append(pat)
        out.subject = _reference(pat, "identifier")
    if sid:
        spec = blood_specimen(sid, systems, pat)
        out.resources.append(spec)
        out.specimen = _reference(spec, "accessionIdentifier")
    return out


__all__ = [
    "ANON_SYSTEMS",
    "DEFAULT_SYSTEMS",
    "FhirSystems",
    "LOINC",
    "SMEAR_FINDING",
    "SNOMED",
    "V3_INTERPRETATION",
    "Who",
    "blood_specimen",
    "coding",
    "interpretation",
    "patient",
    "slug",
    "smear_finding",
    "who",
]

"""FHIR R4 export: one Bundle (JSON) per sample, for a clinic's EHR or LIS.

Reads the samples of a device or clinic database one at a time (memory stays flat), anonymises them when
asked, builds each bundle (:mod:`edge.export.fhir_bundle`, whose docstring gives the layout and the codes),
validates it against the ``fhir.resources`` R4B models and writes it atomically as ``<sample id>.json``.
``fhir.resources`` is an extra (``pip install 'edge-screen[fhir]'``).
"""

from __future__ import annotations

import hashlib
import json
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Optional, Tuple, Union

from sqlalchemy.engine import Connection
from sqlalchemy.exc import SQLAlchemyError

from edge.atomic import write_atomic
from edge.export.anon import anonymizer
from edge.export.copy import ExportError, Progress, full_row, present_select, source_tables
from edge.export.csvfile import prepare_out_dir
from edge.export.fhir_bundle import SampleData, build_bundle
from edge.export.fhir_codes import ANON_SYSTEMS, DEFAULT_SYSTEMS, FhirSystems
from edge.export.sources import Source, check_source, export_error, location, source_engine
from edge.store.schema import SchemaError, images, models, reviews, samples
from edge.vocabulary import Status

INSTALL = "pip install 'edge-screen[fhir]'"


class FhirMissing(ExportError):
    """fhir.resources is not installed."""


@dataclass
class FhirSummary:
    out: str
    bundles: int = 0
    observations: int = 0
    files: List[str] = field(default_factory=list)
    sources: List[str] = field(default_factory=list)
    seconds: float = 0.0


def bundle_model():
    """The R4B Bundle class; one line naming the extra when fhir.resources is missing."""
    try:
        from fhir.resources.R4B.bundle import Bundle
    except ImportError:
        raise FhirMissing(f"--format fhir needs the fhir.resources package: {INSTALL}") from None
    return Bundle


# --------------------------------------------------------------------------------------------- reading
def _read(conn: Connection, anon: Optional[Callable[..., dict]]) -> Tuple[List[dict], Callable[[dict], SampleData]]:
    """The source's samples, and a loader of one sample's rows (run per sample, so memory stays flat)."""
    present = source_tables(conn)
    if "samples" not in present:  # a schema-1/2 device: no samples yet
        return [], lambda s: SampleData(s, [], [], {})
    mods = {}
    for r in conn.execute(present_select(conn, models)):
        m = full_row(models, r)
        m["card_dict"] = json.loads(m["card"]) if m["card"] else {}
        mods[m["id"]] = anon(m, "models") if anon else m
    rows = [
        full_row(samples, r)
        for r in conn.execute(
            present_select(conn, samples).order_by(samples.c.created_at, samples.c.device_id, samples.c.sample_id)
        )
    ]

    def load(s: dict) -> SampleData:
        f = [
            full_row(images, r)
            for r in conn.execute(
                present_select(conn, images)
                .where(
                    images.c.device_id == s["device_id"],
                    images.c.sample_id == s["sample_id"],
                    images.c.status != Status.DUPLICATE,
                )
                .order_by(images.c.recorded_at, images.c.id)
            )
        ]
        rv = (
            [
                full_row(reviews, r)
                for r in conn.execute(
                    present_select(conn, reviews)
                    .where(reviews.c.device_id == s["device_id"], reviews.c.sample_id == s["sample_id"])
                    .order_by(reviews.c.created_at, reviews.c.id)
                )
            ]
            if "reviews" in present
            else []
        )
        if anon:
            s, f, rv = anon(s, "samples"), [anon(x, "images") for x in f], [anon(x, "reviews") for x in rv]
        return SampleData(s, f, rv, mods)

    return rows, load


_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")


def file_name(sample_id: str, device_id: Optional[str] = None) -> str:
    """A file name that is the sample id when that is safe (device ids are validated), else a readable
    form plus a short hash so that two unsafe ids cannot land in the same file."""
    base = sample_id if device_id is None else f"{device_id}__{sample_id}"
    safe = _UNSAFE.sub("_", base).lstrip(".") or "sample"
    if safe != base or len(safe) > 120:
        safe = f"{safe[:100]}-{hashlib.sha256(base.encode()).hexdigest()[:8]}"
    return safe + ".json"


def export_fhir(
    source: Source,
    out_dir: Union[str, Path],
    anonymize_key: Optional[bytes] = None,
    progress: Optional[Progress] = None,
    systems: FhirSystems = DEFAULT_SYSTEMS,
) -> FhirSummary:
    """Write ``<sample id>.json`` per sample into ``out_dir`` (``<device>__<sample id>.json`` when a
    merged database holds the same sample id from several devices). ``systems``: the identifier systems
    of the samples' patient and specimen ids (an anonymised export uses its own: its ids are hashes)."""
    t0 = time.perf_counter()
    Bundle = bundle_model()
    eng, own = source_engine(source)
    out = Path(out_dir)
    summary = FhirSummary(out=str(out.resolve()), sources=[location(eng)])
    anon = anonymizer(anonymize_key) if anonymize_key else None
    systems = ANON_SYSTEMS if anon else systems
    current = None
    try:
        prepare_out_dir(out)
        with eng.connect() as conn:
            check_source(conn)
            rows, load = _read(conn, anon)
            seen: Dict[str, int] = {}
            for s in rows:
                seen[s["sample_id"]] = seen.get(s["sample_id"], 0) + 1
            for i, s in enumerate(rows, 1):
                current = s["sample_id"]
                data = load(s)
                doc = Bundle.model_validate(build_bundle(data, systems))
                name = file_name(
                    data.sample["sample_id"], data.sample["device_id"] if seen[s["sample_id"]] > 1 else None
                )
                # Atomic: an interface engine polling the folder never reads half a bundle.
                write_atomic(out, name, doc.model_dump_json(indent=1).encode("utf-8"))
                summary.bundles += 1
                summary.observations += len(data.fields) + 1
                summary.files.append(name)
                if progress:
                    progress(i, len(rows))
    except OSError as e:
        raise export_error(e, str(out)) from None
    except (SQLAlchemyError, SchemaError) as e:
        raise export_error(e, summary.sources[0]) from None
    except ValueError as e:  # pydantic's ValidationError: a bundle we built is not valid FHIR (our bug)
        raise ExportError(
            f"cannot build the FHIR bundle of sample {current}: " + " ".join(x.strip() for x in str(e).splitlines()[:3])
        ) from None
    finally:
        if own:
            eng.dispose()
    summary.seconds = time.perf_counter() - t0
    return summary


__all__ = ["FhirMissing", "FhirSummary", "FhirSystems", "SampleData", "build_bundle", "export_fhir", "file_name"]

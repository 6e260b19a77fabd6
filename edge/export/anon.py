"""Anonymisation for everything that leaves a device (database export, merge, CSV, FHIR).

What identifies a patient, a person, a device or a host is replaced by an HMAC-SHA256 of it. Keyed, so
nobody without the key can test a guess ("is MRN 4711 in here?"); deterministic, so re-exports and merges
still match row for row, and the same sample id hashes to the same value in images, samples and reviews,
which therefore still join.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re
from typing import Callable

# Reasons that quote a whole path (which may hold spaces): "same content as PATH",
# "symlink points outside the inbox (to PATH)".
_REASON_PATH = re.compile(r"^(same content as |symlink points outside the inbox \(to )(.+?)(\)?)$")
# edge.store.samples' refusals quote the inbox folder, i.e. the would-be sample id (often a patient id).
_REASON_FOLDER = (
    re.compile(r"^(invalid sample id )(['\"].*?['\"])(:.*)?$", re.S),
    re.compile(r"^()(.+?)( is nested too deep.*)$", re.S),
)


def _safe_ext(name: str) -> str:
    ext = os.path.splitext(name)[1].lower()
    return ext if 1 < len(ext) <= 6 and ext[1:].isalnum() else ""


def anonymizer(key: bytes) -> Callable[..., dict]:
    """``apply(row, table="images")``: the row with identifying values replaced.

    - every table: device ids (they locate a clinic);
    - runs: host names;
    - images: paths, file names and moved_to (file names carry patient names and ids), and those values
      where a reason quotes them ("same content as /inbox/Jane-Doe-MRN….jpg");
    - images, samples, reviews: sample ids (an inbox folder name is often a patient identifier);
    - samples.signed_by and reviews.reviewer: person names;
    - samples.patient_id and specimen_id: the laboratory's identifiers of the patient and the specimen;
    - reviews.comment: dropped, free text may name the patient and cannot be scrubbed reliably.
    """

    def h(s: str) -> str:
        return hmac.new(key, s.encode("utf-8"), hashlib.sha256).hexdigest()[:32]

    def person(name: str) -> str:
        return "anon-" + h("user:" + name)[:16]

    def sample(sid: str) -> str:
        # Still a valid sample id (edge.store.samples.SAMPLE_ID_RE): FHIR file names and identifiers use it.
        return "anon-" + h("sample:" + sid)[:24]

    def apply(row: dict, table: str = "images") -> dict:
        row = dict(row)
        if row.get("device_id"):
            row["device_id"] = "anon-" + h("device:" + row["device_id"])[:16]
        if table == "runs" and row.get("hostname"):
            row["hostname"] = "anon-" + h("host:" + row["hostname"])[:16]
        sid = row.get("sample_id") if table in ("images", "samples", "reviews") else None
        if sid:
            row["sample_id"] = sample(sid)
        if table == "samples" and row.get("signed_by"):
            row["signed_by"] = person(row["signed_by"])
        for col in ("patient_id", "specimen_id") if table == "samples" else ():
            if row.get(col):  # keyed like sample ids: the same patient's samples still group together
                row[col] = "anon-" + h(f"{col}:" + row[col])[:24]
        if table == "reviews":
            if row.get("reviewer"):
                row["reviewer"] = person(row["reviewer"])
            if "comment" in row:
                row["comment"] = None
        if table != "images":
            return row
        path, name = row["path"], row["filename"]
        row["path"], row["filename"] = f"anon:{h(path)}", h(name) + _safe_ext(name)
        if row.get("moved_to"):
            row["moved_to"] = f"anon:{h(row['moved_to'])}"
        reason = row.get("reason")
        if reason:
            m = _REASON_PATH.match(reason)
            if m:  # the path another row or a link points at: anonymized the same way as a path column
                reason = f"{m.group(1)}anon:{h(m.group(2))}{m.group(3)}"
            for rx in _REASON_FOLDER:
                m = rx.match(reason)
                if m:
                    reason = f"{m.group(1)}{sample(m.group(2).strip(chr(39) + chr(34)))}{m.group(3) or ''}"
            reason = reason.replace(path, row["path"]).replace(name, row["filename"])
            if sid:  # only as a whole token: a short id must not eat into the hashes written above
                reason = re.sub(rf"(?<![\w.-]){re.escape(sid)}(?![\w.-])", row["sample_id"], reason)
            row["reason"] = reason
        return row

    return apply


__all__ = ["anonymizer"]

"""Who a sample is from, as the laboratory knows it: optional patient and specimen identifiers per sample.

The device never learns a patient by itself. A laboratory that wants its FHIR reports filed against the
right patient and specimen says so per sample, in one of two ways:

- a ``sample.json`` beside the fields, in the sample's inbox folder (``inbox/<sample-id>/sample.json``)::

      {"patient": "MRN-004711", "specimen": "ACC-2026-000123"}

  picked up by the daemon like a field (written, closed or moved in; read again at every start). A key
  left out leaves that identifier as it is; ``null`` or ``""`` removes it; any other key is an error (a
  misspelt ``"patinet"`` must not pass silently as "no patient").
- ``edge-screen sample meta ID --patient … --specimen …`` (:func:`set_meta`).

Identifiers are 1-64 of ``A-Z a-z 0-9 . _ - : /``, starting with a letter or digit: they go into FHIR
identifiers, file names stay the sample id. A malformed ``sample.json`` changes nothing that was stored: the
sample keeps the identifiers it had, and its row says why the file was not used (``meta_error``, one line,
shown by ``samples``); a corrected file clears it. A signed sample's identifiers are part of what was signed
and never change. Messages never quote an identifier's value: they end up in logs and exports.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import stat
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Tuple

from sqlalchemy import select, tuple_

from edge.store.samples import SampleError, validate_sample_id
from edge.store.schema import samples, utcnow
from edge.vocabulary import SampleStatus

log = logging.getLogger("edge.store.samplemeta")

META_FILE = "sample.json"
MAX_META_BYTES = 4096  # a few identifiers; anything bigger is not a sample's metadata file
KEYS = {"patient": "patient_id", "specimen": "specimen_id"}  # sample.json key -> samples column
ID_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._-:/")
MAX_ID = 64
SOURCE_FILE = META_FILE
SOURCE_CLI = "cli"


class MetaError(ValueError):
    """An identifier or a ``sample.json`` that cannot be used; ``str(err)`` is one line without the value."""


class MetaConflict(SampleError):
    """The sample cannot take the change (it is signed)."""


@dataclass(frozen=True)
class SampleMeta:
    """A sample's identifiers (None: not known) and where they came from."""

    sample_id: str
    device_id: str
    patient_id: Optional[str] = None
    specimen_id: Optional[str] = None
    source: Optional[str] = None  # "sample.json" | "cli"
    error: Optional[str] = None  # why the folder's sample.json was not used

    def to_json(self) -> dict:
        return {
            "patient_id": self.patient_id,
            "specimen_id": self.specimen_id,
            "meta_source": self.source,
            "meta_error": self.error,
        }

    def describe(self) -> str:
        parts = [f"patient {self.patient_id or '-'}", f"specimen {self.specimen_id or '-'}"]
        return ", ".join(parts) + (f" (from {self.source})" if self.source else "")


def _char_name(c: str) -> str:
    if c == " ":
        return "a space"
    if c.isprintable() and c.isascii():
        return repr(c)
    return f"U+{ord(c):04X}"


def validate_identifier(kind: str, value: object) -> str:
    """``value`` as a patient or specimen identifier; raises :class:`MetaError` naming the rule it breaks."""
    if isinstance(value, bool) or not isinstance(value, str):
        what = "a number" if isinstance(value, (int, float)) and not isinstance(value, bool) else type(value).__name__
        raise MetaError(f"{kind}: expected a string in quotes, got {what}")
    if not value:
        raise MetaError(f"{kind}: empty")
    if len(value) > MAX_ID:
        raise MetaError(f"{kind}: {len(value)} characters, at most {MAX_ID}")
    bad = next((c for c in value if c not in ID_CHARS), None)
    if bad is not None:
        raise MetaError(f"{kind}: {_char_name(bad)} is not allowed (use A-Z a-z 0-9 . _ - : /)")
    if not value[0].isalnum():
        raise MetaError(f"{kind}: must start with a letter or digit")
    return value


def parse_meta(data: bytes) -> Dict[str, Optional[str]]:
    """The changes a ``sample.json`` asks for: column -> identifier, or None to remove it."""
    try:
        doc = json.loads(data.decode("utf-8-sig"))
    except UnicodeDecodeError:
        raise MetaError("not UTF-8 text") from None
    except json.JSONDecodeError as e:
        raise MetaError(f"not valid JSON (line {e.lineno} column {e.colno}: {e.msg})") from None
    if not isinstance(doc, dict):
        raise MetaError(
            'expected an object like {"patient": "...", "specimen": "..."}, got '
            + ("a list" if isinstance(doc, list) else "a string" if isinstance(doc, str) else type(doc).__name__)
        )
    unknown = sorted(k for k in doc if k not in KEYS)
    if unknown:
        shown = unknown[0] if unknown[0].isprintable() and len(unknown[0]) <= 40 else "(unprintable)"
        raise MetaError(f"unknown key {shown!r} (known: {', '.join(KEYS)})")
    return {KEYS[k]: (None if v is None or v == "" else validate_identifier(k, v)) for k, v in doc.items()}


def read_meta_file(path: Path) -> Dict[str, Optional[str]]:
    """Read and parse a ``sample.json`` without following a symlink (a link could point anywhere) and
    without blocking on a FIFO."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except OSError as e:
        if e.errno == errno.ELOOP:
            raise MetaError("is a symlink: write the file itself into the sample folder") from None
        raise MetaError(f"cannot read: {e.strerror or e}") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise MetaError("not a regular file")
        if st.st_size > MAX_META_BYTES:
            raise MetaError(f"{st.st_size:,} bytes, more than the {MAX_META_BYTES:,} a sample.json may have")
        with os.fdopen(fd, "rb", closefd=False) as f:
            data = f.read(MAX_META_BYTES + 1)
    except OSError as e:
        raise MetaError(f"cannot read: {e.strerror or e}") from None
    finally:
        os.close(fd)
    return parse_meta(data)


def is_meta_name(name: str) -> bool:
    # Any case: "Sample.JSON" from a Windows share must not be screened as a field and refused as one.
    return name.lower() == META_FILE


def is_meta_file(path: Path, inbox: Optional[Path]) -> bool:
    """A ``sample.json`` directly in a sample folder of ``inbox`` (one at the inbox root is an ordinary file)."""
    return inbox is not None and is_meta_name(path.name) and path.parent.parent == inbox


def meta_files(inbox: Path) -> List[Path]:
    """Every sample folder's ``sample.json`` (the daemon reads them all again at start)."""
    try:
        folders = sorted(p for p in inbox.iterdir() if p.is_dir() and not p.is_symlink() and not p.name.startswith("."))
    except OSError:
        return []
    out = []
    for f in folders:
        try:
            out += sorted(f / n for n in os.listdir(f) if is_meta_name(n))
        except OSError:
            continue
    return out


# ---------------------------------------------------------------------------------------------- storage
def _row(conn, device: str, sample_id: str):
    return conn.execute(select(samples).where(samples.c.device_id == device, samples.c.sample_id == sample_id)).first()


def _insert_empty(conn, device: str, sample_id: str):
    """The row of a sample whose metadata came before its first field (the fields recompute the rest)."""
    now = utcnow()
    conn.execute(
        samples.insert().values(
            id=str(uuid.uuid4()),
            device_id=device,
            sample_id=sample_id,
            created_at=now,
            updated_at=now,
            fields=0,
            readable=0,
            status=SampleStatus.COLLECTING,
            needs_review=False,
            review_reasons="[]",
        )
    )
    return _row(conn, device, sample_id)


def _meta(row) -> SampleMeta:
    m = row._mapping
    return SampleMeta(
        sample_id=m["sample_id"],
        device_id=m["device_id"],
        patient_id=m["patient_id"],
        specimen_id=m["specimen_id"],
        source=m["meta_source"],
        error=m["meta_error"],
    )


def set_meta(
    store,
    sample_id: str,
    changes: Dict[str, Optional[str]],
    source: str,
    create: bool = False,
    clear_error: bool = False,
) -> Tuple[SampleMeta, bool]:
    """Apply ``changes`` (column -> identifier or None) to a sample; returns its metadata and whether
    anything changed. ``create``: a sample without a row yet gets one (its folder exists: the metadata
    came first). Raises :class:`SampleError` for an unknown sample and :class:`MetaConflict` for a signed
    one whose identifiers would change."""
    validate_sample_id(sample_id)
    for col, value in changes.items():
        if col not in KEYS.values():
            raise ValueError(f"not a metadata column: {col}")
        if value is not None:
            validate_identifier(col.split("_")[0], value)
    device = store.device()
    store.check_file()
    with store.write() as conn:
        row = _row(conn, device, sample_id)
        if row is None:
            if not create:
                raise SampleError(
                    f"no sample {sample_id!r} on device {device}: its first field must be "
                    f"recorded first, or put a {META_FILE} into inbox/{sample_id}/"
                )
            row = _insert_empty(conn, device, sample_id)
        m = row._mapping
        differs = {c: v for c, v in changes.items() if m[c] != v}
        if differs and m["status"] == SampleStatus.SIGNED:
            raise MetaConflict(
                f"sample {sample_id} is signed (by {m['signed_by']}): its patient and specimen are "
                "part of what was signed and cannot change"
            )
        values: dict = dict(differs)
        if differs:
            values["meta_source"] = source
        if clear_error and m["meta_error"] is not None and m["status"] != SampleStatus.SIGNED:
            values["meta_error"] = None
        if values:
            # updated_at: the clinic export sends a sample again when it changed (edge.export.copy).
            conn.execute(samples.update().where(samples.c.id == m["id"]).values(updated_at=utcnow(), **values))
            row = _row(conn, device, sample_id)
    if differs:
        log.info("sample %s: %s set from %s", sample_id, " and ".join(c.split("_")[0] for c in sorted(differs)), source)
    return _meta(row), bool(differs)


def record_error(store, sample_id: str, reason: str) -> bool:
    """Say on the sample's row why its ``sample.json`` was not used (nothing else changes); False when
    the sample is signed (its row is what was signed: the reason goes to the log only)."""
    device = store.device()
    store.check_file()
    with store.write() as conn:
        row = _row(conn, device, sample_id) or _insert_empty(conn, device, sample_id)
        if row.status == SampleStatus.SIGNED:
            return False
        if row.meta_error != reason:
            conn.execute(samples.update().where(samples.c.id == row.id).values(meta_error=reason, updated_at=utcnow()))
    return True


def apply_meta_file(store, path: Path, inbox: Path) -> Optional[SampleMeta]:
    """The daemon's handling of a sample folder's ``sample.json``: its identifiers stored, or the reason
    it was not used recorded on the sample (and logged, one line). Database errors propagate (the caller
    retries); nothing here raises for a bad file."""
    folder = path.parent.name
    try:
        sample_id = validate_sample_id(folder)
    except SampleError as e:
        log.warning("%s: not used: %s", path, e)  # the folder's fields are refused with the same reason
        return None
    try:
        if path.parent.is_symlink():  # O_NOFOLLOW guards the file, not the folder it is reached through
            raise MetaError("the sample folder is a symlink")
        changes = read_meta_file(path)
    except MetaError as e:
        reason = f"{META_FILE}: {e}"
        recorded = record_error(store, sample_id, reason)
        log.warning(
            "sample %s: %s not used, the identifiers stay as they were: %s%s",
            sample_id,
            META_FILE,
            e,
            "" if recorded else " (sample is signed)",
        )
        return None
    try:
        meta, _ = set_meta(store, sample_id, changes, SOURCE_FILE, create=True, clear_error=True)
    except MetaConflict as e:
        log.warning("sample %s: %s not used: %s", sample_id, META_FILE, e)
        return None
    return meta


def meta_for(store, keys: Iterable[Tuple[str, str]]) -> Dict[Tuple[str, str], SampleMeta]:
    """The metadata of the given (device id, sample id) pairs, in one query per 500."""
    keys = list(dict.fromkeys(keys))
    out: Dict[Tuple[str, str], SampleMeta] = {}
    cols = (
        samples.c.device_id,
        samples.c.sample_id,
        samples.c.patient_id,
        samples.c.specimen_id,
        samples.c.meta_source,
        samples.c.meta_error,
    )
    with store.engine.connect() as conn:
        for i in range(0, len(keys), 500):
            chunk = keys[i : i + 500]
            for r in conn.execute(select(*cols).where(tuple_(samples.c.device_id, samples.c.sample_id).in_(chunk))):
                out[(r.device_id, r.sample_id)] = _meta(r)
    return out


def get_meta(store, sample_id: str) -> Optional[SampleMeta]:
    validate_sample_id(sample_id)
    with store.engine.connect() as conn:
        row = _row(conn, store.device(), sample_id)
    return _meta(row) if row is not None else None


__all__ = [
    "KEYS",
    "META_FILE",
    "MetaConflict",
    "MetaError",
    "SOURCE_CLI",
    "SOURCE_FILE",
    "SampleMeta",
    "apply_meta_file",
    "get_meta",
    "is_meta_file",
    "is_meta_name",
    "meta_files",
    "meta_for",
    "parse_meta",
    "read_meta_file",
    "record_error",
    "set_meta",
    "validate_identifier",
]

"""Clinic-wide export: device results into a shared SQLite file or PostgreSQL, and merges (CSV files:
:mod:`edge.export.csvfile`, FHIR bundles: :mod:`edge.export.fhir`; the per-table rules: :mod:`edge.export.copy`).

Rows keep their UUIDs and device ids, so sending the same row twice is recognised and skipped (idempotent),
and a row that exists in the target with the same id but different content is a conflict: reported, never
overwritten (results are medical records; which copy is right is for a person to decide). Everything sent
to a target happens in one target transaction, so a crash, a full disk or a kill -9 leaves it as it was.
Incremental export remembers, in the source, the last image sent to each target and device; samples (the
one table whose rows change) and reviews are compared row by row on every export. users and web_sessions
(the review app's accounts) are device-local and never leave the device.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple, Union

from sqlalchemy import literal_column, select
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import SQLAlchemyError

from edge.export.anon import anonymizer
from edge.export.copy import (
    BATCH,
    IMAGE_FILLED_LATER,
    RUN_FILLED_LATER,
    Conflict,
    ExportError,
    ExportSummary,
    Progress,
    Transfer,
)
from edge.export.sources import Source, check_source, export_error, location, source_engine
from edge.store.engine import make_engine, normalize_url, writer
from edge.store.migrations import ensure_schema
from edge.store.schema import SchemaError, export_watermarks, images, utcnow


def target_key(engine: Engine) -> str:
    u = engine.url
    if u.get_backend_name() == "sqlite":
        return f"sqlite:///{Path(u.database).resolve()}" if u.database else "sqlite://"
    return u.set(password=None).render_as_string(hide_password=True)


def _load_watermarks(sconn: Connection, tconn: Connection, key: str) -> Dict[str, dict]:
    """Watermarks for this target that still hold: the last row sent is in the target (it may have been
    replaced by an empty file) and still has the same position in the source (VACUUM renumbers rowids).
    A watermark that does not hold is dropped, which only costs a full, idempotent re-send."""
    if "export_watermarks" not in sconn.dialect.get_table_names(sconn):
        return {}
    sqlite = sconn.engine.url.get_backend_name() == "sqlite"
    out: Dict[str, dict] = {}
    for row in sconn.execute(select(export_watermarks).where(export_watermarks.c.target == key)):
        wm = dict(row._mapping)
        if (
            wm["last_id"] is None
            or tconn.execute(select(images.c.id).where(images.c.id == wm["last_id"])).first() is None
        ):
            continue
        if sqlite and wm["last_seq"] is not None:
            now = sconn.execute(
                select(literal_column("rowid")).select_from(images).where(images.c.id == wm["last_id"])
            ).scalar()
            if now != wm["last_seq"]:
                continue
        out[wm["device_id"]] = wm
    return out


def _save_watermarks(engine: Engine, key: str, marks: Dict[str, dict], summary: ExportSummary) -> bool:
    try:
        with writer(engine).begin() as conn:
            if "export_watermarks" not in conn.dialect.get_table_names(conn):
                return False  # a schema-1 source that we must not upgrade behind the user's back
            for dev, m in marks.items():
                conn.execute(
                    export_watermarks.delete().where(
                        export_watermarks.c.target == key, export_watermarks.c.device_id == dev
                    )
                )
                conn.execute(
                    export_watermarks.insert().values(
                        target=key, device_id=dev, exported_at=utcnow(), rows=summary.rows_sent, **m
                    )
                )
        return True
    except SQLAlchemyError:
        return False  # a read-only source: the export itself is committed, the next one is just not incremental


def _run(
    sources: Sequence[Source],
    target: Union[str, Path, Engine],
    anonymize_key: Optional[bytes],
    progress: Optional[Progress],
    incremental: bool,
) -> ExportSummary:
    t0 = time.perf_counter()
    if isinstance(target, Engine):
        tengine, own_t = target, False
    else:
        try:
            tengine, own_t = make_engine(normalize_url(target)), True
        except (OSError, SchemaError) as e:
            raise export_error(e, str(target)) from None
    where, key = location(tengine), target_key(tengine)
    tpath = Path(tengine.url.database) if tengine.url.get_backend_name() == "sqlite" and tengine.url.database else None
    created = tpath is not None and not tpath.exists()
    summary = ExportSummary(target=key)
    opened: List[Tuple[Engine, bool, str]] = []
    try:
        for s in sources:
            eng, own = source_engine(s)
            opened.append((eng, own, location(eng)))
            if target_key(eng) == key:
                raise ExportError(f"{where} is both a source and the target")
        marks_by_source = []
        transfer = None
        with writer(tengine).begin() as tconn:
            ensure_schema(tconn, create=True)
            transfer = Transfer(tconn, summary, anonymizer(anonymize_key) if anonymize_key else None, progress)
            for eng, _, name in opened:
                with eng.connect() as sconn:
                    check_source(sconn)
                    wms = _load_watermarks(sconn, tconn, key) if incremental else None
                    marks_by_source.append(transfer.source(sconn, name, wms))
                    summary.sources.append(name)
        if incremental:
            for (eng, _, _), marks in zip(opened, marks_by_source):
                summary.watermark_saved = _save_watermarks(eng, key, marks, summary) if marks else True
    except ExportError:
        _cleanup(created, tpath, tengine)
        raise
    except (SQLAlchemyError, SchemaError, OSError) as e:
        _cleanup(created, tpath, tengine)
        raise export_error(e, where) from None
    finally:
        for eng, own, _ in opened:
            if own:
                eng.dispose()
        if own_t:
            tengine.dispose()
    summary.seconds = time.perf_counter() - t0
    return summary


def _cleanup(created: bool, tpath: Optional[Path], engine: Engine) -> None:
    """A target file this run created holds nothing committed after a failure: remove it, so the failed
    export leaves the filesystem as it found it."""
    if created and tpath is not None:
        engine.dispose()
        for suffix in ("", "-wal", "-shm", "-journal"):
            Path(str(tpath) + suffix).unlink(missing_ok=True)


def export_to(
    source: Source,
    target: Union[str, Path, Engine],
    anonymize_key: Optional[bytes] = None,
    progress: Optional[Progress] = None,
    incremental: bool = True,
) -> ExportSummary:
    """Upsert a store's rows into ``target`` (a SQLite path or SQLAlchemy URL), in one transaction."""
    return _run([source], target, anonymize_key, progress, incremental)


def merge(
    sources: Sequence[Source],
    into: Union[str, Path, Engine],
    anonymize_key: Optional[bytes] = None,
    progress: Optional[Progress] = None,
) -> ExportSummary:
    """Merge device databases into one, all in one transaction; sources are only read."""
    if not sources:
        raise ExportError("merge needs at least one source database")
    return _run(list(sources), into, anonymize_key, progress, incremental=False)


__all__ = [
    "BATCH",
    "Conflict",
    "ExportError",
    "ExportSummary",
    "IMAGE_FILLED_LATER",
    "Progress",
    "RUN_FILLED_LATER",
    "Source",
    "anonymizer",
    "export_to",
    "merge",
]

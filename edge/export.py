"""Clinic-wide export: device results into a shared SQLite file or PostgreSQL, and merges (CSV files:
:mod:`edge.export_csv`).

Rows keep their UUIDs and device ids, so sending the same row twice is recognised and skipped (idempotent),
and a row that exists in the target with the same id but different content is a conflict: reported, never
overwritten (results are medical records; which copy is right is for a person to decide). Everything sent
to a target happens in one target transaction, so a crash, a full disk or a kill -9 leaves it as it was.
Incremental export remembers, in the source, the last row sent to each target and device.
"""
from __future__ import annotations

import errno
import hashlib
import hmac
import os
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, Iterable, List, Optional, Sequence, Tuple, Union

from sqlalchemy import and_, func, literal_column, or_, select
from sqlalchemy.engine import Connection, Engine, make_url
from sqlalchemy.exc import SQLAlchemyError

from .schema import (SchemaError, check_version, ensure_schema, export_watermarks, images, make_engine, models,
                     normalize_url, runs, schema_version, utcnow, writer)
from .store import Store

Source = Union[Store, str, Path, Engine]
Progress = Callable[[int, int], None]
BATCH = 2000
RUN_FILLED_LATER = ("stopped_at", "exit_reason")  # a run exported while running gets these later


class ExportError(RuntimeError):
    """The export or merge did nothing; ``str(err)`` is one line saying why."""


@dataclass
class Conflict:
    table: str
    id: str
    device_id: str
    source: str
    columns: List[str]  # the columns whose values differ

    def __str__(self) -> str:
        return f"{self.table} {self.id} (device {self.device_id}) from {self.source}: differs in {', '.join(self.columns)}"


@dataclass
class ExportSummary:
    target: str
    rows_sent: int = 0  # images inserted into the target
    rows_skipped: int = 0  # images already there with the same content
    runs_sent: int = 0  # runs and models inserted or completed (stopped_at filled in)
    models_sent: int = 0
    conflicts: List[Conflict] = field(default_factory=list)
    seconds: float = 0.0
    sources: List[str] = field(default_factory=list)
    watermark_saved: Optional[bool] = None  # None: not applicable (merge, CSV)

    @property
    def rows_per_s(self) -> float:
        n = self.rows_sent + self.rows_skipped
        return n / self.seconds if self.seconds > 0 else 0.0


def anonymizer(key: bytes) -> Callable[..., dict]:
    """``apply(row, table="images")``: what identifies a patient, a device or a host replaced by an
    HMAC-SHA256 of it. Paths and file names carry patient names and ids (in reasons too: "same content as
    /inbox/Jane-Doe-MRN….jpg"); device ids and host names locate a clinic. Keyed, so nobody without the
    key can test a guess; deterministic, so re-exports and merges still match row for row."""
    def h(s: str) -> str:
        return hmac.new(key, s.encode("utf-8"), hashlib.sha256).hexdigest()[:32]

    def apply(row: dict, table: str = "images") -> dict:
        row = dict(row)
        if row.get("device_id"):
            row["device_id"] = "anon-" + h("device:" + row["device_id"])[:16]
        if table == "runs" and row.get("hostname"):
            row["hostname"] = "anon-" + h("host:" + row["hostname"])[:16]
        if table != "images":
            return row
        path, name = row["path"], row["filename"]
        row["path"], row["filename"] = f"anon:{h(path)}", h(name) + _safe_ext(name)
        reason = row.get("reason")
        if reason:
            m = _REASON_PATH.match(reason)
            if m:  # the path another row or a link points at: anonymized the same way as a path column
                reason = f"{m.group(1)}anon:{h(m.group(2))}{m.group(3)}"
            row["reason"] = reason.replace(path, row["path"]).replace(name, row["filename"])
        return row
    return apply


# Reasons that quote a whole path (which may hold spaces): "same content as PATH",
# "symlink points outside the inbox (to PATH)".
_REASON_PATH = re.compile(r"^(same content as |symlink points outside the inbox \(to )(.+?)(\)?)$")


def _safe_ext(name: str) -> str:
    ext = os.path.splitext(name)[1].lower()
    return ext if 1 < len(ext) <= 6 and ext[1:].isalnum() else ""


def target_key(engine: Engine) -> str:
    u = engine.url
    if u.get_backend_name() == "sqlite":
        return f"sqlite:///{Path(u.database).resolve()}" if u.database else "sqlite://"
    return u.set(password=None).render_as_string(hide_password=True)


def _where(engine: Engine) -> str:
    u = engine.url
    return u.database if u.get_backend_name() == "sqlite" else u.render_as_string(hide_password=True)


def _error(e: BaseException, where: str) -> ExportError:
    """One line that tells a technician what went wrong, from whatever the driver raised."""
    if isinstance(e, SchemaError):
        return ExportError(str(e))
    orig = getattr(e, "orig", None) or e
    msg = str(orig).strip().splitlines()[0] if str(orig).strip() else type(orig).__name__
    code = getattr(orig, "sqlstate", None) or ""
    low = msg.lower()
    if "readonly" in low or "read-only" in low or code in ("25006", "42501"):
        return ExportError(f"{where} is read-only or not writable for this user ({msg}); nothing was changed")
    if "disk is full" in low or code == "53100" or getattr(orig, "errno", None) == errno.ENOSPC:
        return ExportError(f"{where}: the disk is full; nothing was changed")
    if "unable to open database" in low:
        return ExportError(f"cannot open {where} (missing folder or no permission)")
    if "not a database" in low:
        return ExportError(f"{where} is not an edge-screen database (not an SQLite file)")
    return ExportError(f"{where}: {msg}")


def _source_engine(src: Source) -> Tuple[Engine, bool]:
    if isinstance(src, Store):
        return src.engine, False
    if isinstance(src, Engine):
        return src, False
    u = make_url(normalize_url(src))
    if u.get_backend_name() == "sqlite" and not Path(u.database or "").is_file():
        raise ExportError(f"source not found: {u.database}")
    return make_engine(normalize_url(src), create_dirs=False), True


def _check_source(conn: Connection) -> None:
    version = schema_version(conn)
    if version is None:
        raise ExportError(f"source {_where(conn.engine)} is an empty database, not an edge-screen database")
    check_version(conn, version)


def _diff(a: dict, b: dict) -> List[str]:
    return [k for k in a if a[k] != b.get(k)]


class _Transfer:
    """Copies rows from sources into one open target transaction."""

    def __init__(self, tconn: Connection, summary: ExportSummary, anonymize: Optional[Callable[[dict], dict]],
                 progress: Optional[Progress]):
        self.t, self.s, self.anon, self.progress = tconn, summary, anonymize, progress
        self.done = self.total = 0

    def small_table(self, table, rows: Iterable[dict], source: str) -> int:
        rows = [self.anon(r, table.name) for r in rows] if self.anon else list(rows)
        have = {r.id: dict(r._mapping) for r in self.t.execute(
            select(table).where(table.c.id.in_([r["id"] for r in rows])))} if rows else {}
        new, sent = [], 0
        for r in rows:
            old = have.get(r["id"])
            if old is None:
                new.append(r)
                continue
            diff = _diff(r, old)
            if table is runs and diff and set(diff) <= set(RUN_FILLED_LATER) and old["stopped_at"] is None:
                self.t.execute(runs.update().where(runs.c.id == r["id"]).values(**{k: r[k] for k in diff}))
                sent += 1
            elif diff:
                self.s.conflicts.append(Conflict(table.name, r["id"], r["device_id"], source, diff))
        if table is models and new:  # (device_id, sha256) is unique: the same model under another id
            keys = {(r["device_id"], r["sha256"]): r for r in new}
            for m in self.t.execute(select(models.c.id, models.c.device_id, models.c.sha256).where(
                    models.c.sha256.in_([k[1] for k in keys]))):
                if (m.device_id, m.sha256) in keys:
                    r = keys[(m.device_id, m.sha256)]
                    self.s.conflicts.append(Conflict("models", r["id"], r["device_id"], source, ["id"]))
                    new.remove(r)
        if new:
            self.t.execute(table.insert(), new)
        return sent + len(new)

    def images_batch(self, rows: List[dict], source: str) -> None:
        if self.anon:
            rows = [self.anon(r) for r in rows]
        ids, shas = [r["id"] for r in rows], list({r["sha256"] for r in rows})
        by_id, by_key = {}, {}
        for old in self.t.execute(select(images).where(or_(images.c.id.in_(ids), images.c.sha256.in_(shas)))):
            old = dict(old._mapping)
            by_id[old["id"]] = old
            by_key[(old["device_id"], old["path"], old["sha256"])] = old["id"]
        new = []
        for r in rows:
            old = by_id.get(r["id"])
            if old is not None:
                diff = _diff(r, old)
                if diff:
                    self.s.conflicts.append(Conflict("images", r["id"], r["device_id"], source, diff))
                else:
                    self.s.rows_skipped += 1
                continue
            k = (r["device_id"], r["path"], r["sha256"])
            if k in by_key:  # the same file recorded under another id: exactly-once forbids a second row
                self.s.conflicts.append(Conflict("images", r["id"], r["device_id"], source, ["id"]))
                continue
            by_key[k] = by_id[r["id"]] = r
            new.append(r)
        # A duplicate must follow its original for the self-reference; sources are read in insertion order.
        if new:
            self.t.execute(images.insert(), new)
        self.s.rows_sent += len(new)
        self.done += len(rows)
        if self.progress:
            self.progress(self.done, self.total)

    def source(self, sconn: Connection, name: str, watermarks: Optional[Dict[str, dict]]) -> Dict[str, dict]:
        """Send one source's runs, models and (new) images; returns the new watermark per device."""
        sqlite = sconn.engine.url.get_backend_name() == "sqlite"
        self.s.runs_sent += self.small_table(runs, [dict(r._mapping) for r in sconn.execute(select(runs))], name)
        self.s.models_sent += self.small_table(models, [dict(r._mapping) for r in sconn.execute(select(models))], name)
        seq = literal_column("rowid") if sqlite else None
        cond = []
        for dev, wm in (watermarks or {}).items():
            if sqlite and wm.get("last_seq") is not None:
                cond.append(and_(images.c.device_id == dev, seq <= wm["last_seq"]))
            elif wm.get("last_recorded_at") is not None:
                cond.append(and_(images.c.device_id == dev, or_(
                    images.c.recorded_at < wm["last_recorded_at"],
                    and_(images.c.recorded_at == wm["last_recorded_at"], images.c.id <= wm["last_id"]))))
        where = ~or_(*cond) if cond else None
        q = select(images, seq.label("_seq")) if sqlite else select(images)
        q = q.where(where) if where is not None else q
        q = q.order_by(seq) if sqlite else q.order_by(images.c.recorded_at, images.c.id)
        self.total += sconn.execute(select(func.count()).select_from(q.subquery())).scalar()
        marks: Dict[str, dict] = {}
        batch: List[dict] = []
        for r in sconn.execution_options(yield_per=BATCH).execute(q):
            d = dict(r._mapping)
            s = d.pop("_seq", None)
            marks[d["device_id"]] = dict(last_recorded_at=d["recorded_at"], last_id=d["id"], last_seq=s)
            batch.append(d)
            if len(batch) >= BATCH:
                self.images_batch(batch, name)
                batch = []
        if batch:
            self.images_batch(batch, name)
        return marks


def _load_watermarks(sconn: Connection, tconn: Connection, key: str) -> Dict[str, dict]:
    """Watermarks for this target that still hold: the last row sent is in the target (it may have been
    replaced by an empty file) and still has the same position in the source (VACUUM renumbers rowids).
    A watermark that does not hold is dropped, which only costs a full, idempotent re-send."""
    if "export_watermarks" not in sconn.dialect.get_table_names(sconn):
        return {}
    sqlite = sconn.engine.url.get_backend_name() == "sqlite"
    out = {}
    for wm in sconn.execute(select(export_watermarks).where(export_watermarks.c.target == key)):
        wm = dict(wm._mapping)
        if wm["last_id"] is None or tconn.execute(select(images.c.id).where(images.c.id == wm["last_id"])).first() is None:
            continue
        if sqlite and wm["last_seq"] is not None:
            now = sconn.execute(select(literal_column("rowid")).select_from(images).where(
                images.c.id == wm["last_id"])).scalar()
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
                conn.execute(export_watermarks.delete().where(export_watermarks.c.target == key,
                                                              export_watermarks.c.device_id == dev))
                conn.execute(export_watermarks.insert().values(target=key, device_id=dev, exported_at=utcnow(),
                                                               rows=summary.rows_sent, **m))
        return True
    except SQLAlchemyError:
        return False  # a read-only source: the export itself is committed, the next one is just not incremental


def _run(sources: Sequence[Source], target: Union[str, Path, Engine], anonymize_key: Optional[bytes],
         progress: Optional[Progress], incremental: bool) -> ExportSummary:
    t0 = time.perf_counter()
    if isinstance(target, Engine):
        tengine, own_t = target, False
    else:
        try:
            tengine, own_t = make_engine(normalize_url(target)), True
        except (OSError, SchemaError) as e:
            raise _error(e, str(target)) from None
    where, key = _where(tengine), target_key(tengine)
    tpath = Path(tengine.url.database) if tengine.url.get_backend_name() == "sqlite" and tengine.url.database else None
    created = tpath is not None and not tpath.exists()
    summary = ExportSummary(target=key)
    opened: List[Tuple[Engine, bool, str]] = []
    try:
        for s in sources:
            eng, own = _source_engine(s)
            opened.append((eng, own, _where(eng)))
            if target_key(eng) == key:
                raise ExportError(f"{where} is both a source and the target")
        marks_by_source = []
        transfer = None
        with writer(tengine).begin() as tconn:
            ensure_schema(tconn, create=True)
            transfer = _Transfer(tconn, summary, anonymizer(anonymize_key) if anonymize_key else None, progress)
            for eng, _, name in opened:
                with eng.connect() as sconn:
                    _check_source(sconn)
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
        raise _error(e, where) from None
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


def export_to(source: Source, target: Union[str, Path, Engine], anonymize_key: Optional[bytes] = None,
              progress: Optional[Progress] = None, incremental: bool = True) -> ExportSummary:
    """Upsert a store's rows into ``target`` (a SQLite path or SQLAlchemy URL), in one transaction."""
    return _run([source], target, anonymize_key, progress, incremental)


def merge(sources: Sequence[Source], into: Union[str, Path, Engine], anonymize_key: Optional[bytes] = None,
          progress: Optional[Progress] = None) -> ExportSummary:
    """Merge device databases into one, all in one transaction; sources are only read."""
    if not sources:
        raise ExportError("merge needs at least one source database")
    return _run(list(sources), into, anonymize_key, progress, incremental=False)


__all__ = ["Conflict", "ExportError", "ExportSummary", "anonymizer", "export_to", "merge"]

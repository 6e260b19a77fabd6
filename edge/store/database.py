"""The result store: every image the device sees, the models it used and its daemon runs.

SQLite in WAL mode so that `status` and `report` read while the daemon writes without "database is
locked"; synchronous=FULL by default because the rows are medical records (a committed result must
survive a power cut). Writers take the lock up front (BEGIN IMMEDIATE): a deferred transaction that reads
and then writes can fail with SQLITE_BUSY without waiting, which the busy timeout cannot help. PostgreSQL
works too (a clinic server). The schema and its migrations live in :mod:`edge.store.schema`, the reads in
:mod:`edge.store.queries`, the one mapping between an image's result and its row in :mod:`edge.store.rows`.
"""

from __future__ import annotations

import json
import os
import socket
import time
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Sequence

from sqlalchemy import false, func, select
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.exc import DatabaseError, IntegrityError

from edge.store.engine import make_engine, missing_sqlite_file, normalize_url, open_schema, readonly_reason, writer
from edge.store.queries import ImageQueries
from edge.store.records import Counts, DatabaseGone, ImageRecord, RunInfo, StoreError, TimingStats, timing_stats
from edge.store.rows import image_row
from edge.store.samplerule import SampleRule
from edge.store.samples import Samples
from edge.store.schema import SchemaError, images, models, runs, utcnow


class Store(ImageQueries):
    """One device's view of a result database. Thread-safe: each call uses its own pooled connection.
    Its writes are here, its reads of images and runs in :class:`edge.store.queries.ImageQueries`."""

    def __init__(self, engine: Engine, device_id: Optional[str], sample_rule: Optional[SampleRule] = None):
        self.engine = engine
        self._w = writer(engine)
        self.device_id = device_id
        # The store's samples, aggregated with the model card's sample rule as their fields are recorded.
        self.samples = Samples(engine, self.write, self.device, sample_rule)
        db = engine.url.database if engine.url.get_backend_name() == "sqlite" else None
        self._file = Path(db) if db and db != ":memory:" and Path(db).is_file() else None
        self._identity = self._file_identity() if self._file else None

    def _file_identity(self) -> Optional[tuple]:
        if self._file is None:
            return None
        try:
            st = self._file.stat()
        except OSError:
            return None
        return st.st_dev, st.st_ino

    def check_file(self) -> None:
        """Raise :class:`DatabaseGone` when the SQLite file is no longer the one that was opened."""
        if self._file is not None and self._file_identity() != self._identity:
            raise DatabaseGone(f"database file {self._file} was deleted or replaced while open")

    @classmethod
    def open(
        cls,
        url: str | Path,
        device_id: Optional[str] = None,
        busy_timeout_ms: int = 5000,
        synchronous: str = "FULL",
        create: bool = True,
        sample_rule: Optional[SampleRule] = None,
    ) -> Store:
        """Open (creating or upgrading the schema) a store. ``create=False``: a missing SQLite file is an
        error instead of a new empty database (for readers such as `status` and `report`). ``sample_rule``:
        the model card's rule that :attr:`samples` aggregates the recorded fields with (a writer's; see
        :attr:`edge.inference.card.ModelCard.sample_rule`)."""
        u = make_url(normalize_url(url))
        if not create and missing_sqlite_file(url):
            raise StoreError(
                f"database not found: {u.database} (the daemon creates it when it starts, as does "
                f"`edge-screen config check`)"
            )
        try:
            engine = make_engine(u.render_as_string(hide_password=False), busy_timeout_ms, synchronous)
        except SchemaError as e:
            raise StoreError(str(e)) from None
        except OSError as e:  # the SQLite file's folder cannot be created (read-only medium, a file in the way)
            raise StoreError(f"cannot create the database folder for {u.database}: {e.strerror or e}") from None
        try:
            open_schema(engine, create=create)
        except SchemaError as e:
            engine.dispose()
            raise StoreError(str(e)) from None
        except DatabaseError as e:
            engine.dispose()
            where = u.database if u.get_backend_name() == "sqlite" else u.render_as_string(hide_password=True)
            folder = Path(u.database).parent if u.get_backend_name() == "sqlite" and u.database else None
            if folder is not None and folder.is_dir() and not os.access(folder, os.W_OK):
                # SQLite in WAL mode creates its -wal and -shm files beside the database, so a read-only
                # folder (or filesystem) cannot even be opened.
                raise StoreError(
                    f"cannot open {where}: its folder {folder} is read-only or not writable ({e.orig})"
                ) from None
            raise StoreError(f"cannot open {where}: {e.orig}") from None
        return cls(engine, device_id, sample_rule)

    def close(self) -> None:
        self.engine.dispose()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _device(self, device_id: Optional[str] = None) -> str:
        d = device_id or self.device_id
        if not d:
            raise StoreError("no device_id: open the store with the device id to write")
        return d

    def device(self) -> str:
        """This store's device id (an error without one): what library modules scope their rows by."""
        return self._device()

    @contextmanager
    def write(self) -> Iterator[Any]:
        """A write transaction for library modules (samples, reviews, retention, sessions): on SQLite it
        takes the write lock at BEGIN, so a read-then-write inside it cannot fail half way with SQLITE_BUSY.

        The file is checked before and after: a commit into a deleted (unlinked) or replaced SQLite file
        is in no database, so it raises :class:`DatabaseGone` instead of returning as if saved (the review
        app answered 303 to 20 sign-offs that went nowhere)."""
        self.check_file()
        with self._w.begin() as conn:
            yield conn
        self.check_file()

    def check_writable(self) -> None:
        """Raise :class:`StoreError` (one line) when nothing can be written: a read-only file, folder or
        filesystem (an SD card remounted read-only). A no-op UPDATE is enough: SQLite refuses any write
        statement on a read-only database, even one that changes no row, and nothing is changed."""
        self.check_file()
        try:
            with self._w.begin() as conn:
                conn.execute(runs.update().where(false()).values(version=runs.c.version))
        except DatabaseError as e:
            raise StoreError(f"cannot write to {self.where()}: {readonly_reason(e)}") from None

    def where(self) -> str:
        """The database for messages: the SQLite file, or the URL without its password."""
        u = self.engine.url
        return (
            (u.database or ":memory:") if u.get_backend_name() == "sqlite" else u.render_as_string(hide_password=True)
        )

    # -------------------------------------------------------------------------------------------- writes
    def record(self, rec: ImageRecord) -> str:
        """Insert one image result in one transaction and return its id. Recording the same file (device,
        path, sha256) again returns the id of the existing row and changes nothing."""
        return self.record_many([rec])[0]

    def record_many(self, recs: Sequence[ImageRecord]) -> List[str]:
        """Insert several image results in ONE transaction and return their ids, in order.

        A burst commits many images per fsync this way (synchronous=FULL costs one fsync per commit, about
        as much as an inference). All or nothing: after a crash before the commit none of them is recorded
        and the backlog scan processes them again. Exactly-once as :meth:`record`: a (device, path, sha256)
        that is already recorded, or repeated in ``recs``, gets the existing id and no new row. The samples
        of the new rows are recomputed in the same transaction (:meth:`Samples.update`).
        """
        t0 = time.perf_counter()
        self.check_file()
        rows = [image_row(rec, self._device(rec.device_id)) for rec in recs]
        ids: List[str] = []
        try:
            with self._w.begin() as conn:
                known = self._existing(conn, rows)
                new = []
                for row in rows:
                    key = (row["device_id"], row["path"], row["sha256"])
                    if key not in known:
                        known[key] = row["id"]
                        new.append(row)
                    ids.append(known[key])
                store_ms = round((time.perf_counter() - t0) * 1000.0, 3)
                for row in new:
                    if row["t_store_ms"] is None:
                        row["t_store_ms"] = store_ms
                        if row["t_total_ms"] is not None:
                            row["t_total_ms"] = round(row["t_total_ms"] + store_ms, 3)
                if new:
                    conn.execute(images.insert(), new)
                    # The samples these fields belong to, in the same transaction: never a field without
                    # its sample's aggregate, nor an aggregate counting a field that was not recorded.
                    touched = [r for r in new if r.get("sample_id")]
                    if touched:
                        self.samples.update(
                            conn,
                            (r["sample_id"] for r in touched),
                            touched[-1]["model_id"],
                            touched[-1]["model_sha256"],
                        )
        except IntegrityError:
            # PostgreSQL has no BEGIN IMMEDIATE: a concurrent writer may have inserted the same file between
            # our check and our insert. The constraint caught it; one record gets the winner's id.
            if len(rows) != 1:
                raise
            with self.engine.connect() as conn:
                existing = self._existing(conn, rows).get((rows[0]["device_id"], rows[0]["path"], rows[0]["sha256"]))
            if existing is None:
                raise
            return [existing]
        return ids

    def set_moved_to(self, record_id: str, path: str) -> None:
        """Where `daemon.after = "move"` put the file (recorded after the move: the move follows the commit)."""
        with self._w.begin() as conn:
            conn.execute(images.update().where(images.c.id == record_id).values(moved_to=path))

    @staticmethod
    def _existing(conn, rows: List[Dict[str, Any]]) -> Dict[tuple, str]:
        """(device_id, path, sha256) -> id of the rows already recorded for these keys, in one query."""
        q = select(images.c.device_id, images.c.path, images.c.sha256, images.c.id).where(
            images.c.device_id.in_({r["device_id"] for r in rows}), images.c.path.in_({r["path"] for r in rows})
        )
        wanted = {(r["device_id"], r["path"], r["sha256"]) for r in rows}
        return {(d, p, s): i for d, p, s, i in conn.execute(q) if (d, p, s) in wanted}

    def ensure_model(self, name: str, sha256: str, card: Optional[dict] = None) -> str:
        """The id of this device's row for the model with this sha256, inserted on first sight."""
        device = self._device()
        q = select(models.c.id).where(models.c.device_id == device, models.c.sha256 == sha256)
        with self._w.begin() as conn:
            mid = conn.execute(q).scalar()
            if mid is None:
                mid = str(uuid.uuid4())
                conn.execute(
                    models.insert().values(
                        id=mid,
                        device_id=device,
                        name=name,
                        sha256=sha256,
                        first_seen=utcnow(),
                        card=json.dumps(card, sort_keys=True) if card is not None else None,
                    )
                )
        return mid

    def start_run(self, version: str, pid: Optional[int] = None, hostname: Optional[str] = None) -> str:
        """Record a daemon start. Earlier runs of this host whose process is gone without a stop (kill -9,
        power cut) are closed as ``unclean``, at the time of their last recorded image."""
        device, pid = self._device(), pid if pid is not None else os.getpid()
        hostname = hostname or socket.gethostname()
        rid = str(uuid.uuid4())
        with self._w.begin() as conn:
            for r in conn.execute(
                select(runs).where(runs.c.device_id == device, runs.c.hostname == hostname, runs.c.stopped_at.is_(None))
            ).all():
                if r.pid and _alive(r.pid):
                    continue
                last = conn.execute(select(func.max(images.c.recorded_at)).where(images.c.run_id == r.id)).scalar()
                conn.execute(
                    runs.update()
                    .where(runs.c.id == r.id)
                    .values(
                        stopped_at=last or r.started_at, exit_reason="unclean: process ended without a recorded stop"
                    )
                )
            conn.execute(
                runs.insert().values(
                    id=rid, device_id=device, started_at=utcnow(), version=version, pid=pid, hostname=hostname
                )
            )
        return rid

    def stop_run(self, run_id: str, reason: str) -> None:
        with self._w.begin() as conn:
            conn.execute(runs.update().where(runs.c.id == run_id).values(stopped_at=utcnow(), exit_reason=reason))


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


__all__ = ["Counts", "DatabaseGone", "ImageRecord", "RunInfo", "Store", "StoreError", "TimingStats", "timing_stats"]

"""The result store: every image the device sees, the models it used and its daemon runs.

SQLite in WAL mode so that `status` and `report` read while the daemon writes without "database is
locked"; synchronous=FULL by default because the rows are medical records (a committed result must
survive a power cut). Writers take the lock up front (BEGIN IMMEDIATE): a deferred transaction that reads
and then writes can fail with SQLITE_BUSY without waiting, which the busy timeout cannot help. PostgreSQL
works too (a clinic server). The schema and its migrations live in :mod:`edge.store.schema`.
"""

from __future__ import annotations

import json
import os
import socket
import time
import uuid
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Dict, Iterable, Iterator, List, Optional, Sequence, Set, Tuple

from sqlalchemy import and_, false, func, or_, select, true
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.exc import DatabaseError, IntegrityError

from edge.store.engine import make_engine, missing_sqlite_file, normalize_url, open_schema, readonly_reason, writer
from edge.store.records import Counts, DatabaseGone, ImageRecord, RunInfo, StoreError, TimingStats, timing_stats
from edge.store.samples import update_samples
from edge.store.schema import SchemaError, images, models, runs, utcnow
from edge.vocabulary import STAGES, STATUSES, VERDICTS

TIMING_COLUMNS = tuple(f"t_{s}_ms" for s in STAGES)


class Store:
    """One device's view of a result database. Thread-safe: each call uses its own pooled connection."""

    def __init__(self, engine: Engine, device_id: Optional[str]):
        self.engine = engine
        self._w = writer(engine)
        self.device_id = device_id
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
    ) -> Store:
        """Open (creating or upgrading the schema) a store. ``create=False``: a missing SQLite file is an
        error instead of a new empty database (for readers such as `status` and `report`)."""
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
        return cls(engine, device_id)

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

    def record_many(self, recs: Sequence[ImageRecord], sample_rule=None) -> List[str]:
        """Insert several image results in ONE transaction and return their ids, in order.

        A burst commits many images per fsync this way (synchronous=FULL costs one fsync per commit, about
        as much as an inference). All or nothing: after a crash before the commit none of them is recorded
        and the backlog scan processes them again. Exactly-once as :meth:`record`: a (device, path, sha256)
        that is already recorded, or repeated in ``recs``, gets the existing id and no new row.
        """
        t0 = time.perf_counter()
        self.check_file()
        rows = [self._row(rec) for rec in recs]
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
                        update_samples(
                            conn,
                            self._device(),
                            (r["sample_id"] for r in touched),
                            sample_rule,
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

    def _row(self, rec: ImageRecord) -> Dict[str, Any]:
        if rec.status not in STATUSES:
            raise ValueError(f"status {rec.status!r} is not one of {', '.join(STATUSES)}")
        if rec.verdict is not None and rec.verdict not in VERDICTS:
            raise ValueError(f"verdict {rec.verdict!r} is not one of {', '.join(VERDICTS)}")
        if not rec.sha256:
            raise ValueError("sha256 is required (it makes recording exactly-once)")
        row = rec.to_row()
        row["id"] = rec.id or str(uuid.uuid4())
        row["device_id"] = self._device(rec.device_id)
        row["filename"] = rec.filename or os.path.basename(rec.path)
        row["recorded_at"] = rec.recorded_at or utcnow()
        return row

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

    # --------------------------------------------------------------------------------------------- reads
    def _mine(self, device_id: Optional[str]):
        d = device_id or self.device_id
        return images.c.device_id == d if d else true()

    def get(self, image_id: str) -> Optional[ImageRecord]:
        with self.engine.connect() as conn:
            row = conn.execute(select(images).where(images.c.id == image_id)).first()
        return ImageRecord.from_row(row) if row else None

    def find_by_sha256(self, sha256: str, device_id: Optional[str] = None) -> Optional[ImageRecord]:
        """The first result for this content (never a duplicate row), for pointing a second copy at it."""
        return self.lookup("", sha256, device_id)[1]

    def lookup(self, path: str, sha256: str, device_id: Optional[str] = None) -> Tuple[bool, Optional[ImageRecord]]:
        """:meth:`is_recorded` and :meth:`find_by_sha256` in one query: the pipeline asks both for every
        image, and each query is a connection checkout plus BEGIN and rollback."""
        if not self._content_seen(sha256):
            return False, None  # the usual answer for a new image, at a third of the query's cost
        q = (
            select(images)
            .where(images.c.sha256 == sha256, self._mine(device_id))
            .order_by(images.c.recorded_at, images.c.id)
        )
        with self.engine.connect() as conn:
            rows = conn.execute(q).all()
        first = next((r for r in rows if r.status != "duplicate"), None)
        return any(r.path == str(path) for r in rows), ImageRecord.from_row(first) if first else None

    def _content_seen(self, sha256: str) -> bool:
        """Fast path of :meth:`lookup`: does any row (of any device) hold this content at all? One indexed
        probe through the driver, without building rows; True where that is not SQLite."""
        if self.engine.dialect.name != "sqlite":
            return True
        with self.engine.connect() as conn:
            probe = f"SELECT 1 FROM {images.name} WHERE sha256 = ? LIMIT 1"
            return conn.exec_driver_sql(probe, (sha256,)).first() is not None

    def is_recorded(self, path: str, sha256: str, device_id: Optional[str] = None) -> bool:
        return self.lookup(path, sha256, device_id)[0]

    def recorded_files(
        self, paths: Optional[Iterable[str]] = None, device_id: Optional[str] = None
    ) -> Dict[str, Tuple[Set[int], float]]:
        """path -> (sizes recorded for it, the latest recording time as a Unix timestamp), for ``paths``
        (the files in the inbox now; None: every recorded path).

        The backlog scan skips a recorded path only while the file there still looks like what was
        recorded: same size and not modified since. A path overwritten while the daemon was down holds an
        image that was never screened. Asking only for the inbox's files keeps a start with 100,000 rows of
        history as fast and as small as an empty one."""
        out: Dict[str, Tuple[Set[int], float]] = {}
        # A file that could not be read (permissions, I/O error) was never screened: once that is fixed it
        # must be taken again, so those rows do not count as "recorded" here.
        transient = (images.c.status == "rejected") & images.c.reason.like("cannot read file:%")
        q = select(images.c.path, images.c.bytes, images.c.recorded_at).where(self._mine(device_id), ~transient)
        wanted = list(paths) if paths is not None else None
        chunks = (
            [q.where(images.c.path.in_(wanted[i : i + 500])) for i in range(0, len(wanted), 500)]
            if wanted is not None
            else [q]
        )
        with self.engine.connect() as conn:
            for path, size, at in (row for chunk in chunks for row in conn.execute(chunk)):
                if at is not None and at.tzinfo is None:
                    at = at.replace(tzinfo=timezone.utc)
                ts = at.timestamp() if at is not None else 0.0
                sizes, latest = out.get(path, (set(), 0.0))
                sizes.add(int(size or 0))
                out[path] = (sizes, max(latest, ts))
        return out

    def counts(
        self, since: Optional[datetime] = None, until: Optional[datetime] = None, device_id: Optional[str] = None
    ) -> Counts:
        """Images recorded in [since, until) by status and by verdict (verdict only for classified rows)."""
        w = [self._mine(device_id)] + _window(since, until)
        out = Counts()
        with self.engine.connect() as conn:
            for status, n in conn.execute(select(images.c.status, func.count()).where(*w).group_by(images.c.status)):
                out.by_status[status] = n
                out.total += n
            for verdict, n in conn.execute(
                select(images.c.verdict, func.count())
                .where(*w, images.c.status == "classified")
                .group_by(images.c.verdict)
            ):
                out.by_verdict[verdict or "none"] = n
            out.needs_review = (
                conn.execute(select(func.count()).where(*w, images.c.needs_review.is_(True))).scalar() or 0
            )
        return out

    def last_error(
        self, device_id: Optional[str] = None, statuses: Sequence[str] = ("unreadable", "rejected")
    ) -> Optional[ImageRecord]:
        """The most recent image with one of ``statuses`` (its reason is the error). `status` asks for
        "rejected" only: an unreadable field is a quality refusal, not an error."""
        q = (
            select(images)
            .where(images.c.status.in_(tuple(statuses)), self._mine(device_id))
            .order_by(images.c.recorded_at.desc(), images.c.id.desc())
            .limit(1)
        )
        with self.engine.connect() as conn:
            row = conn.execute(q).first()
        return ImageRecord.from_row(row) if row else None

    def recent_timings(self, n: int = 100, device_id: Optional[str] = None) -> Dict[str, List[float]]:
        """Per-stage times (ms) of the last ``n`` classified images, stage name -> values."""
        cols = [images.c[c] for c in TIMING_COLUMNS]
        q = (
            select(*cols)
            .where(images.c.status == "classified", self._mine(device_id))
            .order_by(images.c.recorded_at.desc(), images.c.id.desc())
            .limit(n)
        )
        out: Dict[str, List[float]] = {s: [] for s in STAGES}
        with self.engine.connect() as conn:
            for row in conn.execute(q):
                for s, v in zip(STAGES, row):
                    if v is not None:
                        out[s].append(float(v))
        return out

    def timing_stats(self, n: int = 100, device_id: Optional[str] = None) -> Dict[str, TimingStats]:
        return {s: timing_stats(v) for s, v in self.recent_timings(n, device_id).items()}

    def last_run(self, device_id: Optional[str] = None) -> Optional[RunInfo]:
        d = device_id or self.device_id
        q = select(runs).where(runs.c.device_id == d if d else true()).order_by(runs.c.started_at.desc()).limit(1)
        with self.engine.connect() as conn:
            row = conn.execute(q).first()
        return RunInfo(**row._mapping) if row else None

    def iter_images(
        self,
        since: Optional[datetime] = None,
        until: Optional[datetime] = None,
        device_id: Optional[str] = None,
        batch: int = 2000,
    ) -> Iterator[ImageRecord]:
        """Rows recorded in [since, until), oldest first, all devices unless ``device_id`` is given.
        Keyset pagination: memory stays flat and no read transaction is held across a slow consumer."""
        w = _window(since, until) + ([images.c.device_id == device_id] if device_id else [])
        after = None
        while True:
            q = select(images).where(*w)
            if after is not None:
                q = q.where(
                    or_(images.c.recorded_at > after[0], and_(images.c.recorded_at == after[0], images.c.id > after[1]))
                )
            with self.engine.connect() as conn:
                rows = conn.execute(q.order_by(images.c.recorded_at, images.c.id).limit(batch)).all()
            for row in rows:
                yield ImageRecord.from_row(row)
            if len(rows) < batch:
                return
            after = (rows[-1].recorded_at, rows[-1].id)

    def count_images(self, device_id: Optional[str] = None) -> int:
        with self.engine.connect() as conn:
            return conn.execute(select(func.count()).select_from(images).where(self._mine(device_id))).scalar() or 0


def _window(since: Optional[datetime], until: Optional[datetime]) -> list:
    w = []
    if since is not None:
        w.append(images.c.recorded_at >= since)
    if until is not None:
        w.append(images.c.recorded_at < until)
    return w


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


__all__ = ["Counts", "DatabaseGone", "ImageRecord", "RunInfo", "Store", "StoreError", "TimingStats", "timing_stats"]

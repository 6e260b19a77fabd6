"""The store's reads of images and runs (:class:`ImageQueries`, a part of :class:`edge.store.database.Store`):
the pipeline's duplicate lookup, the backlog scan's recorded files, and what `status`, `report`, export and
retention read. Each read takes its own pooled connection and no write lock."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Dict, Iterable, Iterator, List, Optional, Sequence, Set, Tuple

from sqlalchemy import and_, func, or_, select, true
from sqlalchemy.engine import Engine

from edge.store.records import Counts, ImageRecord, RunInfo, TimingStats, timing_stats
from edge.store.rows import TIMING_COLUMNS, image_record
from edge.store.schema import images, runs
from edge.vocabulary import STAGES, Status


class ImageQueries:
    """Reads scoped to one device (``device_id``: this store's unless another is named; a store opened
    without one reads every device's rows)."""

    engine: Engine
    device_id: Optional[str]

    def _mine(self, device_id: Optional[str]):
        d = device_id or self.device_id
        return images.c.device_id == d if d else true()

    def get(self, image_id: str) -> Optional[ImageRecord]:
        with self.engine.connect() as conn:
            row = conn.execute(select(images).where(images.c.id == image_id)).first()
        return image_record(row) if row else None

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
        first = next((r for r in rows if r.status != Status.DUPLICATE), None)
        return any(r.path == str(path) for r in rows), image_record(first) if first else None

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
        transient = (images.c.status == Status.REJECTED) & images.c.reason.like("cannot read file:%")
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
                .where(*w, images.c.status == Status.CLASSIFIED)
                .group_by(images.c.verdict)
            ):
                out.by_verdict[verdict or "none"] = n
            out.needs_review = (
                conn.execute(select(func.count()).where(*w, images.c.needs_review.is_(True))).scalar() or 0
            )
        return out

    def last_error(
        self, device_id: Optional[str] = None, statuses: Sequence[str] = (Status.UNREADABLE, Status.REJECTED)
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
        return image_record(row) if row else None

    def recent_timings(self, n: int = 100, device_id: Optional[str] = None) -> Dict[str, List[float]]:
        """Per-stage times (ms) of the last ``n`` classified images, stage name -> values."""
        cols = [images.c[c] for c in TIMING_COLUMNS]
        q = (
            select(*cols)
            .where(images.c.status == Status.CLASSIFIED, self._mine(device_id))
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
                yield image_record(row)
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


__all__ = ["ImageQueries"]

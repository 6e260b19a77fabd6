"""The per-table rules of :mod:`edge.export.merge`: how one source's rows go into an open target transaction.

- runs, models, images, reviews are insert-only: a row already there with the same content is skipped, the
  same id with other content is a conflict (reported, never overwritten). The exceptions are columns that
  are filled in after the row was first written, and so may have been exported empty: a run's stop
  (RUN_FILLED_LATER) and an image's moved_to (IMAGE_FILLED_LATER, set right after the commit).
- samples are the one mutable table: the owning device moves a sample forward (more fields,
  collecting -> ready -> signed) and a forward-moved copy replaces the target's row. A signed row is final.

Sources may be older devices (schema 1 or 2, never upgraded by an export, which only reads them): columns
and tables they lack are read as NULL / no rows.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Iterable, Iterator, List, Optional, Sequence, Tuple

from sqlalchemy import Table, and_, func, literal_column, or_, select
from sqlalchemy.engine import Connection

from edge.store.schema import images, models, reviews, runs, samples
from edge.vocabulary import SAMPLE_STATUSES, SampleStatus

Progress = Callable[[int, int], None]
BATCH = 2000
RUN_FILLED_LATER = ("stopped_at", "exit_reason")  # a run exported while running gets these later
# `daemon.after = "move"` records the new place right after the commit; retention records when it deleted
# the file of an exported row (purged_at, where the schema has it).
IMAGE_FILLED_LATER = ("moved_to", "purged_at")
# How many of the last rows already exported an incremental export looks at again for a moved_to filled in
# since: the move follows the commit by milliseconds, so only the newest rows at export time can be
# missing it. Older ones (an export interrupted for days between commit and move) need --full.
RECHECK = BATCH
SAMPLE_RANK = {s: i for i, s in enumerate(SAMPLE_STATUSES)}  # the order a sample moves in
SAMPLE_IDENTITY = ("device_id", "sample_id", "created_at")


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
        return (
            f"{self.table} {self.id} (device {self.device_id}) from {self.source}: differs in {', '.join(self.columns)}"
        )


@dataclass
class ExportSummary:
    target: str
    rows_sent: int = 0  # images inserted into the target
    rows_skipped: int = 0  # images already there with the same content
    rows_completed: int = 0  # images exported before their moved_to was known, now filled in
    runs_sent: int = 0  # runs and models inserted or completed (stopped_at filled in)
    models_sent: int = 0
    samples_sent: int = 0  # inserted
    samples_updated: int = 0  # moved forward by their device (more fields, ready, signed)
    samples_skipped: int = 0  # already there as they are
    reviews_sent: int = 0
    reviews_skipped: int = 0
    conflicts: List[Conflict] = field(default_factory=list)
    seconds: float = 0.0
    sources: List[str] = field(default_factory=list)
    watermark_saved: Optional[bool] = None  # None: not applicable (merge, CSV)

    @property
    def rows_per_s(self) -> float:
        n = self.rows_sent + self.rows_skipped
        return n / self.seconds if self.seconds > 0 else 0.0


def _diff(a: dict, b: dict) -> List[str]:
    return [k for k in a if a[k] != b.get(k)]


# ----------------------------------------------------------------------------------- reading old sources
def source_tables(sconn: Connection) -> set:
    return set(sconn.dialect.get_table_names(sconn))


def present_select(sconn: Connection, table: Table, extra: Sequence = ()):
    """``select`` of the columns of ``table`` that this source has (schema-1/2 devices lack v3's), plus
    ``extra``; :func:`full_row` fills in the missing ones."""
    have = {c["name"] for c in sconn.dialect.get_columns(sconn, table.name)}
    return select(*[c for c in table.columns if c.name in have], *extra)


def full_row(table: Table, row) -> dict:
    d = dict(row._mapping)
    return {**{c.name: None for c in table.columns}, **d}


def sample_forward(new: dict, old: dict) -> bool:
    """Whether ``new`` is a later state of the same sample than ``old``.

    Not by updated_at alone: a Pi has no real-time clock and can come up after a reboot with a clock behind
    the last export, so a later change can carry an earlier time. What the device does to a sample only
    moves one way: fields are appended (never removed) and status goes collecting -> ready -> signed. So
    the status rank and the field count order the states; updated_at only breaks a tie (a re-count that
    added no field, e.g. a duplicate file). A copy that is behind the target, or ahead in one and behind in
    the other (a device restored from a backup that diverged), is not forward: that is a conflict.
    """
    rn, ro = SAMPLE_RANK.get(new["status"], -1), SAMPLE_RANK.get(old["status"], -1)
    if rn < ro or (new["fields"] or 0) < (old["fields"] or 0):
        return False
    return (rn, new["fields"] or 0, new["updated_at"]) > (ro, old["fields"] or 0, old["updated_at"])


def late_forward(new: dict, old: dict, diff) -> bool:
    """A signed sample may still move one way: fields recorded after its sign-off (``late_fields``) only grow;
    everything that was signed stays as it was."""
    return (
        old["status"] == new["status"] == SampleStatus.SIGNED
        and set(diff) <= {"late_fields", "updated_at"}
        and (new.get("late_fields") or 0) > (old.get("late_fields") or 0)
    )


class Transfer:
    """Copies rows from sources into one open target transaction, counting into ``summary``."""

    def __init__(
        self,
        tconn: Connection,
        summary: ExportSummary,
        anonymize: Optional[Callable[..., dict]],
        progress: Optional[Progress],
    ):
        self.t, self.s, self.anon, self.progress = tconn, summary, anonymize, progress
        self.done = self.total = 0

    def _anon(self, rows: List[dict], table: str) -> List[dict]:
        return [self.anon(r, table) for r in rows] if self.anon else rows

    def _step(self, n: int) -> None:
        self.done += n
        if self.progress:
            self.progress(self.done, self.total)

    def _conflict(self, table: str, r: dict, source: str, columns: List[str]) -> None:
        self.s.conflicts.append(Conflict(table, r["id"], r["device_id"], source, columns))

    def _split_known(self, table: Table, rows: List[dict]) -> Tuple[List[dict], List[Tuple[dict, dict]]]:
        """(rows the target lacks, [(row, the target's copy)] for the others), by id, in one query."""
        have = (
            {
                r.id: dict(r._mapping)
                for r in self.t.execute(select(table).where(table.c.id.in_([r["id"] for r in rows])))
            }
            if rows
            else {}
        )
        return [r for r in rows if r["id"] not in have], [(r, have[r["id"]]) for r in rows if r["id"] in have]

    def _unresolved(self, col, ids: Iterable[Optional[str]]) -> set:
        """The ids among ``ids`` that the target lacks: a row pointing at them would break a foreign key
        (its parent was a conflict, kept out of the target)."""
        want = {i for i in ids if i}
        if not want:
            return set()
        have = {r[0] for r in self.t.execute(select(col).where(col.in_(want)))}
        return want - have

    # ------------------------------------------------------------------------------ runs, models, reviews
    def small_table(self, table: Table, rows: Iterable[dict], source: str) -> int:
        """Insert-only copy of a batch of rows; returns how many were inserted or completed."""
        new, known = self._split_known(table, self._anon(list(rows), table.name))
        sent = 0
        for r, old in known:
            diff = _diff(r, old)
            if table is runs and diff and set(diff) <= set(RUN_FILLED_LATER) and old["stopped_at"] is None:
                self.t.execute(runs.update().where(runs.c.id == r["id"]).values(**{k: r[k] for k in diff}))
                sent += 1
            elif diff:
                self._conflict(table.name, r, source, diff)
            elif table is reviews:
                self.s.reviews_skipped += 1
        if table is models and new:  # (device_id, sha256) is unique: the same model under another id
            keys = {(r["device_id"], r["sha256"]): r for r in new}
            for m in self.t.execute(
                select(models.c.id, models.c.device_id, models.c.sha256).where(
                    models.c.sha256.in_([k[1] for k in keys])
                )
            ):
                if (m.device_id, m.sha256) in keys:
                    r = keys[(m.device_id, m.sha256)]
                    self._conflict("models", r, source, ["id"])
                    new.remove(r)
        if table is reviews and new:
            missing = self._unresolved(images.c.id, (r["image_id"] for r in new))
            for r in [r for r in new if r["image_id"] in missing]:
                self._conflict("reviews", r, source, ["image_id"])
                new.remove(r)
        if new:
            self.t.execute(table.insert(), new)
        return sent + len(new)

    # ------------------------------------------------------------------------------------------- images
    def images_batch(self, rows: List[dict], source: str, count: bool = True) -> None:
        rows = self._anon(rows, "images")
        ids, shas = [r["id"] for r in rows], list({r["sha256"] for r in rows})
        by_id: Dict[str, dict] = {}
        by_key: Dict[tuple, object] = {}  # (device, path, sha256) -> the row's id or the new row
        for row in self.t.execute(select(images).where(or_(images.c.id.in_(ids), images.c.sha256.in_(shas)))):
            found = dict(row._mapping)
            by_id[found["id"]] = found
            by_key[(found["device_id"], found["path"], found["sha256"])] = found["id"]
        new: List[dict] = []
        for r in rows:
            old = by_id.get(r["id"])
            if old is not None:
                diff = _diff(r, old)
                later = bool(diff) and set(diff) <= set(IMAGE_FILLED_LATER)
                if later and all(old[k] is None for k in diff):
                    self.t.execute(images.update().where(images.c.id == r["id"]).values(**{k: r[k] for k in diff}))
                    self.s.rows_completed += 1
                elif later and all(r[k] is None for k in diff):  # a copy from before they were filled in
                    if count:
                        self.s.rows_skipped += 1
                elif diff:
                    self._conflict("images", r, source, diff)
                elif count:
                    self.s.rows_skipped += 1
                continue
            k = (r["device_id"], r["path"], r["sha256"])
            if k in by_key:  # the same file recorded under another id: exactly-once forbids a second row
                self._conflict("images", r, source, ["id"])
                continue
            by_key[k] = by_id[r["id"]] = r
            new.append(r)
        # A duplicate must follow its original for the self-reference; sources are read in insertion order.
        if new:
            self.t.execute(images.insert(), new)
        self.s.rows_sent += len(new)
        if count:
            self._step(len(rows))

    def _images(self, sconn: Connection, name: str, watermarks: Optional[Dict[str, dict]]) -> Dict[str, dict]:
        sqlite = sconn.engine.url.get_backend_name() == "sqlite"
        seq: Any = literal_column("rowid") if sqlite else None
        below = []  # per device: the rows a still-valid watermark says were sent already
        for dev, wm in (watermarks or {}).items():
            if sqlite and wm.get("last_seq") is not None:
                below.append(and_(images.c.device_id == dev, seq <= wm["last_seq"]))
            elif wm.get("last_recorded_at") is not None:
                below.append(
                    and_(
                        images.c.device_id == dev,
                        or_(
                            images.c.recorded_at < wm["last_recorded_at"],
                            and_(images.c.recorded_at == wm["last_recorded_at"], images.c.id <= wm["last_id"]),
                        ),
                    )
                )
        has_moved = "moved_to" in {c["name"] for c in sconn.dialect.get_columns(sconn, "images")}
        if below and has_moved:
            self._recheck_moved(sconn, or_(*below), seq, name)
        q = present_select(sconn, images, [seq.label("_seq")] if sqlite else [])
        q = q.where(~or_(*below)) if below else q
        q = q.order_by(seq) if sqlite else q.order_by(images.c.recorded_at, images.c.id)
        self.total += sconn.execute(select(func.count()).select_from(q.subquery())).scalar() or 0
        marks: Dict[str, dict] = {}
        batch: List[dict] = []
        for r in sconn.execution_options(yield_per=BATCH).execute(q):
            d = full_row(images, r)
            s = d.pop("_seq", None)
            marks[d["device_id"]] = dict(last_recorded_at=d["recorded_at"], last_id=d["id"], last_seq=s)
            batch.append(d)
            if len(batch) >= BATCH:
                self.images_batch(batch, name)
                batch = []
        if batch:
            self.images_batch(batch, name)
        return marks

    def _recheck_moved(self, sconn: Connection, sent_already, seq, name: str) -> None:
        newest = (seq.desc(),) if seq is not None else (images.c.recorded_at.desc(), images.c.id.desc())
        q = (
            present_select(sconn, images)
            .where(sent_already, images.c.moved_to.isnot(None))
            .order_by(*newest)
            .limit(RECHECK)
        )
        rows = [full_row(images, r) for r in sconn.execute(q)]
        if rows:
            self.images_batch(rows, name, count=False)

    # ------------------------------------------------------------------------------------------ samples
    def samples_batch(self, rows: List[dict], source: str) -> None:
        new, known = self._split_known(samples, self._anon(rows, "samples"))
        for r, old in known:
            diff = _diff(r, old)
            if not diff:
                self.s.samples_skipped += 1
            elif (
                old["status"] != SampleStatus.SIGNED and not set(diff) & set(SAMPLE_IDENTITY) and sample_forward(r, old)
            ) or late_forward(r, old, diff):
                if self._unresolved(models.c.id, [r["model_id"]]):
                    self._conflict("samples", r, source, ["model_id"])
                    continue
                self.t.execute(samples.update().where(samples.c.id == r["id"]).values(**{k: r[k] for k in diff}))
                self.s.samples_updated += 1
            else:  # signed is final; behind or diverged is for a person to sort out
                self._conflict("samples", r, source, diff)
        if new:  # (device_id, sample_id) is unique: the same sample under another id cannot be a second row
            keys: Dict[tuple, Optional[dict]] = {(r["device_id"], r["sample_id"]): r for r in new}
            for o in self.t.execute(
                select(samples.c.device_id, samples.c.sample_id).where(samples.c.sample_id.in_({k[1] for k in keys}))
            ):
                clash = keys.pop((o.device_id, o.sample_id), None)
                if clash is not None:
                    self._conflict("samples", clash, source, ["id"])
                    new.remove(r)
            missing = self._unresolved(models.c.id, (r["model_id"] for r in new))
            for r in [r for r in new if r["model_id"] in missing]:
                self._conflict("samples", r, source, ["model_id"])
                new.remove(r)
        if new:
            self.t.execute(samples.insert(), new)
        self.s.samples_sent += len(new)
        self._step(len(rows))

    def _batched(self, sconn: Connection, table: Table, order) -> Iterator[List[dict]]:
        """All of a table's rows in batches. Samples and reviews are re-read on every export, not
        watermarked: a sample changes after it was sent, and neither carries a position that survives a
        clock jump (reviews are a person's work: hundreds a day, not the images' hundreds of thousands)."""
        if table.name not in source_tables(sconn):
            return
        q = present_select(sconn, table).order_by(*order)
        batch: List[dict] = []
        for r in sconn.execution_options(yield_per=BATCH).execute(q):
            batch.append(full_row(table, r))
            if len(batch) >= BATCH:
                yield batch
                batch = []
        if batch:
            yield batch

    # ------------------------------------------------------------------------------------- one source
    def source(self, sconn: Connection, name: str, watermarks: Optional[Dict[str, dict]]) -> Dict[str, dict]:
        """Send one source's runs, models, (new) images, samples and reviews; returns the new image
        watermark per device."""
        self.s.runs_sent += self.small_table(
            runs, [full_row(runs, r) for r in sconn.execute(present_select(sconn, runs))], name
        )
        self.s.models_sent += self.small_table(
            models, [full_row(models, r) for r in sconn.execute(present_select(sconn, models))], name
        )
        present = source_tables(sconn)
        for t in (samples, reviews):
            if t.name in present:
                self.total += sconn.execute(select(func.count()).select_from(t)).scalar() or 0
        marks = self._images(sconn, name, watermarks)
        for batch in self._batched(sconn, samples, (samples.c.id,)):
            self.samples_batch(batch, name)
        for batch in self._batched(sconn, reviews, (reviews.c.created_at, reviews.c.id)):
            self.s.reviews_sent += self.small_table(reviews, batch, name)
            self._step(len(batch))
        return marks


__all__ = [
    "BATCH",
    "Conflict",
    "ExportError",
    "ExportSummary",
    "IMAGE_FILLED_LATER",
    "Progress",
    "RUN_FILLED_LATER",
    "Transfer",
    "full_row",
    "present_select",
    "sample_forward",
    "source_tables",
]

"""Disk on a small SD card: retention of screened image files, and a low-disk state that pauses intake.

Retention deletes image FILES, never rows, and only files whose rows the clinic holds: every configured
clinic target (``retention.clinic_targets``, else ``export.target``) is asked for the rows, by id, before
their files go. An export watermark is not enough: any export sets one, and an export to a scratch file once
let retention delete 20 files whose rows the clinic database never got. A target that cannot be read holds
nothing; no target configured: nothing is deleted. A file past ``retention.keep_days``, or the oldest ones
while the screened files take more than ``retention.max_mb``, is deleted and its row gets ``purged_at``;
files the clinic lacks are kept whatever their age (it has no other copy). Files still in the inbox
(``after = "keep"``) count too: they are the same screened images.

Low disk: when the filesystem of the database or of the inbox has less than ``retention.min_free_mb``
free, the daemon stops taking new images (they wait, safe, in the inbox), says so in its log, its sd_notify
STATUS and `edge-screen status`, runs retention at once, and resumes when free space is back above the
watermark plus a margin (no flapping at the edge).
"""

from __future__ import annotations

import logging
import os
import shutil
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import List, Optional, Sequence, Set

from sqlalchemy import and_, select
from sqlalchemy.exc import SQLAlchemyError

from edge.config import redact_url
from edge.store.schema import images, utcnow
from edge.vocabulary import Status

log = logging.getLogger("edge.daemon.retention")
RESUME_MARGIN = 1.25  # resume only at 125 % of the watermark
CONNECT_TIMEOUT_S = 5  # a clinic server that does not answer holds nothing (see _with_timeout)


@dataclass
class DiskState:
    paused: bool
    free_mb: float
    where: str  # the fullest of the watched filesystems
    min_free_mb: float
    missing: List[str] = field(default_factory=list)  # watched folders that do not exist (yet)

    def describe(self) -> str:
        state = (
            "intake PAUSED: low disk"
            if self.paused
            else "ok"
            if not self.missing
            else f"{', '.join(self.missing)} does not exist"
        )
        return f"{state}: {self.free_mb:,.0f} MB free on {self.where} (minimum {self.min_free_mb:,.0f} MB)"


def _existing(path: Path) -> Path:
    p = Path(path)
    while not p.exists() and p != p.parent:  # a folder not made yet is on its parent's filesystem
        p = p.parent
    return p


def free_mb(path: Path) -> float:
    return shutil.disk_usage(_existing(path)).free / 1e6


def watched_paths(cfg) -> List[Path]:
    """The filesystems intake depends on: the inbox's and the SQLite database's."""
    from sqlalchemy.engine import make_url

    from edge.store.engine import normalize_url

    paths = [Path(cfg.daemon.inbox)]
    u = make_url(normalize_url(cfg.database.url))
    if u.get_backend_name() == "sqlite" and u.database not in (None, "", ":memory:"):
        paths.append(Path(u.database).parent)
    return paths


def disk_state(paths: List[Path], min_free_mb: float, was_paused: bool = False) -> DiskState:
    """Paused below ``min_free_mb``; once paused, stays so until free space reaches the margin above it."""
    worst = min(((free_mb(p), str(_existing(p))) for p in paths), default=(float("inf"), "-"))
    limit = min_free_mb * (RESUME_MARGIN if was_paused else 1.0)
    return DiskState(
        paused=min_free_mb > 0 and worst[0] < limit,
        free_mb=worst[0],
        where=worst[1],
        min_free_mb=min_free_mb,
        missing=[str(p) for p in paths if not Path(p).exists()],
    )


@dataclass
class Purge:
    deleted: int = 0
    freed_bytes: int = 0
    kept_unexported: int = 0  # files retention would have deleted but a clinic target lacks their rows
    unreachable: List[str] = field(default_factory=list)  # clinic targets that could not be read: "where: why"
    errors: List[str] = field(default_factory=list)


def clinic_targets(cfg) -> List[str]:
    """The clinic databases that must hold a row before its file may be deleted."""
    if cfg.retention.clinic_targets:
        return list(cfg.retention.clinic_targets)
    return [cfg.export.target] if cfg.export.target else []


def held_by(target: str, ids: Sequence[str]) -> Set[str]:
    """Which of ``ids`` the image table of ``target`` holds; read only (never created or upgraded).
    Raises :class:`RetentionTargetError` with one line when the target cannot be read."""
    from edge.store.engine import open_existing
    from edge.store.schema import SchemaError

    try:
        engine, _ = open_existing(_with_timeout(target))
    except SchemaError as e:
        raise RetentionTargetError(str(e)) from None
    held: Set[str] = set()
    try:
        with engine.connect() as conn:
            for i in range(0, len(ids), 500):
                chunk = list(ids[i : i + 500])
                held.update(conn.execute(select(images.c.id).where(images.c.id.in_(chunk))).scalars())
    except SQLAlchemyError as e:
        raise RetentionTargetError(str(getattr(e, "orig", e)).splitlines()[0]) from None
    finally:
        engine.dispose()
    return held


def _with_timeout(target: str) -> str:
    """A server URL with a short connect timeout: retention runs in the daemon's loop, and an unreachable
    clinic server must cost seconds (it then holds nothing), not a TCP timeout past the systemd watchdog."""
    from sqlalchemy.engine import make_url

    from edge.store.engine import normalize_url

    u = make_url(normalize_url(target))
    if u.get_backend_name() == "postgresql" and "connect_timeout" not in u.query:
        u = u.update_query_dict({"connect_timeout": str(CONNECT_TIMEOUT_S)})
    return u.render_as_string(hide_password=False)


class RetentionTargetError(RuntimeError):
    """A clinic target could not be read; ``str(err)`` is one line."""


def purge(store, keep_days: float, max_mb: float, targets: Sequence[str] = (), now: Optional[datetime] = None) -> Purge:
    """Delete screened files by age and by total size, oldest first, only those whose rows every clinic
    target in ``targets`` holds (none given: nothing is deleted)."""
    out = Purge()
    if store.engine.url.get_backend_name() != "sqlite" or (keep_days <= 0 and max_mb <= 0):
        return out
    now = now or utcnow()
    device = store.device()
    where = and_(
        images.c.device_id == device, images.c.purged_at.is_(None), images.c.status != Status.DUPLICATE
    )  # a duplicate's file is its own, but its row points at another
    with store.engine.connect() as conn:
        q = (
            select(images.c.id, images.c.path, images.c.moved_to, images.c.recorded_at)
            .where(where)
            .order_by(images.c.recorded_at)
        )
        files = []
        for r in conn.execute(q):
            p = Path(r.moved_to or r.path)
            try:
                st = p.lstat()
            except OSError:
                continue
            files.append((r, p, st.st_size))
    total = sum(size for _, _, size in files)
    cutoff = now - timedelta(days=keep_days) if keep_days > 0 else None
    # What age or size could delete, before asking the clinic: over the size limit, any file may be.
    over = max_mb > 0 and total > max_mb * 1e6
    due = files if over else [f for f in files if cutoff is not None and f[0].recorded_at <= cutoff]
    held = _held_everywhere([r.id for r, _, _ in due], targets, out) if due else set()
    done: List[str] = []
    for r, p, size in due:
        too_old = cutoff is not None and r.recorded_at <= cutoff
        if not (too_old or (max_mb > 0 and total > max_mb * 1e6)):
            continue
        if r.id not in held:
            out.kept_unexported += 1
            continue
        try:
            os.unlink(p)
        except OSError as e:
            out.errors.append(f"{p}: {e.strerror or e}")
            continue
        total -= size
        out.deleted, out.freed_bytes = out.deleted + 1, out.freed_bytes + size
        done.append(r.id)
    if done:
        with store.write() as conn:
            for i in range(0, len(done), 500):
                conn.execute(images.update().where(images.c.id.in_(done[i : i + 500])).values(purged_at=now))
    return out


def _held_everywhere(ids: List[str], targets: Sequence[str], out: Purge) -> Set[str]:
    """The ids every target holds; a target that cannot be read holds none (and is named in ``out``)."""
    if not targets:
        return set()
    held: Optional[Set[str]] = None
    for t in targets:
        try:
            mine = held_by(t, ids)
        except RetentionTargetError as e:
            out.unreachable.append(f"{redact_url(t)}: {e}")
            mine = set()
        held = mine if held is None else held & mine
    return held or set()


__all__ = [
    "DiskState",
    "Purge",
    "RetentionTargetError",
    "clinic_targets",
    "disk_state",
    "free_mb",
    "held_by",
    "purge",
    "watched_paths",
]

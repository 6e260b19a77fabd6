"""Disk on a small SD card: retention of screened image files, and a low-disk state that pauses intake.

Retention deletes image FILES, never rows, and only files whose rows have reached the clinic: a row is
exported when an export watermark of its device (any target) covers its SQLite rowid (edge.export.merge keeps
those watermarks in the source). A file past ``retention.keep_days``, or the oldest ones while the screened
files take more than ``retention.max_mb``, is deleted and its row gets ``purged_at``; unexported files are
kept whatever their age (the clinic has no other copy). Files still in the inbox (``after = "keep"``) count
too: they are the same screened images.

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
from typing import List, Optional

from sqlalchemy import and_, func, literal_column, select

from edge.store.schema import export_watermarks, images, utcnow

log = logging.getLogger("edge.daemon.retention")
RESUME_MARGIN = 1.25  # resume only at 125 % of the watermark


@dataclass
class DiskState:
    paused: bool
    free_mb: float
    where: str  # the fullest of the watched filesystems
    min_free_mb: float

    def describe(self) -> str:
        state = "intake PAUSED: low disk" if self.paused else "ok"
        return f"{state}: {self.free_mb:,.0f} MB free on {self.where} (minimum {self.min_free_mb:,.0f} MB)"


def free_mb(path: Path) -> float:
    p = Path(path)
    while not p.exists() and p != p.parent:  # a folder not made yet is on its parent's filesystem
        p = p.parent
    return shutil.disk_usage(p).free / 1e6


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
    worst = min(((free_mb(p), str(p)) for p in paths), default=(float("inf"), "-"))
    limit = min_free_mb * (RESUME_MARGIN if was_paused else 1.0)
    return DiskState(paused=min_free_mb > 0 and worst[0] < limit, free_mb=worst[0], where=worst[1],
                     min_free_mb=min_free_mb)


@dataclass
class Purge:
    deleted: int = 0
    freed_bytes: int = 0
    kept_unexported: int = 0  # files retention would have deleted but the clinic has not got their rows
    errors: List[str] = field(default_factory=list)


def _exported(device_id: str):
    """SQL condition: the image row is covered by an export watermark of its device (SQLite rowid)."""
    last = select(func.max(export_watermarks.c.last_seq)).where(
        export_watermarks.c.device_id == device_id).scalar_subquery()
    return literal_column("images.rowid") <= func.coalesce(last, -1)


def purge(store, keep_days: float, max_mb: float, now: Optional[datetime] = None) -> Purge:
    """Delete screened files by age and by total size, oldest first, exported rows only."""
    out = Purge()
    if store.engine.url.get_backend_name() != "sqlite" or (keep_days <= 0 and max_mb <= 0):
        return out
    now = now or utcnow()
    device = store.device()
    where = and_(images.c.device_id == device, images.c.purged_at.is_(None),
                 images.c.status != "duplicate")  # a duplicate's file is its own, but its row points at another
    with store.engine.connect() as conn:
        q = select(images.c.id, images.c.path, images.c.moved_to, images.c.recorded_at,
                   _exported(device).label("exported")).where(where).order_by(images.c.recorded_at)
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
    done: List[str] = []
    for r, p, size in files:
        too_old = cutoff is not None and r.recorded_at <= cutoff
        too_big = max_mb > 0 and total > max_mb * 1e6
        if not (too_old or too_big):
            continue
        if not r.exported:
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
                conn.execute(images.update().where(images.c.id.in_(done[i:i + 500])).values(purged_at=now))
    return out


__all__ = ["DiskState", "Purge", "disk_state", "free_mb", "purge", "watched_paths"]

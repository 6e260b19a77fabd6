"""The daemon's timer work between files: free disk (pausing intake below the watermark), retention of
exported files, and samples that became ready while the inbox was idle.

Each runs on its own interval from the daemon's loop; none of them may stop screening: a failure is logged
and tried again at the next interval, except a database that is gone (the daemon stops for that).
"""

from __future__ import annotations

import logging
import time
from typing import Callable, List, Optional

from edge.config import Config
from edge.daemon.retention import clinic_targets, disk_state, purge, watched_paths
from edge.store.database import DatabaseGone, Store
from edge.vocabulary import printable

log = logging.getLogger("edge.daemon.housekeeping")
DISK_CHECK_S = 5.0  # how often free space is looked at (statvfs: microseconds)
RETENTION_S = 600.0  # how often retention runs while there is disk to spare
SAMPLES_CHECK_S = 2.0  # how often an idle daemon looks for samples that became ready


class Housekeeping:
    """``low_disk()`` before each file, ``promote_samples()`` when idle; ``configure(cfg)`` on reload."""

    def __init__(self, store: Store, cfg: Config, status: Callable[[str], None] = lambda s: None):
        self.store = store
        self.status = status  # the daemon's systemd STATUS= line
        self.paused = False
        self._disk_checked = -DISK_CHECK_S
        self._purged = 0.0
        self._samples_checked = 0.0
        self._retention_warned = -RETENTION_S
        self.configure(cfg)

    def configure(self, cfg: Config) -> None:
        self.retention = cfg.retention
        self.sample_cfg = cfg.samples
        self.disk_paths = watched_paths(cfg)
        self.clinic_targets: List[str] = clinic_targets(cfg)  # where a row must be before its file goes
        self._disk_checked = -DISK_CHECK_S  # a new watermark applies at once

    def low_disk(self, queued: int = 0) -> bool:
        """Checks free space every few seconds; pauses intake below the watermark (edge/daemon/retention.py)."""
        now = time.monotonic()
        if now - self._disk_checked < DISK_CHECK_S:
            return self.paused
        self._disk_checked = now
        state = disk_state(self.disk_paths, self.retention.min_free_mb, was_paused=self.paused)
        if state.paused != self.paused:
            self.paused = state.paused
            (log.warning if state.paused else log.info)(
                "%s", state.describe() if state.paused else f"disk space back ({state.describe()}): resuming intake"
            )
            self.status(f"STATUS={state.describe()}" if state.paused else f"STATUS=watching, {queued} queued")
        if state.paused or now - self._purged >= RETENTION_S:
            self.purge()
        return self.paused

    def purge(self) -> None:
        self._purged = time.monotonic()
        r = self.retention
        try:
            out = purge(self.store, r.keep_days, r.max_mb, self.clinic_targets)
        except DatabaseGone:
            raise
        except Exception as e:  # noqa: BLE001 - retention is housekeeping: never stop screening for it
            log.warning("retention failed: %s", str(e).splitlines()[0])
            return
        # While intake is paused retention runs every few seconds: its warnings once per RETENTION_S.
        warn = time.monotonic() - self._retention_warned >= RETENTION_S
        if warn and (out.unreachable or (out.kept_unexported and not self.clinic_targets)):
            self._retention_warned = time.monotonic()
        for where in out.unreachable if warn else ():
            log.warning("retention: cannot read the clinic database %s; its rows count as not received", where)
        if out.kept_unexported and not self.clinic_targets:
            if warn:
                log.warning(
                    "retention: no clinic database configured ([retention] clinic_targets or [export] "
                    "target), so no file is deleted: %d file(s) due",
                    out.kept_unexported,
                )
        elif out.deleted or out.kept_unexported or out.errors:
            log.info(
                "retention: deleted %d file(s) the clinic holds, %.1f MB freed; %d kept until the clinic "
                "has their rows%s",
                out.deleted,
                out.freed_bytes / 1e6,
                out.kept_unexported,
                f"; {len(out.errors)} could not be deleted ({out.errors[0]})" if out.errors else "",
            )

    def promote_samples(self) -> Optional[List[str]]:
        """Idle work: samples that have their fields and no new one for a while become ready for review."""
        if time.monotonic() - self._samples_checked < SAMPLES_CHECK_S:
            return None
        self._samples_checked = time.monotonic()
        c = self.sample_cfg
        try:
            ready = self.store.samples.promote_idle(c.min_readable, c.idle_s)
        except DatabaseGone:
            raise
        except Exception as e:  # noqa: BLE001 - a busy database now is retried at the next idle moment
            log.warning("could not update samples: %s", str(e).splitlines()[0])
            return None
        for sid in ready:
            log.info("sample %s is ready for review", printable(sid))
        return ready

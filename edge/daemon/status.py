"""``edge-screen status``: what the device is doing, gathered in one place and printed to fit 80 columns.

Every figure is what the daemon itself would act on: the backlog is the inbox files the daemon would still
screen (a file already recorded under another identity, such as a symlink or a file in a folder that is
not a sample, is not backlog), "last error" is the last file that could not be taken at all (rejected),
never a field the quality gate refused (those are counted under today's "unreadable"), and an inbox that
does not exist is said to be missing rather than "ok".
"""

from __future__ import annotations

import os
import socket
import textwrap
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Dict, List, Optional

from edge import vocabulary  # the module: this one has a Status class of its own
from edge.config import Config

if TYPE_CHECKING:  # SQLAlchemy and friends: imported by collect() when status runs
    from edge.daemon.retention import DiskState
    from edge.pipeline.domain import DomainSummary
    from edge.store.records import Counts, ImageRecord, RunInfo, TimingStats

LABEL_WIDTH = 11  # "last error " and its value column


@dataclass
class Status:
    cfg: Config
    model: str  # the card's name, or "unusable (why)"
    model_version: Optional[str]
    model_path: str
    backend: str
    kernels: str
    today: Counts
    backlog: Optional[int]  # None: the inbox does not exist
    disk: DiskState
    samples: Dict[str, int]
    optics: DomainSummary
    last_error: Optional[ImageRecord]
    run: Optional[RunInfo]
    timings: Dict[str, TimingStats]
    last_n: int

    def daemon_state(self) -> Optional[str]:
        if self.run is None:
            return None
        if self.run.stopped_at is not None:
            reason = self.run.exit_reason or "stopped"
            return reason if reason.startswith("stopped") else f"stopped ({reason})"
        return (
            "running"
            if alive(self.run)
            else "not running (it ended without a clean stop: killed, crashed or power lost)"
        )

    def to_json(self) -> dict:
        cfg, t, disk, err, run = self.cfg, self.today, self.disk, self.last_error, self.run
        return {
            "device_id": cfg.daemon.device_id,
            "model": self.model,
            "model_version": self.model_version,
            "model_path": self.model_path,
            "backend": self.backend,
            "kernels": self.kernels,
            "threads": cfg.model.num_threads,
            "today": {
                "total": t.total,
                "by_status": t.by_status,
                "by_verdict": t.by_verdict,
                "needs_review": t.needs_review,
            },
            "backlog": self.backlog,
            "inbox": str(cfg.daemon.inbox),
            "inbox_exists": self.backlog is not None,
            "disk": {
                "free_mb": round(disk.free_mb, 1),
                "where": disk.where,
                "min_free_mb": disk.min_free_mb,
                "intake_paused": disk.paused,
                "missing": disk.missing,
            },
            "samples": self.samples,
            "optics": self.optics.to_dict(),
            "last_error": (
                {
                    "path": err.path,
                    "status": err.status,
                    "reason": err.reason,
                    "recorded_at": err.recorded_at.isoformat() if err.recorded_at else None,
                }
                if err
                else None
            ),
            "last_run": (
                {
                    "started_at": run.started_at.isoformat(),
                    "stopped_at": run.stopped_at.isoformat() if run.stopped_at else None,
                    "exit_reason": run.exit_reason,
                    "pid": run.pid,
                    "alive": run.stopped_at is None and alive(run),
                }
                if run
                else None
            ),
            "timings_ms": {s: {"n": v.n, "median": v.median_ms, "p95": v.p95_ms} for s, v in self.timings.items()},
        }

    def lines(self, width: int = 80) -> List[str]:
        """The human-readable status, no line longer than ``width`` (80: a Pi console; 137 before)."""
        cfg, t = self.cfg, self.today
        threads = cfg.model.num_threads
        rows = [
            ("device", cfg.daemon.device_id),
            (
                "model",
                f"{self.model}{' ' + self.model_version if self.model_version else ''}, "
                f"{self.backend} ({self.kernels} kernels), {threads} "
                f"thread{'s' if threads != 1 else ''}",
            ),
            ("", self.model_path),
        ]
        state = self.daemon_state()
        if state and self.run is not None:
            rows.append(("daemon", f"{state}, started {self.run.started_at:%Y-%m-%d %H:%M:%S} UTC, pid {self.run.pid}"))
        today = (
            f"{t.total} images"
            + (": " if t.by_status else "")
            + ", ".join(f"{k} {v}" for k, v in sorted(t.by_status.items()))
        )
        if t.by_verdict:
            today += "; " + ", ".join(f"{k} {v}" for k, v in sorted(t.by_verdict.items()))
        rows.append(("today", today + f"; needs review {t.needs_review}"))
        inbox = str(cfg.daemon.inbox)
        if self.backlog is None:
            rows.append(("backlog", f"inbox {inbox} does not exist (the daemon creates it when it starts)"))
        else:
            rows.append(("backlog", f"{self.backlog} file(s) waiting to be screened in {inbox}"))
        rows.append(("disk", self.disk.describe()))
        if self.samples:
            rows.append(
                (
                    "samples",
                    ", ".join(f"{k} {self.samples[k]}" for k in vocabulary.SampleStatus if k in self.samples),
                )
            )
        rows.extend(("optics" if i == 0 else "", line) for i, line in enumerate(self.optics.describe().splitlines()))
        err = self.last_error
        rows.append(
            (
                "last error",
                "none"
                if err is None
                else f"{err.recorded_at:%Y-%m-%d %H:%M} UTC {_shown(err.path, cfg.daemon.inbox)}: {err.reason}",
            )
        )
        out = []
        for label, text in rows:
            out.extend(_wrap(label, text, width))
        out.append(f"timings    median / p95 ms over the last {self.last_n} classified images:")
        for s, v in self.timings.items():
            if v.n:
                out.append(f"  {s:11s} {v.median_ms:8.2f} / {v.p95_ms:8.2f}")
        return out


def _shown(path: str, inbox: Path) -> str:
    """A file as the technician knows it: relative to the inbox when it is in there."""
    try:
        return str(Path(path).relative_to(inbox))
    except ValueError:
        return path


def _wrap(label: str, text: str, width: int) -> List[str]:
    # Wrapped at spaces; only a word longer than a whole line (a deep path) is split, at the line's end.
    body = textwrap.wrap(text, width=max(width - LABEL_WIDTH, 20), break_long_words=True, break_on_hyphens=False)
    return [f"{(label if i == 0 else ''):<{LABEL_WIDTH - 1}} {line}" for i, line in enumerate(body or [""])]


def alive(run) -> bool:
    """Is the run's daemon process still there? Only answerable on the host that started it."""
    if run.hostname != socket.gethostname() or not run.pid:
        return True
    try:
        os.kill(run.pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, owned by another user
        return True
    return True


def collect(cfg: Config, store, last_n: int = 100) -> Status:
    """Everything `status` shows, from the open store (read only) and the filesystem."""
    from edge.daemon.retention import disk_state, watched_paths
    from edge.daemon.watcher import unscreened
    from edge.inference.backends import resolve
    from edge.inference.card import ModelLoadError, card_path_for, load_card
    from edge.inference.modelstore import model_in_use
    from edge.pipeline.domain import recent as recent_optics

    now = datetime.now(timezone.utc)
    midnight = now.astimezone().replace(hour=0, minute=0, second=0, microsecond=0)
    inbox = cfg.daemon.inbox
    backlog = len(unscreened(inbox, store, cfg.daemon.max_file_bytes)) if inbox.is_dir() else None
    model_path, version = "?", None
    try:
        model_path = str(model_in_use(cfg.model))  # may read current.json
        card = load_card(card_path_for(Path(model_path)))
        model, version = card.name, card.version
    except ModelLoadError as e:
        model = f"unusable ({e})"
    backend = resolve(cfg.model.backend)
    return Status(
        cfg=cfg,
        model=model,
        model_version=version,
        model_path=model_path,
        backend=backend,
        kernels=cfg.model.kernels if backend == "litert" else "builtin",
        today=store.counts(since=midnight.astimezone(timezone.utc)),
        backlog=backlog,
        disk=disk_state(watched_paths(cfg), cfg.retention.min_free_mb),
        samples=store.samples.counts(),
        optics=recent_optics(store),
        last_error=store.last_error(statuses=(vocabulary.Status.REJECTED,)),
        run=store.last_run(),
        timings=store.timing_stats(last_n),
        last_n=last_n,
    )


__all__ = ["Status", "alive", "collect"]

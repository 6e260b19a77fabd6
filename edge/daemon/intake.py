"""The daemon's intake: the queue of files to screen (with the retries of results that could not be
committed), the inbox being watched, and the tally of what this run screened."""

from __future__ import annotations

import queue
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Set, TextIO, Tuple

from edge.daemon.startup import lock_inbox
from edge.daemon.watcher import InboxWatcher
from edge.pipeline.results import Job
from edge.vocabulary import Status

INBOX_CHECK_S = 1.0  # how often an idle daemon checks that its inbox is still the folder it watches
RETRY_S, RETRY_MAX_S = 5.0, 300.0  # a result that could not be committed is tried again after 5, 10, 20 ... s


def _identity(folder: Path) -> Optional[tuple]:
    try:
        st = folder.stat()
    except OSError:
        return None
    return st.st_dev, st.st_ino


class Intake:
    """The files waiting to be screened: each path queued once however often it is reported, and the files
    whose result could not be committed, queued again after a back-off (5, 10, 20 ... s, at most 5 min)."""

    def __init__(self) -> None:
        self.jobs: queue.Queue[Job] = queue.Queue()
        self._queued: Set[Path] = set()
        self._lock = threading.Lock()  # enqueue() runs in the watcher's thread too
        self._retry: List[Tuple[float, Path]] = []  # (when, file) whose result could not be committed
        self._attempts: Dict[str, int] = {}

    def enqueue(self, path: Path) -> None:
        with self._lock:
            if path in self._queued:
                return
            self._queued.add(path)
        self.jobs.put(Job(path))

    def qsize(self) -> int:
        return self.jobs.qsize()

    def next(self, block: bool) -> Optional[Job]:
        """The next queued file (the due retries queued first); None when there is none (after 0.25 s)."""
        if self._retry:
            now = time.monotonic()
            due = [p for t, p in self._retry if t <= now]
            self._retry = [(t, p) for t, p in self._retry if t > now]
            for p in due:
                self.enqueue(p)
        try:
            job = self.jobs.get(timeout=0.25) if block else self.jobs.get_nowait()
        except queue.Empty:
            return None
        with self._lock:
            self._queued.discard(job.path)
        return job

    def retry_later(self, path: Path, delay: float = RETRY_S) -> None:
        self._retry.append((time.monotonic() + delay, path))

    def not_recorded(self, path: str) -> float:
        """A file whose result could not be committed: queued again later; returns the delay."""
        n = self._attempts[path] = self._attempts.get(path, 0) + 1
        delay = min(RETRY_S * 2 ** (n - 1), RETRY_MAX_S)
        self.retry_later(Path(path), delay)
        return delay

    def done(self, path: str) -> None:
        self._attempts.pop(path, None)


@dataclass
class Tally:
    """What this run has screened, for the systemd status line and the exit message."""

    processed: int = 0
    counts: Dict[str, int] = field(
        default_factory=lambda: {
            s.value: 0 for s in (Status.CLASSIFIED, Status.UNREADABLE, Status.REJECTED, Status.DUPLICATE)
        }
    )

    def add(self, status: str) -> None:
        self.processed += 1
        self.counts[status] = self.counts.get(status, 0) + 1

    def status_line(self, queued: int) -> str:
        c = self.counts
        shown = (Status.CLASSIFIED, Status.UNREADABLE, Status.REJECTED, Status.DUPLICATE)
        return (
            f"STATUS={self.processed} images: "
            + ", ".join(f"{c[s.value]} {s.value}" for s in shown)
            + f"; {queued} queued"
        )


@dataclass
class WatchedInbox:
    """The inbox being watched: its watcher, which folder it was when the watch started, and its lock."""

    folder: Optional[Path] = None
    identity: Optional[tuple] = None  # its (st_dev, st_ino) when the watch started
    watcher: Optional[InboxWatcher] = None
    lock: Optional[TextIO] = None  # the lock file held while this daemon works on it
    checked: float = 0.0

    def gone(self) -> bool:
        """At most every INBOX_CHECK_S: the folder was deleted or replaced since the watch started (an
        inotify watch dies with its folder: a re-created inbox would be silently unwatched from then on)."""
        if time.monotonic() - self.checked < INBOX_CHECK_S:
            return False
        self.checked = time.monotonic()
        return self.folder is not None and _identity(self.folder) != self.identity

    def relock(self, folder: Path, release_first: bool = False) -> None:
        """Lock ``folder`` (a StartupError when another daemon holds it) and let the old lock go: after the
        new one is held, or first (``release_first``: the same inbox again, whose lock file may be the one
        this daemon holds)."""
        if release_first and self.lock is not None:
            self.lock.close()
            self.lock = None
        old, self.lock = self.lock, lock_inbox(folder)
        if old is not None:
            old.close()

    def watching(self, watcher: InboxWatcher, folder: Path) -> None:
        """A watch on ``folder`` has started: remember which folder it is (its device and inode)."""
        self.watcher, self.folder, self.identity = watcher, folder, _identity(folder)

    def stop(self) -> None:
        if self.watcher is not None:
            self.watcher.stop()

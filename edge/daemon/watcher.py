"""Discovery of new inbox files: inotify close-write and moved-in events, or polling for network shares.

A camera writes a still over tens of milliseconds; a technician copies over SMB over seconds. A file must
never be read while it is still being written, so plain "modified"/"created" events are never acted on:
with inotify only IN_CLOSE_WRITE (the writer closed it) and IN_MOVED_TO (an atomic rename or a move in
from elsewhere) count; with polling, a file counts once its size and mtime stayed the same over
``stable_checks`` consecutive scans.
"""

from __future__ import annotations

import logging
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, Iterable, List, Optional, Tuple

from watchdog.events import (
    DirCreatedEvent,
    DirMovedEvent,
    FileClosedEvent,
    FileCreatedEvent,
    FileModifiedEvent,
    FileMovedEvent,
    FileSystemEventHandler,
)
from watchdog.observers.api import BaseObserver
from watchdog.observers.inotify import InotifyObserver
from watchdog.observers.polling import PollingObserver

from edge.pipeline.identity import path_text, possible
from edge.store.samplemeta import is_meta_name

log = logging.getLogger("edge.daemon.watcher")

# Camera tools, rsync, browsers and our own capture loop write under these names and rename at the end.
TEMP_SUFFIXES = (".tmp", ".part", ".partial", ".crdownload", ".swp", "~")


def is_candidate(path: Path) -> bool:
    name = path.name
    return bool(name) and not name.startswith(".") and not name.lower().endswith(TEMP_SUFFIXES)


@dataclass(frozen=True)
class WatchOptions:
    observer: str = "inotify"  # or "polling"
    poll_interval_s: float = 1.0
    stable_checks: int = 2


def unchanged_since_recorded(recorded: dict) -> Callable[[Path], bool]:
    """A backlog ``skip`` from :meth:`edge.store.database.Store.recorded_files`: True for a file whose size was
    recorded for its path and that has not been modified since the last recording (1 s of clock slack)."""

    def skip(p: Path) -> bool:
        entry = recorded.get(path_text(p))
        if entry is None:
            return False
        try:
            st = p.lstat()
        except OSError:
            return True  # gone already: nothing to screen
        sizes, latest = entry
        return st.st_size in sizes and st.st_mtime <= latest + 1.0

    return skip


def unscreened(inbox: Path, store, max_file_bytes: Optional[int] = None) -> List[Path]:
    """The inbox's candidate files, oldest first, without those recorded and unchanged since.

    With ``max_file_bytes`` (the daemon's limit) a file whose path is recorded but whose size or time
    changed is looked at closer: if the pipeline would give it an identity already recorded for its path
    (the same bytes touched, a symlink or a file refused before it was read) it is not backlog either, so
    the count is what the daemon will really screen."""
    files = backlog(inbox)
    if not files:
        return []
    recorded = store.recorded_files(path_text(p) for p in files)
    skip = unchanged_since_recorded(recorded)
    out = []
    for p in files:
        if skip(p):
            continue
        if (
            max_file_bytes is not None
            and path_text(p) in recorded
            and any(store.is_recorded(path_text(p), sha) for sha in possible(p, max_file_bytes))
        ):
            continue
        out.append(p)
    return out


def backlog(inbox: Path, skip: Callable[[Path], bool] = lambda p: False) -> List[Path]:
    """Candidate files already in the inbox and its sample folders (one level), oldest first, without those
    ``skip`` says are recorded."""
    entries: List[Tuple[float, str, Path]] = []
    folders = [inbox]
    for folder in folders:
        try:
            it = os.scandir(folder)
        except (FileNotFoundError, NotADirectoryError, PermissionError):
            continue
        with it:
            for e in it:
                p = Path(e.path)
                if not is_candidate(p):
                    continue
                try:
                    # lstat: a symlink is listed even when it dangles, so the pipeline records why it is bad.
                    st = e.stat(follow_symlinks=False)
                except OSError:
                    continue
                if e.is_dir(follow_symlinks=False):
                    if folder == inbox:
                        folders.append(p)  # a sample; deeper folders are not samples and not screened
                    continue
                if folder != inbox and is_meta_name(e.name):
                    continue  # a sample's identifiers (edge/store/samplemeta.py), not a field to screen
                entries.append((st.st_mtime, str(p), p))
    entries.sort()
    return [p for _, _, p in entries if not skip(p)]


def in_inbox(inbox: Path, p: Path) -> bool:
    """A file directly in the inbox or in one of its sample folders (not hidden, not temporary)."""
    if not is_candidate(p):
        return False
    return p.parent == inbox or (p.parent.parent == inbox and is_candidate(p.parent))


class _Handler(FileSystemEventHandler):
    def __init__(self, inbox: Path, emit: Callable[[Path], None], watch_for_changes: bool):
        self.inbox = inbox
        self.emit = emit
        self.changes = watch_for_changes  # polling: created/modified feed the size-stable check
        self.pending: Dict[Path, Tuple[Tuple[int, float], int]] = {}
        self.lock = threading.Lock()

    def _in_inbox(self, raw: str | bytes) -> Optional[Path]:
        if not raw:
            return None
        p = Path(os.fsdecode(raw))
        return p if in_inbox(self.inbox, p) else None

    def on_any_event(self, event) -> None:
        if event.is_directory:
            if isinstance(event, (DirCreatedEvent, DirMovedEvent)):
                self._new_folder(event)
            return
        if isinstance(event, FileMovedEvent):
            p = self._in_inbox(event.dest_path)  # "" when the file was moved out of the inbox
        elif isinstance(event, FileClosedEvent) and not self.changes:
            p = self._in_inbox(event.src_path)
        elif self.changes and isinstance(event, (FileCreatedEvent, FileModifiedEvent, FileClosedEvent)):
            p = self._in_inbox(event.src_path)
            if p is not None:
                with self.lock:
                    self.pending.setdefault(p, ((-1, -1.0), 0))
            return
        else:
            return
        if p is None:
            return
        if self.changes:
            with self.lock:
                self.pending.setdefault(p, ((-1, -1.0), 0))
        else:
            self.emit(p)

    def _new_folder(self, event) -> None:
        """A sample folder created or moved into the inbox: its files may have been written before the
        recursive watch reached it (a moved-in folder arrives complete), so list them once."""
        raw = event.dest_path if isinstance(event, DirMovedEvent) else event.src_path
        folder = Path(os.fsdecode(raw)) if raw else None
        if folder is None or folder.parent != self.inbox or not is_candidate(folder):
            return
        try:
            names = sorted(os.listdir(folder))
        except OSError:
            return
        for name in names:
            p = folder / name
            if in_inbox(self.inbox, p) and p.is_file():
                if self.changes:
                    with self.lock:
                        self.pending.setdefault(p, ((-1, -1.0), 0))
                else:
                    self.emit(p)


class InboxWatcher:
    """Calls ``on_file(path)`` (from a background thread) once per completed file in ``inbox``."""

    def __init__(self, inbox: Path, on_file: Callable[[Path], None], options: WatchOptions = WatchOptions()):
        self.inbox = Path(inbox).resolve()
        self.on_file = on_file
        self.options = options
        polling = options.observer == "polling"
        self._handler = _Handler(self.inbox, on_file, watch_for_changes=polling)
        self._observer: BaseObserver
        if polling:
            self._observer = PollingObserver(timeout=options.poll_interval_s)
            self._observer.schedule(self._handler, str(self.inbox), recursive=True)
        else:
            # Full events: a file moved in from outside the inbox arrives as a move with an empty source
            # instead of a "created" event we could not tell apart from a file just opened for writing.
            self._observer = InotifyObserver(generate_full_events=True)
            # Recursive: a patient sample is a subfolder (edge.store.samples).
            self._observer.schedule(
                self._handler,
                str(self.inbox),
                recursive=True,
                event_filter=[FileClosedEvent, FileMovedEvent, DirCreatedEvent, DirMovedEvent],
            )
        self._stop = threading.Event()
        self._stable_thread: Optional[threading.Thread] = None

    def start(self) -> None:
        self.inbox.mkdir(parents=True, exist_ok=True)
        self._observer.start()
        if self.options.observer == "polling":
            self._stable_thread = threading.Thread(target=self._stable_loop, name="stable-check", daemon=True)
            self._stable_thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._observer.stop()
        self._observer.join(timeout=5)
        if self._stable_thread is not None:
            self._stable_thread.join(timeout=5)

    def _stable_loop(self) -> None:
        h = self._handler
        while not self._stop.wait(self.options.poll_interval_s):
            ready = []
            with h.lock:
                for p, (last, count) in list(h.pending.items()):
                    try:
                        st = p.stat()
                    except OSError:
                        del h.pending[p]  # gone (moved away or deleted) before it settled
                        continue
                    sig = (st.st_size, st.st_mtime)
                    count = count + 1 if sig == last else 0
                    if count >= self.options.stable_checks:
                        del h.pending[p]
                        ready.append(p)
                    else:
                        h.pending[p] = (sig, count)
            for p in ready:
                self.on_file(p)

    def recheck(self, p: Path) -> None:
        """Polling: watch ``p`` again until its size settles (a slow writer paused long enough to look done)."""
        with self._handler.lock:
            self._handler.pending[p] = ((-1, -1.0), 0)

    def __enter__(self) -> InboxWatcher:
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def watch_options(cfg) -> WatchOptions:
    d = cfg.daemon
    return WatchOptions(observer=d.observer, poll_interval_s=d.poll_interval_s, stable_checks=d.stable_checks)


__all__ = ["InboxWatcher", "WatchOptions", "backlog", "is_candidate", "watch_options", "Iterable"]

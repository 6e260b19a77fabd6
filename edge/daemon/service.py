"""The long-running service: watch the inbox, classify every new image, record it, survive anything.

Order of start-up matters: config, model + card, and the database are all checked before the inbox is
touched, so a broken install exits non-zero with one clear line instead of half-processing images.
Crash safety comes from the store (each image's row is written whole in one transaction, a burst's rows
in one shared transaction, unique on device/path/sha256) plus the backlog scan on start, not from any state
kept here: kill -9 at any moment, restart, and every inbox image ends up recorded exactly once.
"""

from __future__ import annotations

import faulthandler
import logging
import os
import signal
import socket
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from edge.config import Config, redact_url
from edge.daemon.housekeeping import Housekeeping
from edge.daemon.intake import RETRY_S, Intake, Tally, WatchedInbox
from edge.daemon.startup import (
    EXIT_OK,
    EXIT_STORE,
    Loaded,
    StartupError,
    check_inbox,
    load,
    open_store,
    setup_logging,
)
from edge.daemon.watcher import InboxWatcher, backlog, unscreened, watch_options
from edge.pipeline.results import CLASSIFIED, DUPLICATE
from edge.pipeline.stages import STOP, Pipeline
from edge.store.database import DatabaseGone, Store
from edge.store.records import ImageRecord
from edge.store.samplemeta import apply_meta_file, is_meta_file, meta_files
from edge.vocabulary import printable

log = logging.getLogger("edge.daemon.service")


def _version() -> str:
    try:
        from importlib.metadata import version

        return version("edge-screen")
    except Exception:  # noqa: BLE001 - running from a source tree that was never pip-installed
        return "0.1.0+src"


__version__ = _version()


class Notifier:
    """sd_notify(3) without libsystemd: one datagram per message to $NOTIFY_SOCKET; a no-op outside systemd."""

    def __init__(self, environ=os.environ):
        addr = environ.get("NOTIFY_SOCKET", "")
        self._addr = "\0" + addr[1:] if addr.startswith("@") else addr  # "@" = Linux abstract namespace
        self._sock: Optional[socket.socket] = None
        usec = environ.get("WATCHDOG_USEC", "")
        pid = environ.get("WATCHDOG_PID", "")
        # Ping at half the configured interval, as sd_watchdog_enabled(3) recommends.
        self.watchdog_interval = int(usec) / 2e6 if usec.isdigit() and (not pid or pid == str(os.getpid())) else None
        self._last_ping = 0.0

    def send(self, *fields: str) -> None:
        if not self._addr:
            return
        try:
            if self._sock is None:
                self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
                # Never block the pipeline on a notification: a full receiver queue drops the message.
                self._sock.setblocking(False)
            self._sock.sendto("\n".join(fields).encode(), self._addr)
        except OSError as e:
            log.debug("sd_notify failed: %s", e)

    def watchdog(self) -> None:
        now = time.monotonic()
        if self.watchdog_interval is not None and now - self._last_ping >= self.watchdog_interval:
            self._last_ping = now
            self.send("WATCHDOG=1")


def describe(res: ImageRecord) -> str:
    return printable(_describe(res))


def _describe(res: ImageRecord) -> str:
    ms = res.timings.total or 0.0
    name = Path(res.path).name
    if res.status in (CLASSIFIED, DUPLICATE) and res.label:
        dup = " (duplicate)" if res.status == DUPLICATE else ""
        review = " review" if res.needs_review else ""
        return f"{name}: {res.label} score={res.malignant_score:.3f} {res.verdict}{review}{dup} total={ms:.1f}ms"
    return f"{name}: {res.status}: {res.reason} total={ms:.1f}ms"


@dataclass
class Running:
    """What the daemon screens with now: config, model and pipeline settings (built once by startup.load)
    and the pipeline over them. A reload returns the next one, or the same one when it is refused."""

    loaded: Loaded
    pipe: Pipeline

    @property
    def cfg(self) -> Config:
        return self.loaded.cfg


class Daemon:
    def __init__(self, config_path: Optional[str] = None):
        self.config_path = config_path
        self.notify = Notifier()
        self.intake = Intake()
        self.tally = Tally()
        self._inbox = WatchedInbox()
        # Set by signals and by the loop; each ends the current pipeline stream.
        self._stop_reason: Optional[str] = None
        self._reload = False
        self._inbox_gone = False
        self._store: Optional[Store] = None  # after start-up
        self._housekeeping: Optional[Housekeeping] = None  # disk, retention, idle samples (after start-up)

    # ------------------------------------------------------------------------------------ signals
    def _on_term(self, signum, _frame) -> None:
        self._stop_reason = f"stopped by {signal.Signals(signum).name}"

    def _on_hup(self, _signum, _frame) -> None:
        self._reload = True

    def enqueue(self, path: Path) -> None:
        self.intake.enqueue(path)

    def _next_job(self, block: bool):
        self.notify.watchdog()
        if self._stop_reason or self._reload or self._inbox_gone:
            return STOP
        if self._housekeeping is not None and self._housekeeping.low_disk(self.intake.qsize()):
            # New images wait in the inbox (queued or not): screening them now could fail to record them.
            time.sleep(0.25 if block else 0.0)
            return None
        job = self.intake.next(block)
        if job is None:
            self._inbox_gone = self._inbox.gone()
            if self._housekeeping is not None:
                self._housekeeping.promote_samples()
            return None
        if self._store is not None and is_meta_file(job.path, self._inbox.folder):
            self._apply_meta(job.path)  # a sample's identifiers, not a field: never goes down the pipeline
            return None
        return job

    def _apply_meta(self, path: Path) -> None:
        assert self._store is not None and self._inbox.folder is not None  # checked by the caller
        try:
            apply_meta_file(self._store, path, self._inbox.folder)
        except DatabaseGone:
            raise
        except Exception as e:  # noqa: BLE001 - a busy or full database: the file is still there, try again
            log.warning(
                "%s: could not record it (%s); retrying in %g s", printable(str(path)), str(e).splitlines()[0], RETRY_S
            )
            self.intake.retry_later(path)

    # ------------------------------------------------------------------------------------ main
    def run(self) -> int:
        setup_logging()
        # `kill -USR1 <pid>` dumps every thread's stack to the journal: the first tool for a hung daemon.
        faulthandler.register(signal.SIGUSR1, all_threads=True)
        signal.signal(signal.SIGTERM, self._on_term)
        signal.signal(signal.SIGINT, self._on_term)
        signal.signal(signal.SIGHUP, self._on_hup)
        try:
            loaded = load(self.config_path)
            setup_logging(loaded.cfg.daemon.log_level)
            store = open_store(loaded.cfg, loaded.settings.sample_rule)
            try:
                self._inbox.relock(loaded.cfg.daemon.inbox)
            except StartupError:
                store.close()
                raise
        except StartupError as e:
            log.error("%s", e)
            self.notify.send(f"STATUS=failed: {e}")
            return e.code
        run_id = store.start_run(__version__)
        exit_reason = "error"
        try:
            now = Running(loaded, self._pipeline(loaded, store, run_id))
            cfg, clf = loaded.cfg, loaded.classifier
            self._store = store
            self._housekeeping = Housekeeping(store, cfg, lambda line: self.notify.send(line))
            inbox = cfg.daemon.inbox
            log.info(
                "edge-screen %s: model %s (%s, sha256 %s…) on %s, %d threads; inbox %s; database %s; device %s",
                __version__,
                clf.name,
                clf.path.name,
                clf.sha256[:12],
                clf.backend,
                clf.num_threads,
                inbox,
                redact_url(cfg.database.url),
                cfg.daemon.device_id,
            )
            self._watch(cfg, store, scan=cfg.daemon.backlog_scan)
            self.notify.send("READY=1", f"STATUS=watching {inbox}, {self.intake.qsize()} queued")
            while True:
                for res in now.pipe.stream(self._next_job):
                    self._report(res)
                if self._stop_reason:
                    break
                if self._inbox_gone:
                    inbox = now.cfg.daemon.inbox
                    log.warning("inbox %s was deleted or replaced: watching it again", inbox)
                    self._inbox.stop()
                    check_inbox(inbox)  # re-created, or a StartupError: exit 4 in one line
                    self._inbox.relock(inbox, release_first=True)
                    self._watch(now.cfg, store, scan=True)
                    self._inbox_gone = False
                if self._reload:
                    now = self._do_reload(now, store, run_id)
            exit_reason = self._stop_reason or "stopped"
            self.notify.send("STOPPING=1", f"STATUS={exit_reason}")
            log.info("%s after %d images; exiting", exit_reason, self.tally.processed)
            return EXIT_OK
        except StartupError as e:  # the inbox re-created read-only, or its lock file cannot be made
            exit_reason = str(e)
            log.error("%s; stopping", e)
            return e.code
        except DatabaseGone as e:
            # Exit so that systemd restarts us on a database that exists; the images not recorded are still
            # in the inbox (nothing is moved before its commit) and the backlog scan takes them.
            exit_reason = f"database error: {e}"
            log.error("%s; stopping", exit_reason)
            return EXIT_STORE
        except Exception as e:
            exit_reason = f"error: {type(e).__name__}: {e}".splitlines()[0]
            log.exception("daemon failed")
            return 1
        finally:
            self._inbox.stop()
            try:
                store.stop_run(run_id, exit_reason)
            finally:
                store.close()

    def _pipeline(self, loaded: Loaded, store: Store, run_id: str) -> Pipeline:
        pipe = Pipeline(loaded.settings, loaded.classifier, store=store)
        pipe.run_id = run_id
        return pipe

    def _watch(self, cfg: Config, store: Store, scan: bool) -> None:
        """Watch first, then scan: a file arriving in between is seen twice (harmless, the pipeline skips
        what is recorded) rather than not at all."""
        inbox = cfg.daemon.inbox
        watcher = InboxWatcher(inbox, self.enqueue, watch_options(cfg))
        watcher.start()
        self._inbox.watching(watcher, inbox)
        if scan:
            self._scan_backlog(cfg, store, inbox)

    def _scan_backlog(self, cfg: Config, store: Store, inbox: Path) -> None:
        # With after=move, a recorded file still in the inbox was committed but not moved before a crash:
        # queue it so the pipeline finishes the move (it records nothing new).
        files = backlog(inbox) if cfg.daemon.after == "move" else unscreened(inbox, store, cfg.daemon.max_file_bytes)
        for p in files + meta_files(inbox):  # sample.json files are not in the backlog: not fields
            self.enqueue(p)
        log.info("backlog: %d file(s) in %s not yet recorded", len(files), inbox)

    def _do_reload(self, now: Running, store: Store, run_id: str) -> Running:
        """SIGHUP: the config and model again; what the daemon runs with next (``now`` when refused)."""
        self._reload = False
        log.info("SIGHUP: reloading config and model")
        self.notify.send("RELOADING=1", f"MONOTONIC_USEC={time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000}")
        cfg = now.cfg
        try:
            new = load(self.config_path)
            if new.cfg.database != cfg.database or new.cfg.daemon.device_id != cfg.daemon.device_id:
                log.warning("database and device_id changes need a restart; keeping %s", redact_url(cfg.database.url))
            setup_logging(new.cfg.daemon.log_level)
            new_pipe = self._pipeline(new, store, run_id)
            if new.cfg.daemon.inbox != cfg.daemon.inbox:
                check_inbox(new.cfg.daemon.inbox)  # a StartupError: the reload is refused, the old inbox kept
                self._inbox.relock(new.cfg.daemon.inbox)
            if new.cfg.daemon.inbox != cfg.daemon.inbox or new.cfg.daemon.observer != cfg.daemon.observer:
                self._inbox.stop()
                self._watch(new.cfg, store, scan=True)
            log.info(
                "reloaded: model %s (sha256 %s…), inbox %s",
                new.classifier.name,
                new.classifier.sha256[:12],
                new.cfg.daemon.inbox,
            )
            now = Running(new, new_pipe)
            store.samples.rule = new.settings.sample_rule  # the new model's rule for the samples from now on
            if self._housekeeping is not None:
                self._housekeeping.configure(new.cfg)
        except StartupError as e:
            log.error("reload failed, keeping the running config and model: %s", e)
        self.notify.send("READY=1", f"STATUS=watching {now.cfg.daemon.inbox}")
        return now

    def _report(self, res: ImageRecord) -> None:
        if res.deferred:
            log.debug("%s: still being written (%s); watching it again", printable(res.path), res.reason)
            if self._inbox.watcher is not None:
                self._inbox.watcher.recheck(Path(res.path))
            return
        if res.already_recorded:
            log.debug("%s: already recorded", res.path)
            return
        self.tally.add(res.status)
        level = logging.INFO if res.recorded else logging.ERROR
        retry = not res.recorded and Path(res.path).exists()
        delay = 0.0
        if retry:
            # The file is still in the inbox; the commit failed (disk full, read-only remount, a locked
            # database): try again while running, not only after a restart, backing off to 5 minutes.
            delay = self.intake.not_recorded(res.path)
        else:
            self.intake.done(res.path)
        log.log(
            level,
            "%s",
            describe(res) + ("" if res.recorded else f" (NOT RECORDED{f'; retrying in {delay:g} s' if retry else ''})"),
        )
        self.notify.send(self.tally.status_line(self.intake.qsize()))


def main(config_path: Optional[str] = None) -> int:
    return Daemon(config_path).run()

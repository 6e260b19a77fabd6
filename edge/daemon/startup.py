"""Start-up in one place: the config, the model and the database, each checked and turned into one line
with its exit code. The daemon, every command and `config check` load through here, so the same mistake
gets the same message and the same exit code everywhere (the table is in the README).
"""

from __future__ import annotations

import logging
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Optional

from edge.config import Config, ConfigError, load_config

if TYPE_CHECKING:  # numpy, OpenCV and SQLAlchemy: imported by the functions that need them
    from edge.inference.classifier import Classifier
    from edge.pipeline.settings import PipelineSettings
    from edge.store.database import Store

EXIT_OK, EXIT_FAILURE, EXIT_CONFIG, EXIT_MODEL, EXIT_STORE, EXIT_CONFLICTS = 0, 1, 2, 3, 4, 5
LOCK_NAME = ".edge-screen.lock"


class StartupError(RuntimeError):
    """Cannot start: ``str(err)`` is one line, ``code`` the exit code."""

    def __init__(self, message: str, code: int):
        super().__init__(message)
        self.code = code


def config(path: Optional[str]) -> Config:
    try:
        return load_config(path)
    except ConfigError as e:
        raise StartupError(f"config error: {e}", EXIT_CONFIG) from None


def classifier(cfg: Config, model: Optional[str] = None):
    from edge.inference.classifier import (  # numpy and OpenCV: only when a model is needed
        ModelLoadError,
        classifier_from_config,
    )

    try:
        return classifier_from_config(cfg, model)
    except ModelLoadError as e:
        raise StartupError(f"model error: {e}", EXIT_MODEL) from None


def store(cfg: Config, create: bool = True, writable: bool = False, sample_rule=None):
    """The configured database; ``create=False`` for readers: a missing SQLite file is an error, not a new
    empty database. ``writable=True``: a database that cannot be written (read-only file, folder or
    filesystem) is refused now, in one line, rather than at the first result or sign-off. ``sample_rule``:
    the model card's, for a store that records fields (:attr:`edge.inference.card.ModelCard.sample_rule`)."""
    from edge.store.database import Store, StoreError

    db = cfg.database
    try:
        opened = Store.open(
            db.url,
            device_id=cfg.daemon.device_id,
            busy_timeout_ms=db.busy_timeout_ms,
            synchronous=db.synchronous,
            create=create,
            sample_rule=sample_rule,
        )
    except StoreError as e:
        raise StartupError(f"database error: {e}", EXIT_STORE) from None
    if writable:
        try:
            opened.check_writable()
        except StoreError as e:
            opened.close()
            raise StartupError(f"database error: {e}", EXIT_STORE) from None
    return opened


def review_store(cfg: Config):
    """The database for `edge-screen serve`: it must exist (serve never creates one: an empty database
    beside a daemon that writes another is how sign-offs got lost) and be writable (sign-offs)."""
    from edge.store.engine import missing_sqlite_file

    missing = missing_sqlite_file(cfg.database.url)
    if missing is not None:
        raise StartupError(
            f"database error: no database at {missing}; the review app never creates one: start "
            f"the daemon (`edge-screen run`) or check database.url in the config",
            EXIT_STORE,
        )
    return store(cfg, create=False, writable=True)


@dataclass(frozen=True)
class Loaded:
    """What the daemon runs with, built once on start and on each reload: the config, the model, and the
    pipeline's typed settings from both (the pipeline never reads the config)."""

    cfg: Config
    classifier: Classifier
    settings: PipelineSettings


def load(config_path: Optional[str]) -> Loaded:
    """Config and model, checked; raises :class:`StartupError` with the exit code to use."""
    from edge.pipeline.settings import PipelineSettings

    cfg = config(config_path)
    clf = classifier(cfg)
    try:
        clf.warm_up()
    except Exception as e:  # noqa: BLE001 - an interpreter that loads but cannot invoke is a model error
        raise StartupError(f"model error: {e}".splitlines()[0], EXIT_MODEL) from None
    return Loaded(cfg, clf, PipelineSettings.of(cfg, clf.card, daemon=True))


def open_store(cfg: Config, sample_rule=None) -> Store:
    """The database and the inbox, ready for the daemon; :class:`StartupError` (exit 4) with one line."""
    db = store(cfg, writable=True, sample_rule=sample_rule)
    try:
        check_inbox(cfg.daemon.inbox)
    except StartupError:
        db.close()
        raise
    return db


def check_inbox(inbox: Path) -> None:
    """The inbox exists (created if not, as the daemon does) and can be read and written: the daemon keeps
    its lock file there and, with ``after = "move"``, moves files out of it."""
    try:
        inbox.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise StartupError(f"inbox error: cannot create {inbox}: {e.strerror or e}", EXIT_STORE) from None
    # os.access answers for the filesystem too: a read-only mount is "not writable" even for root.
    if not os.access(inbox, os.R_OK | os.X_OK):
        raise StartupError(f"inbox error: cannot read {inbox}: permission denied", EXIT_STORE)
    if not os.access(inbox, os.W_OK):
        why = "read-only file system" if _read_only_fs(inbox) else "permission denied"
        raise StartupError(
            f"inbox error: cannot write to {inbox} ({why}): the daemon keeps its lock file there "
            f"and moves screened files out of it",
            EXIT_STORE,
        )


def _read_only_fs(path: Path) -> bool:
    try:
        return bool(os.statvfs(path).f_flag & os.ST_RDONLY)
    except OSError:
        return False


def lock_inbox(inbox: Path):
    """One daemon per inbox: an exclusive lock on ``inbox/.edge-screen.lock`` held while it runs (the
    kernel drops it when the process dies, kill -9 included). Returns the open lock file."""
    import fcntl

    try:
        f = open(inbox / LOCK_NAME, "a+")
    except OSError as e:
        raise StartupError(
            f"inbox error: cannot create the lock file {inbox / LOCK_NAME}: {e.strerror or e}", EXIT_STORE
        ) from None
    try:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        f.seek(0)
        other = f.read().strip() or "?"
        f.close()
        raise StartupError(
            f"inbox error: another edge-screen daemon (pid {other}) is already working on {inbox}", EXIT_STORE
        ) from None
    f.seek(0)
    f.truncate()
    f.write(f"{os.getpid()}\n")
    f.flush()
    return f


def setup_logging(level: str = "INFO") -> None:
    # journald stamps every line itself; a terminal wants the time.
    fmt = (
        "%(levelname)s %(name)s: %(message)s"
        if os.environ.get("JOURNAL_STREAM")
        else "%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    logging.basicConfig(level=getattr(logging, level, logging.INFO), format=fmt, stream=sys.stderr, force=True)

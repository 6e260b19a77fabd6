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
    from edge.inference.classifier import ModelLoadError, classifier_from_config  # numpy and OpenCV: only when a model is needed

    try:
        return classifier_from_config(cfg, model)
    except ModelLoadError as e:
        raise StartupError(f"model error: {e}", EXIT_MODEL) from None


def store(cfg: Config, create: bool = True):
    """The configured database; ``create=False`` for readers: a missing SQLite file is an error, not a new
    empty database."""
    from edge.store.database import Store, StoreError

    db = cfg.database
    try:
        return Store.open(db.url, device_id=cfg.daemon.device_id, busy_timeout_ms=db.busy_timeout_ms,
                          synchronous=db.synchronous, create=create)
    except StoreError as e:
        raise StartupError(f"database error: {e}", EXIT_STORE) from None


@dataclass
class Loaded:
    cfg: Config
    classifier: "Classifier"


def load(config_path: Optional[str]) -> Loaded:
    """Config and model, checked; raises :class:`StartupError` with the exit code to use."""
    cfg = config(config_path)
    clf = classifier(cfg)
    try:
        clf.warm_up()
    except Exception as e:  # noqa: BLE001 - an interpreter that loads but cannot invoke is a model error
        raise StartupError(f"model error: {e}".splitlines()[0], EXIT_MODEL) from None
    return Loaded(cfg, clf)


def open_store(cfg: Config) -> "Store":
    """The database and the inbox, ready for the daemon; :class:`StartupError` (exit 4) with one line."""
    db = store(cfg)
    try:
        cfg.daemon.inbox.mkdir(parents=True, exist_ok=True)
        if not os.access(cfg.daemon.inbox, os.R_OK | os.X_OK):
            raise PermissionError(13, "not readable")
    except OSError as e:
        db.close()
        raise StartupError(f"inbox error: cannot use {cfg.daemon.inbox}: {e.strerror or e}", EXIT_STORE) from None
    return db


def lock_inbox(inbox: Path):
    """One daemon per inbox: an exclusive lock on ``inbox/.edge-screen.lock`` held while it runs (the
    kernel drops it when the process dies, kill -9 included). Returns the open lock file."""
    import fcntl

    f = open(inbox / LOCK_NAME, "a+")
    try:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        f.seek(0)
        other = f.read().strip() or "?"
        f.close()
        raise StartupError(f"inbox error: another edge-screen daemon (pid {other}) is already working on "
                           f"{inbox}", EXIT_STORE) from None
    f.seek(0)
    f.truncate()
    f.write(f"{os.getpid()}\n")
    f.flush()
    return f


def setup_logging(level: str = "INFO") -> None:
    # journald stamps every line itself; a terminal wants the time.
    fmt = "%(levelname)s %(name)s: %(message)s" if os.environ.get("JOURNAL_STREAM") else \
        "%(asctime)s %(levelname)s %(name)s: %(message)s"
    logging.basicConfig(level=getattr(logging, level, logging.INFO), format=fmt, stream=sys.stderr, force=True)

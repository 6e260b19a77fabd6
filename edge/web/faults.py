"""Database faults in the review app: a deleted or replaced SQLite file, and a read-only database.

SQLite goes on reading and writing a database file that was deleted while it is open: the commit of a
sign-off "succeeds" into an unlinked file and the reviewer is told it was saved. So every request first
checks that the file is still the one that was opened (a stat), and :meth:`edge.store.database.Store.write` checks
again after its commit; once the file is gone the app answers 503 with a plain page, logs one line and
stops the server with exit code 4, as the daemon does, so that systemd starts it again on the database
that exists (never on an empty one: `serve` does not create databases). A read-only database (an SD card
remounted read-only) cannot save a login or a sign-off: a 503 page that says so and one log line a
minute, instead of a 500 on every login.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Callable, Optional

from flask import Flask, render_template, request
from sqlalchemy.exc import DatabaseError

from edge.daemon.startup import EXIT_STORE
from edge.store.database import DatabaseGone
from edge.store.engine import is_readonly

log = logging.getLogger("edge.web")
CHECK_S = 1.0  # how often an idle server checks its database file (a request checks it at once)
READONLY_LOG_S = 60.0  # a read-only database is logged at most once a minute, not once per request
GONE = (
    "The database was deleted or replaced while the review app had it open. Nothing was saved by this "
    "request. The review app is stopping so that it starts again on the database that exists."
)
READONLY = (
    "The database is read-only (the storage may have been remounted read-only, or it is full), so "
    "nothing can be saved now: not a login, a review or a sign-off. Tell the administrator."
)


class DatabaseWatch:
    """Notices a deleted or replaced database file (on each request and every second) and calls
    ``on_fatal`` once, from its own thread, so the 503 page already sent can still be read."""

    def __init__(self, store, on_fatal: Callable[[], None] = lambda: None):
        self.store = store
        self.on_fatal = on_fatal
        self.fatal: Optional[str] = None  # the one-line reason, once the database is gone
        self.code = EXIT_STORE
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None
        self._readonly_logged = -READONLY_LOG_S

    def install(self, app: Flask) -> None:
        app.before_request(self._check)
        app.register_error_handler(DatabaseGone, self._gone)
        app.register_error_handler(DatabaseError, self._database_error)

    def start(self) -> DatabaseWatch:
        self._thread = threading.Thread(target=self._run, name="database-watch", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()

    def check(self) -> bool:
        """False (and the fault recorded) once the database file is gone."""
        if self.fatal is None:
            try:
                self.store.check_file()
            except DatabaseGone as e:
                self._fail(str(e))
        return self.fatal is None

    def _run(self) -> None:
        while not self._stop.wait(CHECK_S):
            if not self.check():
                # Called a check interval after the fault was first seen: the request that saw it has had
                # its 503 answered by then.
                self.on_fatal()
                return

    def _fail(self, reason: str) -> None:
        if self.fatal is None:
            self.fatal = f"database error: {reason}"
            log.error("%s; nothing more is saved, stopping the review app (exit %d)", self.fatal, self.code)

    def _check(self):
        if not self.check():
            return _page(503, GONE)
        return None

    def _gone(self, e: DatabaseGone):
        self._fail(str(e))
        return _page(503, GONE)

    def _database_error(self, e: DatabaseError):
        if not is_readonly(e):
            raise e  # any other database error is a bug: Flask's 500, with its traceback in the log
        now = time.monotonic()
        if now - self._readonly_logged >= READONLY_LOG_S:
            self._readonly_logged = now
            log.error(
                "database is read-only: %s %s refused (%s)",
                request.method,
                request.path,
                str(getattr(e, "orig", e)).splitlines()[0],
            )
        return _page(503, READONLY)


def _page(code: int, message: str):
    try:
        return render_template("errors.html", code=code, message=message, back=None), code
    except Exception:  # noqa: BLE001 - the page must not fail for a template change: plain text says it too
        return message + "\n", code, {"Content-Type": "text/plain; charset=utf-8"}


__all__ = ["DatabaseWatch"]

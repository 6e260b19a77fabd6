"""Engines on edge-screen databases: URLs, SQLite pragmas and locking, and opening a database to write
(creating or upgrading its schema, :mod:`edge.store.migrations`) or to read (never changing it)."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Optional, Tuple

from sqlalchemy import create_engine, event
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.exc import NoSuchModuleError, SQLAlchemyError

from edge.store.migrations import ensure_schema, existing_version, needs_upgrade
from edge.store.schema import DriverMissing, SchemaError


def normalize_url(url: str | Path) -> str:
    """A SQLAlchemy URL; a bare path means a SQLite file; PostgreSQL defaults to the psycopg 3 driver."""
    s = str(url)
    if "://" not in s:
        return f"sqlite:///{Path(s).expanduser().resolve()}"
    for prefix in ("postgresql://", "postgres://"):
        if s.startswith(prefix):
            return "postgresql+psycopg://" + s[len(prefix) :]
    return s


def make_engine(
    url: str | Path, busy_timeout_ms: int = 5000, synchronous: str = "FULL", create_dirs: bool = True
) -> Engine:
    url = normalize_url(url)
    u = make_url(url)
    if u.get_backend_name() != "sqlite":
        try:
            return create_engine(url, pool_pre_ping=True)
        except (ImportError, NoSuchModuleError) as e:
            hint = " (pip install 'edge-screen[postgres]')" if u.get_backend_name() == "postgresql" else ""
            raise DriverMissing(f"no database driver for {u.drivername} URLs{hint}: {e}".splitlines()[0]) from None
    db = u.database or ""
    if create_dirs and db and db != ":memory:" and not u.query.get("uri"):
        Path(db).parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(url, connect_args={"timeout": busy_timeout_ms / 1000.0})

    @event.listens_for(engine, "connect")
    def _pragmas(dbapi_conn, _record):
        # Autocommit at the driver level; transactions are begun explicitly in _begin below, so pysqlite's
        # own implicit BEGIN never defers a write lock behind our back.
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        cur.execute(f"PRAGMA busy_timeout = {int(busy_timeout_ms)}")
        cur.execute("PRAGMA foreign_keys = ON")
        try:
            cur.execute("PRAGMA journal_mode = WAL")  # persistent in the file; a no-op once set
        except sqlite3.OperationalError:  # a read-only medium cannot switch modes; reading still works
            pass
        cur.execute(f"PRAGMA synchronous = {synchronous}")
        cur.close()

    @event.listens_for(engine, "begin")
    def _begin(conn):
        conn.exec_driver_sql("BEGIN IMMEDIATE" if conn.get_execution_options().get("edge_write") else "BEGIN")

    return engine


def writer(engine: Engine) -> Engine:
    """The same engine, but its transactions take SQLite's write lock at BEGIN."""
    return engine.execution_options(edge_write=True)


def open_schema(engine: Engine, create: bool = True) -> None:
    """Check (read transaction) and, only when needed, create or upgrade (write transaction) the schema."""
    with engine.connect() as conn:
        upgrade = needs_upgrade(conn)
    if upgrade:
        with writer(engine).begin() as conn:  # re-checked under the write lock: another process may have won
            ensure_schema(conn, create=create)


def open_existing(url: str | Path | Engine, busy_timeout_ms: int = 5000) -> Tuple[Engine, int]:
    """An engine on an existing edge-screen database and its schema version, for readers (report, export
    sources): never creates or upgrades anything, so it works on a copy on a read-only stick. A missing,
    empty, foreign or too-new database raises :class:`SchemaError` with one line."""
    if isinstance(url, Engine):
        engine = url
    else:
        u = make_url(normalize_url(url))
        if (
            u.get_backend_name() == "sqlite"
            and u.database not in (None, "", ":memory:")
            and not Path(u.database).is_file()
        ):
            raise SchemaError(f"no database at {u.database}")
        engine = make_engine(u.render_as_string(hide_password=False), busy_timeout_ms, create_dirs=False)
    try:
        with engine.connect() as conn:
            version = existing_version(conn)
    except (SchemaError, SQLAlchemyError) as e:
        if engine is not url:
            engine.dispose()
        if isinstance(e, SQLAlchemyError):
            where = engine.url.render_as_string(hide_password=True)
            raise SchemaError(f"cannot read {where}: {str(e).splitlines()[0]}") from None
        raise
    return engine, version


def missing_sqlite_file(url: str | Path) -> Optional[str]:
    """The path of a SQLite database URL whose file does not exist (None: it exists, or not SQLite)."""
    u = make_url(normalize_url(url))
    if u.get_backend_name() == "sqlite" and u.database not in (None, "", ":memory:") and not Path(u.database).exists():
        return u.database
    return None


def is_readonly(e: BaseException) -> bool:
    """Did a write fail because the database (file, folder or filesystem) is read-only?"""
    orig = getattr(e, "orig", None) or e
    low = str(orig).lower()
    return "readonly" in low or "read-only" in low or getattr(orig, "sqlstate", None) == "25006"


def readonly_reason(e: BaseException) -> str:
    orig = getattr(e, "orig", None) or e
    msg = (str(orig).strip().splitlines() or [type(orig).__name__])[0]
    return f"the database is read-only ({msg})" if is_readonly(e) else msg

"""Where an export reads from and what its errors say: a source (a :class:`Store`, an engine, a URL or an
SQLite path) opened read-only as an existing edge-screen database, named without its password, and any
driver or schema error turned into one line for a technician. Shared by :mod:`edge.export.merge`,
:mod:`edge.export.csvfile` and :mod:`edge.export.fhir`.
"""

from __future__ import annotations

import errno
from pathlib import Path
from typing import Tuple, Union

from sqlalchemy.engine import Connection, Engine, make_url

from edge.export.copy import ExportError
from edge.store.database import Store
from edge.store.engine import make_engine, normalize_url
from edge.store.migrations import existing_version
from edge.store.schema import SchemaError

Source = Union[Store, str, Path, Engine]


def location(engine: Engine) -> str:
    """The database as a technician knows it: the SQLite file, or the URL without its password."""
    u = engine.url
    return (u.database or ":memory:") if u.get_backend_name() == "sqlite" else u.render_as_string(hide_password=True)


def export_error(e: BaseException, where: str) -> ExportError:
    """One line that tells a technician what went wrong, from whatever the driver raised."""
    if isinstance(e, SchemaError):
        return ExportError(str(e))
    orig = getattr(e, "orig", None) or e
    msg = str(orig).strip().splitlines()[0] if str(orig).strip() else type(orig).__name__
    code = getattr(orig, "sqlstate", None) or ""
    low = msg.lower()
    if "readonly" in low or "read-only" in low or code in ("25006", "42501"):
        return ExportError(f"{where} is read-only or not writable for this user ({msg}); nothing was changed")
    if "disk is full" in low or code == "53100" or getattr(orig, "errno", None) == errno.ENOSPC:
        return ExportError(f"{where}: the disk is full; nothing was changed")
    if "unable to open database" in low:
        return ExportError(f"cannot open {where} (missing folder or no permission)")
    if "not a database" in low:
        return ExportError(f"{where} is not an edge-screen database (not an SQLite file)")
    return ExportError(f"{where}: {msg}")


def source_engine(src: Source) -> Tuple[Engine, bool]:
    """An engine on the source, and whether it is ours to dispose of (a missing SQLite file is an error, never
    created)."""
    if isinstance(src, Store):
        return src.engine, False
    if isinstance(src, Engine):
        return src, False
    u = make_url(normalize_url(src))
    if u.get_backend_name() == "sqlite" and not Path(u.database or "").is_file():
        raise ExportError(f"source not found: {u.database}")
    return make_engine(normalize_url(src), create_dirs=False), True


def check_source(conn: Connection) -> None:
    """Raises :class:`ExportError` unless the source is an edge-screen database this code can read."""
    try:
        existing_version(conn)
    except SchemaError as e:
        raise ExportError(f"source {e}") from None

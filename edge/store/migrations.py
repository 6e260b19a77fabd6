"""The database's version and its forward migrations: create a new database, upgrade an old one in place,
refuse a foreign or too-new one. The tables themselves are :mod:`edge.store.schema`; engines:
:mod:`edge.store.engine`.
"""

from __future__ import annotations

from typing import Callable, Dict, Sequence

from sqlalchemy import inspect
from sqlalchemy.engine import Connection

from edge.store.schema import (
    APPLICATION,
    SCHEMA_VERSION,
    NotEdgeScreenDatabase,
    SchemaTooNew,
    export_watermarks,
    images,
    login_throttle,
    metadata,
    models,
    reviews,
    runs,
    samples,
    schema_info,
    user_events,
    users,
    utcnow,
    web_sessions,
)

# MIGRATIONS[v] upgrades a database at version v-1 to version v. A fresh database gets every migration in
# order, so the upgrade path of a device in the field is the same code that every new database runs.
# A migration must only ADD (tables, nullable columns, indexes) and must spell out its own DDL for
# anything a later version changes; tables that later versions never alter may use the Table objects of
# edge.store.schema.


def _v1_initial(conn: Connection) -> None:
    metadata.create_all(conn, tables=[runs, models, images])


def _v2_export_watermarks(conn: Connection) -> None:
    metadata.create_all(conn, tables=[export_watermarks])


_V3_IMAGE_COLUMNS = ("moved_to", "sample_id", "purged_at")


def _v3_samples_reviews(conn: Connection) -> None:
    # _v1_initial builds `images` from today's Table, so a database created fresh already has the v3
    # columns; one from a device in the field (v1/v2) gets them added here.
    _add_image_columns(conn, _V3_IMAGE_COLUMNS)
    conn.exec_driver_sql("CREATE INDEX IF NOT EXISTS ix_images_sample ON images (device_id, sample_id)")
    metadata.create_all(conn, tables=[samples, reviews, users, web_sessions])
    if conn.dialect.name == "sqlite":
        # Append-only in the database itself, not just in our code: a review is an audit record.
        for op in ("UPDATE", "DELETE"):
            conn.exec_driver_sql(
                f"CREATE TRIGGER IF NOT EXISTS reviews_no_{op.lower()} BEFORE {op} ON reviews "
                "BEGIN SELECT RAISE(ABORT, 'reviews are append-only'); END"
            )


_V4_IMAGE_COLUMNS = ("px_per_um", "magnification", "domain")


def _v4_optics(conn: Connection) -> None:
    _add_image_columns(conn, _V4_IMAGE_COLUMNS)


_V5_SAMPLE_COLUMNS = ("patient_id", "specimen_id", "meta_source", "meta_error")


def _v5_sample_meta(conn: Connection) -> None:
    # _v3_samples_reviews builds `samples` from today's Table, so a fresh database already has these.
    have = {c["name"] for c in inspect(conn).get_columns("samples")}
    for name in _V5_SAMPLE_COLUMNS:
        if name not in have:
            ddl = samples.c[name].type.compile(dialect=conn.dialect)
            conn.exec_driver_sql(f"ALTER TABLE samples ADD COLUMN {name} {ddl}")


def _v7_web_security(conn: Connection) -> None:
    # Self-contained DDL for the two new tables (issue 14, items 7 and 12): no later version alters them.
    metadata.create_all(conn, tables=[login_throttle, user_events])
    if conn.dialect.name == "sqlite":
        for op in ("UPDATE", "DELETE"):
            conn.exec_driver_sql(
                f"CREATE TRIGGER IF NOT EXISTS user_events_no_{op.lower()} BEFORE {op} ON user_events "
                "BEGIN SELECT RAISE(ABORT, 'user events are append-only'); END"
            )


def _add_image_columns(conn: Connection, names: Sequence[str]) -> None:
    have = {c["name"] for c in inspect(conn).get_columns("images")}
    for name in names:
        if name not in have:
            ddl = images.c[name].type.compile(dialect=conn.dialect)  # the very type a fresh database gets
            conn.exec_driver_sql(f"ALTER TABLE images ADD COLUMN {name} {ddl}")


def _v6_late_fields(conn: Connection) -> None:
    # _v3_samples_reviews builds `samples` from today's Table, so a fresh database has the column already.
    if "late_fields" not in {c["name"] for c in inspect(conn).get_columns("samples")}:
        ddl = samples.c.late_fields.type.compile(dialect=conn.dialect)
        conn.exec_driver_sql(f"ALTER TABLE samples ADD COLUMN late_fields {ddl}")


MIGRATIONS: Dict[int, Callable[[Connection], None]] = {
    1: _v1_initial,
    2: _v2_export_watermarks,
    3: _v3_samples_reviews,
    4: _v4_optics,
    5: _v5_sample_meta,
    6: _v6_late_fields,
    7: _v7_web_security,
}
assert sorted(MIGRATIONS) == list(range(1, SCHEMA_VERSION + 1))


def _where(conn: Connection) -> str:
    url = conn.engine.url
    return (
        (url.database or ":memory:")
        if url.drivername.startswith("sqlite")
        else url.render_as_string(hide_password=True)
    )


def schema_version(conn: Connection) -> int | None:
    """The edge-screen schema version, None for an empty database; raises for a foreign database."""
    names = set(inspect(conn).get_table_names())
    if "schema_info" not in names:
        if names:
            raise NotEdgeScreenDatabase(
                f"{_where(conn)} is not an edge-screen database (it has tables {', '.join(sorted(names)[:5])})"
            )
        return None
    row = conn.execute(schema_info.select().where(schema_info.c.application == APPLICATION)).first()
    if row is None:
        raise NotEdgeScreenDatabase(f"{_where(conn)} is not an edge-screen database (no edge-screen schema_info)")
    return int(row.version)


def check_version(conn: Connection, version: int | None) -> None:
    if version is not None and version > SCHEMA_VERSION:
        raise SchemaTooNew(
            f"{_where(conn)} has schema version {version}, newer than the {SCHEMA_VERSION} this "
            "edge-screen knows: upgrade edge-screen to use it"
        )


def existing_version(conn: Connection) -> int:
    """The version of an existing edge-screen database this code can read; raises for an empty, foreign
    or too-new one (readers: report, export sources)."""
    version = schema_version(conn)
    if version is None:
        raise NotEdgeScreenDatabase(f"{_where(conn)} is empty, not an edge-screen database")
    check_version(conn, version)
    return version


def needs_upgrade(conn: Connection) -> bool:
    version = schema_version(conn)
    check_version(conn, version)
    return version != SCHEMA_VERSION


def ensure_schema(conn: Connection, create: bool = True) -> int:
    """Create or upgrade the schema inside the caller's transaction; returns the version found before.

    DDL is transactional on SQLite and PostgreSQL, so a failed upgrade leaves the old version intact.
    """
    version = schema_version(conn)
    check_version(conn, version)
    if version is None and not create:
        raise NotEdgeScreenDatabase(f"{_where(conn)} is empty, not an edge-screen database")
    start = version or 0
    if start == SCHEMA_VERSION:
        return start
    if version is None:
        metadata.create_all(conn, tables=[schema_info])
    for v in range(start + 1, SCHEMA_VERSION + 1):
        MIGRATIONS[v](conn)
    if version is None:
        conn.execute(schema_info.insert().values(application=APPLICATION, version=SCHEMA_VERSION, updated_at=utcnow()))
    else:
        conn.execute(
            schema_info.update()
            .where(schema_info.c.application == APPLICATION)
            .values(version=SCHEMA_VERSION, updated_at=utcnow())
        )
    return start

"""CSV export: a store's tables as ``images.csv``, ``runs.csv``, ``models.csv``, ``samples.csv``,
``reviews.csv``, for spreadsheets and the clinic's own tools. Same sources, anonymisation and one-line errors
as :mod:`edge.export.merge`; never the device-local users and web sessions."""

from __future__ import annotations

import csv
import os
import time
from pathlib import Path
from typing import Optional, Union

from sqlalchemy import func, select
from sqlalchemy.exc import SQLAlchemyError

from edge.export.anon import anonymizer
from edge.export.copy import BATCH, ExportError, ExportSummary, Progress, full_row, present_select, source_tables
from edge.export.sources import Source, check_source, export_error, location, source_engine
from edge.store.schema import SchemaError, images, models, reviews, runs, samples

TABLES = (runs, models, images, samples, reviews)
ORDER = {"images": ("recorded_at", "id"), "reviews": ("created_at", "id")}


def prepare_out_dir(path: Union[str, Path]) -> Path:
    """The output folder, created if absent; one line naming --out when it cannot be."""
    out = Path(path)
    if out.exists() and not out.is_dir():
        raise ExportError(f"--out {out} is a file, not a folder")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ExportError(f"--out {out}: cannot create the folder ({e.strerror or e})") from None
    return out


def export_csv(
    source: Source,
    out_dir: Union[str, Path],
    anonymize_key: Optional[bytes] = None,
    progress: Optional[Progress] = None,
) -> ExportSummary:
    """One CSV file per exported table in ``out_dir``, columns named as in the database (all of today's
    columns, also for an older device's database: what it lacks is empty). Each file is written under a
    temporary name and renamed, so a reader never sees half a file."""
    t0 = time.perf_counter()
    eng, own = source_engine(source)
    out = Path(out_dir)
    summary = ExportSummary(target=str(out.resolve()), sources=[location(eng)])
    anon = anonymizer(anonymize_key) if anonymize_key else None
    try:
        prepare_out_dir(out)
        with eng.connect() as conn:
            check_source(conn)
            present = source_tables(conn)
            total = conn.execute(select(func.count()).select_from(images)).scalar() or 0
            for table in TABLES:
                tmp = out / f".{table.name}.csv.tmp"
                with open(tmp, "w", newline="", encoding="utf-8") as f:
                    w = csv.writer(f)
                    w.writerow([c.name for c in table.columns])
                    order = [table.c[n] for n in ORDER.get(table.name, ("id",))]
                    rows = (
                        conn.execution_options(yield_per=BATCH).execute(present_select(conn, table).order_by(*order))
                        if table.name in present
                        else ()
                    )
                    for i, r in enumerate(rows, 1):
                        d = full_row(table, r)
                        d = anon(d, table.name) if anon else d
                        if table is samples:
                            summary.samples_sent += 1
                        elif table is reviews:
                            summary.reviews_sent += 1
                        elif table is images:
                            summary.rows_sent += 1
                            if progress and i % BATCH == 0:
                                progress(i, total)
                        w.writerow([_csv_value(d[c.name]) for c in table.columns])
                    f.flush()
                    os.fsync(f.fileno())
                os.replace(tmp, out / f"{table.name}.csv")
    except OSError as e:
        raise export_error(e, str(out)) from None
    except (SQLAlchemyError, SchemaError) as e:
        raise export_error(e, summary.sources[0]) from None
    finally:
        if own:
            eng.dispose()
    if progress:
        progress(summary.rows_sent, summary.rows_sent)
    summary.seconds = time.perf_counter() - t0
    return summary


# A spreadsheet runs a cell that starts with one of these as a formula (=cmd|' /C calc'!A0, +SUM(..), @..);
# a file name is whatever the camera or a person typed, so such text is quoted (OWASP's CSV injection advice).
FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def _csv_value(v):
    if v is None:
        return ""
    if hasattr(v, "isoformat"):
        return v.isoformat()
    if isinstance(v, bool):
        return int(v)
    if isinstance(v, str) and v.startswith(FORMULA_START):
        return "'" + v
    return v


__all__ = ["export_csv", "prepare_out_dir"]

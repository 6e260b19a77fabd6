"""CSV export: a store's tables as ``images.csv``, ``runs.csv``, ``models.csv``, for spreadsheets and the
clinic's own tools. Same sources, anonymisation and one-line errors as :mod:`edge.export`."""
from __future__ import annotations

import csv
import os
import time
from pathlib import Path
from typing import Optional, Union

from sqlalchemy import func, select
from sqlalchemy.exc import SQLAlchemyError

from .export import (BATCH, ExportSummary, Progress, Source, _check_source, _error, _source_engine, _where,
                     anonymizer)
from .schema import SchemaError, images, models, runs


def export_csv(source: Source, out_dir: Union[str, Path], anonymize_key: Optional[bytes] = None,
               progress: Optional[Progress] = None) -> ExportSummary:
    """``images.csv``, ``runs.csv``, ``models.csv`` in ``out_dir``, columns named as in the database.
    Each file is written under a temporary name and renamed, so a reader never sees half a file."""
    t0 = time.perf_counter()
    out = Path(out_dir)
    eng, own = _source_engine(source)
    summary = ExportSummary(target=str(out.resolve()), sources=[_where(eng)])
    anon = anonymizer(anonymize_key) if anonymize_key else None
    try:
        out.mkdir(parents=True, exist_ok=True)
        with eng.connect() as conn:
            _check_source(conn)
            total = conn.execute(select(func.count()).select_from(images)).scalar()
            for table in (runs, models, images):
                tmp = out / f".{table.name}.csv.tmp"
                with open(tmp, "w", newline="", encoding="utf-8") as f:
                    w = csv.writer(f)
                    w.writerow([c.name for c in table.columns])
                    order = (table.c.recorded_at, table.c.id) if table is images else (table.c.id,)
                    for i, r in enumerate(conn.execution_options(yield_per=BATCH).execute(
                            select(table).order_by(*order)), 1):
                        d = dict(r._mapping)
                        d = anon(d, table.name) if anon else d
                        if table is images:
                            summary.rows_sent += 1
                            if progress and i % BATCH == 0:
                                progress(i, total)
                        w.writerow([_csv_value(v) for v in d.values()])
                    f.flush()
                    os.fsync(f.fileno())
                os.replace(tmp, out / f"{table.name}.csv")
    except OSError as e:
        raise _error(e, str(out)) from None
    except (SQLAlchemyError, SchemaError) as e:
        raise _error(e, summary.sources[0]) from None
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


__all__ = ["export_csv"]

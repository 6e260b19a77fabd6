"""``edge-screen export`` and ``edge-screen merge``: option parsing and printing over :mod:`edge.export.merge`
and :mod:`edge.export.csvfile`."""

from __future__ import annotations

import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, List, Optional

import click

from edge.cli.common import load_cfg
from edge.config import Config, ConfigError
from edge.daemon.startup import (
    EXIT_CONFLICTS,  # finished, but some rows differ between source and target: a person must look
)

MAX_CONFLICTS_SHOWN = 20


def _key(cfg: Config, anonymize: bool) -> Optional[bytes]:
    if not anonymize:
        return None
    try:
        key = cfg.export.anonymize_key()
    except ConfigError as e:
        raise click.ClickException(str(e)) from None
    if not key:
        raise click.ClickException(
            f"--anonymize needs a key: set ${cfg.export.anonymize_key_env} or export.anonymize_key_file in the config"
        )
    return key


@contextmanager
def _progress(label: str) -> Iterator:
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    with Progress(
        TextColumn(label),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=Console(stderr=True),
        transient=True,
    ) as prog:
        task = prog.add_task(label, total=None)
        yield lambda done, total: prog.update(task, completed=done, total=total)


def _report(summary, what: str) -> None:
    click.echo(
        f"{what} {summary.target}: {summary.rows_sent} rows sent, {summary.rows_skipped} already there, "
        f"{summary.runs_sent} runs and {summary.models_sent} models sent, "
        f"{summary.samples_sent} samples sent and {summary.samples_updated} updated, "
        f"{summary.reviews_sent} reviews sent, {len(summary.conflicts)} conflicts, "
        f"{summary.seconds:.2f} s ({summary.rows_per_s:,.0f} rows/s)"
    )
    if summary.watermark_saved is False:
        click.echo(
            "note: the source is read-only, so the next export cannot be incremental (it stays correct)", err=True
        )
    for c in summary.conflicts[:MAX_CONFLICTS_SHOWN]:
        click.echo(f"conflict: {c}", err=True)
    if len(summary.conflicts) > MAX_CONFLICTS_SHOWN:
        click.echo(f"... and {len(summary.conflicts) - MAX_CONFLICTS_SHOWN} more conflicts", err=True)
    if summary.conflicts:
        sys.exit(EXIT_CONFLICTS)


@click.command("export", context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--to",
    "target",
    metavar="TARGET",
    help="Clinic database: a SQLite file (created if absent) or postgresql://user@host/db.",
)
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["db", "csv", "fhir"]),
    default="db",
    show_default=True,
    help="db: upsert into TARGET; csv: one file per table in --out; fhir: one FHIR R4 Bundle per "
    "sample in --out (needs edge-screen[fhir]).",
)
# Not click.Path(file_okay=False): its refusal is a usage screen; the library says it in one line.
@click.option("--out", type=click.Path(path_type=Path), help="Folder for --format csv and fhir.")
@click.option(
    "--anonymize",
    is_flag=True,
    help="Replace file paths, names, sample ids and reviewer names by a keyed hash and drop review "
    "comments (key from config [export]).",
)
@click.option("--full", is_flag=True, help="Ignore the last-export watermark and send every row (still idempotent).")
@click.option("--db", "source", metavar="URL", help="Source database (default: database.url from the config).")
@click.option("--config", "config_path", type=click.Path(dir_okay=False), help="TOML config file.")
@click.pass_context
def export(
    ctx: click.Context,
    target: Optional[str],
    fmt: str,
    out: Optional[Path],
    anonymize: bool,
    full: bool,
    source: Optional[str],
    config_path: Optional[str],
) -> None:
    """Send this device's results to a clinic-wide database, or to CSV files or FHIR R4 bundles.

    Idempotent and incremental: only rows not yet sent to TARGET go, and a row already there is skipped.
    All in one transaction: a failure leaves TARGET unchanged. Exit status 5 when rows conflict (same id,
    different content); they are listed and left as they are in TARGET. Without --to, the config's
    export.target (what edge-screen-export.timer uses).
    """
    from edge.export.csvfile import export_csv
    from edge.export.merge import ExportError, export_to

    cfg = load_cfg(config_path)
    key = _key(cfg, anonymize)
    src = source or cfg.database.url
    target = target or cfg.export.target
    if fmt in ("csv", "fhir") and not out:
        raise click.UsageError(f"--format {fmt} needs --out FOLDER")
    try:
        if fmt == "fhir":
            assert out is not None  # checked above: a UsageError without it
            from edge.export.fhir import FhirSystems, bundle_model, export_fhir

            bundle_model()  # the missing extra is said before a progress bar or a folder appears
            systems = FhirSystems(patient=cfg.export.patient_system, specimen=cfg.export.specimen_system)
            with _progress("exporting FHIR") as progress:
                fs = export_fhir(src, out, anonymize_key=key, progress=progress, systems=systems)
            click.echo(
                f"wrote {fs.bundles} FHIR bundles ({fs.observations} observations) to {fs.out}, {fs.seconds:.2f} s"
            )
            return
        if fmt == "csv":
            assert out is not None
            with _progress("exporting CSV") as progress:
                summary = export_csv(src, out, anonymize_key=key, progress=progress)
        else:
            if not target:
                raise click.UsageError(
                    "export needs --to TARGET or export.target in the config (a SQLite file or a postgresql:// URL)"
                )
            with _progress("exporting") as progress:
                summary = export_to(src, target, anonymize_key=key, progress=progress, incremental=not full)
    except ExportError as e:
        raise click.ClickException(str(e)) from None
    _report(summary, "exported to")


@click.command("merge", context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("sources", nargs=-1, required=True, metavar="SOURCE...")
@click.option(
    "--into",
    "into",
    required=True,
    metavar="TARGET",
    help="Merged database: a SQLite file (created if absent) or postgresql://user@host/db.",
)
@click.option("--anonymize", is_flag=True, help="Replace file paths and names by a keyed hash.")
@click.option("--config", "config_path", type=click.Path(dir_okay=False), help="TOML config file.")
@click.pass_context
def merge(ctx: click.Context, sources: List[str], into: str, anonymize: bool, config_path: Optional[str]) -> None:
    """Merge device databases (SQLite files or URLs) into one, keeping device ids.

    Sources are only read. Idempotent: merging the same files again adds nothing. Exit status 5 when rows
    conflict (same id, different content); they are listed, and the copy already in TARGET is kept.
    """
    from edge.export.merge import ExportError
    from edge.export.merge import merge as merge_dbs

    cfg = load_cfg(config_path)
    key = _key(cfg, anonymize)
    try:
        with _progress("merging") as progress:
            summary = merge_dbs(list(sources), into, anonymize_key=key, progress=progress)
    except ExportError as e:
        raise click.ClickException(str(e)) from None
    _report(summary, f"merged {len(summary.sources)} databases into")


COMMANDS = [export, merge]

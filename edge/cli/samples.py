"""``edge-screen samples`` and ``edge-screen sample close``: option parsing and printing over
:mod:`edge.store.samples`."""
from __future__ import annotations

import json
import shutil
from typing import Optional

import click

from edge.cli.common import Failure, load_cfg, started


def _samples(config: Optional[str], create: bool = False):
    from edge.daemon import startup
    from edge.store.samples import Samples

    cfg = load_cfg(config)
    return Samples(started(startup.store, cfg, create=create))


def _table(items, width: int):
    from rich.table import Table

    # Sized for an 80-column Pi console: the sample id folds, the numbers never do.
    t = Table(box=None, pad_edge=False, width=min(width, 120))
    t.add_column("sample", overflow="fold", ratio=3)
    for name in ("status", "fields", "readable", "verdict", "score"):
        t.add_column(name, no_wrap=True, justify="right" if name in ("fields", "readable", "score") else "left")
    t.add_column("review", overflow="fold", ratio=2)
    for s in items:
        t.add_row(s.sample_id, s.status, str(s.fields), str(s.readable), s.final_verdict or s.verdict or "-",
                  "-" if s.score is None else f"{s.score:.3f}",
                  ("signed " + (s.signed_by or "")) if s.status == "signed" else
                  ("; ".join(s.review_reasons) if s.needs_review else "no"))
    return t


@click.command("samples")
@click.option("--status", type=click.Choice(("collecting", "ready", "signed")), help="only samples in this state")
@click.option("--format", "fmt", type=click.Choice(("table", "json")), default="table", show_default=True)
@click.option("--config", type=click.Path(dir_okay=False), help="config file (default: $EDGE_SCREEN_CONFIG)")
def samples(status: Optional[str], fmt: str, config: Optional[str]) -> None:
    """Patient samples (one inbox subfolder each): fields, readable fields, status, verdict, score."""
    lib = _samples(config)
    try:
        items = lib.list(status=status)
    finally:
        lib.store.close()
    if fmt == "json":
        click.echo(json.dumps([s.to_json() for s in items], indent=2))
        return
    if not items:
        click.echo("no samples" + (f" with status {status}" if status else ""))
        return
    from rich.console import Console

    width = shutil.get_terminal_size((80, 24)).columns
    Console(width=width).print(_table(items, width))


@click.group("sample")
def sample_group() -> None:
    """Act on one patient sample."""


@sample_group.command("close")
@click.argument("sample_id")
@click.option("--config", type=click.Path(dir_okay=False), help="config file (default: $EDGE_SCREEN_CONFIG)")
def sample_close(sample_id: str, config: Optional[str]) -> None:
    """Mark SAMPLE_ID ready for review now: no more fields are coming."""
    from edge.store.samples import SampleError

    lib = _samples(config)
    try:
        s = lib.close(sample_id)
    except SampleError as e:
        raise Failure(str(e)) from None
    finally:
        lib.store.close()
    click.echo(f"sample {s.sample_id}: {s.status} ({s.readable} readable of {s.fields} fields, verdict "
               f"{s.verdict or '-'}{', needs review' if s.needs_review else ''})")


COMMANDS = [samples, sample_group]

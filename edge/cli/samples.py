"""``edge-screen samples``, ``edge-screen sample close`` and ``sample meta``: option parsing and printing over
:mod:`edge.store.samples` and :mod:`edge.store.samplemeta`."""

from __future__ import annotations

import json
import shutil
from typing import Optional

import click

from edge.cli.common import Failure, load_cfg, started
from edge.daemon import startup
from edge.vocabulary import SAMPLE_STATUSES


def _store(config: Optional[str], create: bool = False):
    """The configured store; its samples are ``store.samples``."""
    cfg = load_cfg(config)
    return started(startup.store, cfg, create=create)


def _meta_notes(metas) -> dict:
    """Per (device, sample): the laboratory's patient/specimen ids and a bad sample.json's reason."""
    out = {}
    for key, m in metas.items():
        ids = [f"{k} {v}" for k, v in (("patient", m.patient_id), ("specimen", m.specimen_id)) if v]
        out[key] = "; ".join(x for x in (", ".join(ids), m.error) if x)
    return out


@click.command("samples")
@click.option("--status", type=click.Choice(SAMPLE_STATUSES), help="only samples in this state")
@click.option("--format", "fmt", type=click.Choice(("table", "json")), default="table", show_default=True)
@click.option("--config", type=click.Path(dir_okay=False), help="config file (default: $EDGE_SCREEN_CONFIG)")
def samples(status: Optional[str], fmt: str, config: Optional[str]) -> None:
    """Patient samples (one inbox subfolder each): fields, readable fields, status, verdict, score."""
    from edge.store.samplemeta import meta_for

    store = _store(config)
    try:
        items = store.samples.list(status=status)
        metas = meta_for(store, [(s.device_id, s.sample_id) for s in items])
    finally:
        store.close()
    if fmt == "json":
        click.echo(json.dumps([{**s.to_json(), **_meta_json(s, metas)} for s in items], indent=2))
        return
    if not items:
        click.echo("no samples" + (f" with status {status}" if status else ""))
        return
    from edge.report.samples_text import sample_lines

    for line in sample_lines(items, min(shutil.get_terminal_size((80, 24)).columns, 120), _meta_notes(metas)):
        click.echo(line)


def _meta_json(s, metas) -> dict:
    from edge.store.samplemeta import SampleMeta

    return metas.get((s.device_id, s.sample_id), SampleMeta(s.sample_id, s.device_id)).to_json()


@click.group("sample")
def sample_group() -> None:
    """Act on one patient sample."""


@sample_group.command("close")
@click.argument("sample_id")
@click.option("--config", type=click.Path(dir_okay=False), help="config file (default: $EDGE_SCREEN_CONFIG)")
def sample_close(sample_id: str, config: Optional[str]) -> None:
    """Mark SAMPLE_ID ready for review now: no more fields are coming."""
    from edge.store.samples import SampleError

    store = _store(config)
    try:
        s = store.samples.close(sample_id)
    except SampleError as e:
        raise Failure(str(e)) from None
    finally:
        store.close()
    click.echo(
        f"sample {s.sample_id}: {s.status} ({s.readable} readable of {s.fields} fields, verdict "
        f"{s.verdict or '-'}{', needs review' if s.needs_review else ''})"
    )


@sample_group.command("meta")
@click.argument("sample_id")
@click.option("--patient", metavar="ID", help="the laboratory's patient id (MRN); '' removes it")
@click.option("--specimen", metavar="ID", help="the laboratory's specimen (accession) id; '' removes it")
@click.option("--config", type=click.Path(dir_okay=False), help="config file (default: $EDGE_SCREEN_CONFIG)")
def sample_meta(sample_id: str, patient: Optional[str], specimen: Optional[str], config: Optional[str]) -> None:
    """Show or set SAMPLE_ID's patient and specimen ids (FHIR subject and specimen).

    Ids are 1-64 of A-Z a-z 0-9 . _ - : / starting with a letter or digit. A signed sample's ids cannot
    change. The same can come from a sample.json in the sample's inbox folder:
    {"patient": "MRN-004711", "specimen": "ACC-2026-000123"}.
    """
    from edge.store.samplemeta import SOURCE_CLI, MetaConflict, MetaError, get_meta, set_meta, validate_identifier
    from edge.store.samples import SampleError

    changes = {}
    try:
        for key, value in (("patient", patient), ("specimen", specimen)):
            if value is not None:
                changes[f"{key}_id"] = validate_identifier(key, value) if value else None
    except MetaError as e:
        raise Failure(f"--{e}", startup.EXIT_CONFIG) from None
    store = _store(config)
    try:
        if changes:
            meta, changed = set_meta(store, sample_id, changes, SOURCE_CLI)
        else:
            found = get_meta(store, sample_id)
            if found is None:
                raise SampleError(f"no sample {sample_id!r} on device {store.device()}")
            meta, changed = found, False
    except MetaConflict as e:
        raise Failure(str(e)) from None
    except SampleError as e:  # an unknown or invalid sample id: exit 1, as `sample close`
        raise Failure(str(e)) from None
    finally:
        store.close()
    click.echo(
        f"sample {meta.sample_id}: {meta.describe()}"
        + ("" if changed or not changes else " (unchanged)")
        + (f"; {meta.error}" if meta.error else "")
    )


COMMANDS = [samples, sample_group]

"""``edge-screen model install FILE | rollback | list``: option parsing and printing over
:mod:`edge.inference.modelstore`."""

from __future__ import annotations

import json
from typing import Optional

import click

from edge.cli.common import Failure, load_cfg
from edge.daemon.startup import EXIT_MODEL


def _store(config: Optional[str]):
    from edge.inference.modelstore import ModelStore

    cfg = load_cfg(config)
    return cfg, ModelStore(cfg.model.install_dir)


def _pinned_note(cfg) -> str:
    # model.path wins over the installed current model; say so rather than let an install look ignored.
    return (
        f"\nnote: model.path is set ({cfg.model.path}) and wins over the installed model; unset it to use "
        "the installed one"
        if cfg.model.path is not None
        else ""
    )


@click.group("model")
def model_group() -> None:
    """Install a checked model, roll back to the previous one, list the installed ones."""


@model_group.command("install")
@click.argument("file", type=click.Path(dir_okay=False))
@click.option("--config", "config", type=click.Path(dir_okay=False), help="Config file (as edge-screen --config).")
def install(file: str, config: Optional[str]) -> None:
    """Check FILE (its card, sha256, labels, input shape, one inference) and make it the current model."""
    from edge.inference.classifier import ModelLoadError
    from edge.inference.modelstore import RELOAD_HINT

    cfg, store = _store(config)
    try:
        m = store.install(file, backend=cfg.model.backend)
    except ModelLoadError as e:
        raise Failure(f"model error: {e}", EXIT_MODEL) from None
    click.echo(
        f"installed {m.name} {m.version} (sha256 {m.sha256[:12]}…) as current: {m.path}\n"
        f"{RELOAD_HINT}{_pinned_note(cfg)}"
    )


@model_group.command("rollback")
@click.option("--config", "config", type=click.Path(dir_okay=False), help="Config file (as edge-screen --config).")
def rollback(config: Optional[str]) -> None:
    """Make the previous installed model current again."""
    from edge.inference.classifier import ModelLoadError
    from edge.inference.modelstore import RELOAD_HINT

    cfg, store = _store(config)
    try:
        m = store.rollback(backend=cfg.model.backend)
    except ModelLoadError as e:
        raise Failure(f"model error: {e}", EXIT_MODEL) from None
    what = "the bundled model " if m.bundled else ""
    click.echo(
        f"rolled back to {what}{m.name} {m.version} (sha256 {m.sha256[:12]}…): {m.path}\n"
        f"{RELOAD_HINT}{_pinned_note(cfg)}"
    )


@model_group.command("list")
@click.option("--format", "fmt", type=click.Choice(("table", "json")), default="table", show_default=True)
@click.option("--config", "config", type=click.Path(dir_okay=False), help="Config file (as edge-screen --config).")
def list_models(fmt: str, config: Optional[str]) -> None:
    """Installed models and the bundled one, with version, sha256 and lineage; * marks the current one, - the
    previous one (what `model rollback` goes back to)."""
    from edge.inference.classifier import ModelLoadError
    from edge.inference.modelstore import model_in_use

    cfg, store = _store(config)
    try:
        models = store.list(bundled=True)
    except ModelLoadError as e:
        raise Failure(f"model error: {e}", EXIT_MODEL) from None
    in_use = model_in_use(cfg.model)
    if fmt == "json":
        click.echo(
            json.dumps(
                {
                    "install_dir": str(store.root),
                    "in_use": str(in_use),
                    "models": [m.to_json() for m in models],
                },
                indent=2,
            )
        )
        return
    for m in models:
        mark = "*" if m.current else "-" if m.previous else " "
        click.echo(f"{mark} {m.name} {m.version}{' (bundled)' if m.bundled else ''}  sha256 {m.sha256[:16]}")
        click.echo(f"    {m.path}")
        if m.describe_lineage():
            click.echo(f"    {m.describe_lineage()}")
    if len(models) == 1:
        click.echo(f"no models installed in {store.root}")
    click.echo(f"in use: {in_use}")


COMMANDS = [model_group]

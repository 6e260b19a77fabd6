"""``edge-screen``: the command line. Click only parses and prints; the work is in the library modules."""

from __future__ import annotations

import importlib
import json
import sys
from pathlib import Path
from typing import List, Optional

import click

from edge.cli.common import long_lived, started
from edge.config import Config
from edge.daemon import startup


def _cfg(ctx: click.Context) -> Config:
    return started(startup.config, ctx.find_root().obj.get("config"))


def _classifier(cfg: Config):
    return started(startup.classifier, cfg)


def _store(cfg: Config, create: bool = True, sample_rule=None):
    return started(startup.store, cfg, create=create, sample_rule=sample_rule)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--config",
    "-c",
    "config",
    type=click.Path(dir_okay=False),
    envvar="EDGE_SCREEN_CONFIG",
    help="TOML config file (default: $EDGE_SCREEN_CONFIG, else built-in defaults).",
)
@click.pass_context
def main(ctx: click.Context, config: Optional[str]) -> None:
    """edge-screen: blood-smear screening on an edge device (quality gate, int8 TFLite, SQLite)."""
    ctx.ensure_object(dict)
    ctx.obj["config"] = config


@main.command()
@click.pass_context
def run(ctx: click.Context) -> None:
    """Run the daemon: watch the inbox and classify every new image (logs to stderr)."""
    from edge.daemon.service import main as daemon_main

    sys.exit(daemon_main(ctx.obj.get("config")))


@main.command()
# exists=True: a mistyped name is a usage error (exit 2, one line), never a permanent "rejected" row.
@click.argument("paths", nargs=-1, required=True, type=click.Path(exists=True, path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="One JSON object per image on stdout.")
@click.option("--no-db", is_flag=True, help="Do not record the results in the database.")
@click.pass_context
def classify(ctx: click.Context, paths: List[Path], as_json: bool, no_db: bool) -> None:
    """Classify image files or folders now, through the daemon's pipeline."""
    with long_lived():
        from edge.pipeline.classify import classify_paths, expand_paths

        cfg = _cfg(ctx)
        clf = _classifier(cfg)
    if no_db:
        store = None
    else:
        store = _store(cfg, sample_rule=clf.card.sample_rule)
    files = expand_paths(paths)
    try:
        if len(files) > 3:
            # rich only where it shows something: a progress bar here, the table below (its import is a
            # sixth of a one-image `classify --json`).
            from rich.console import Console
            from rich.progress import Progress

            with Progress(console=Console(stderr=True), transient=True) as prog:
                task = prog.add_task("classifying", total=len(files))
                results = classify_paths(files, cfg, clf, store, progress=lambda r: prog.advance(task))
        else:
            results = classify_paths(files, cfg, clf, store)
    finally:
        if store is not None:
            store.close()
    if as_json:
        for r in results:
            click.echo(json.dumps(_json(r), sort_keys=True))
        return
    from rich.console import Console

    out = Console()
    out.print(_results_table(results, out.width))


def _results_table(results, width: int):
    """One row per image. Below 100 columns (a Pi console is 80) the answer is one folded column, so no
    file name is cut to 'WBC-Beni…'."""
    from rich.table import Table

    if width >= 100:
        t = Table("file", "status", "label", "score", "verdict", "review", "ms", "reason")
        for r in results:
            t.add_row(
                Path(r.path).name,
                r.status,
                r.label or "",
                f"{r.malignant_score:.3f}" if r.malignant_score is not None else "",
                r.verdict or "",
                "yes" if r.needs_review else "",
                f"{r.timings.total or 0:.1f}",
                r.reason or r.domain or "",  # why a person must look: outside what the model was validated on
            )
        return t
    t = Table(box=None, pad_edge=False)
    t.add_column("file", overflow="fold", ratio=2)
    t.add_column("result", overflow="fold", ratio=3)
    for r in results:
        if r.label and r.malignant_score is not None:
            answer = f"{r.label}, score {r.malignant_score:.3f}, {r.verdict}" + (", REVIEW" if r.needs_review else "")
            answer += f" ({r.domain})" if r.domain else ""
        else:
            answer = f"{r.status}: {r.reason}"
        t.add_row(Path(r.path).name, answer)
    return t


def _json(r) -> dict:
    return {
        "path": r.path,
        "status": r.status,
        "reason": r.reason,
        "label": r.label,
        "probabilities": r.probabilities,
        "score": r.malignant_score,
        "verdict": r.verdict,
        "needs_review": r.needs_review,
        "domain": r.domain,  # the plain reasons the field lies outside the validated range, or null
        "sha256": r.sha256,
        "timings": r.timings.to_dict(),
        "recorded": r.recorded or r.already_recorded,
        "duplicate_of": r.duplicate_of,
    }


@main.command()
@click.option("--last", "last_n", default=100, show_default=True, help="Timing statistics over the last N images.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.pass_context
def status(ctx: click.Context, last_n: int, as_json: bool) -> None:
    """Model in use, today's images by status and verdict, backlog, last error, stage timings."""
    import shutil

    from edge.daemon.status import collect

    cfg = _cfg(ctx)
    store = _store(cfg, create=False)
    try:
        st = collect(cfg, store, last_n)
    finally:
        store.close()
    if as_json:
        click.echo(json.dumps(st.to_json(), indent=2))
        return
    for line in st.lines(width=min(shutil.get_terminal_size((80, 24)).columns, 100)):
        click.echo(line)


@main.command()
@click.argument("paths", nargs=-1, type=click.Path(exists=True, path_type=Path))
@click.option("-n", "--images", "n", default=200, show_default=True, help="Images to time (cycled).")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.pass_context
def bench(ctx: click.Context, paths: List[Path], n: int, as_json: bool) -> None:
    """Bare interpreter invoke vs the full per-image pipeline, per stage (synthetic images if no PATH)."""
    from rich.console import Console
    from rich.progress import Progress

    from edge.pipeline.bench import format_report, run_bench

    cfg = _cfg(ctx)
    clf = _classifier(cfg)
    with Progress(console=Console(stderr=True), transient=True) as prog:
        tasks = {}

        def progress(stage: str, i: int, total: int) -> None:
            if stage not in tasks:
                tasks[stage] = prog.add_task(stage, total=total)
            prog.update(tasks[stage], completed=i)

        report = run_bench(cfg, clf, list(paths), n, progress=progress)
    click.echo(json.dumps(report, indent=2) if as_json else format_report(report))


@main.group("config")
def config_group() -> None:
    """Show or check the effective configuration."""


@config_group.command("show")
@click.pass_context
def config_show(ctx: click.Context) -> None:
    """Print the effective configuration as TOML (defaults filled in, paths absolute)."""
    cfg = _cfg(ctx)
    click.echo(f"# effective config from {cfg.source or 'built-in defaults'}")
    click.echo(cfg.to_toml())


@config_group.command("check")
@click.pass_context
def config_check(ctx: click.Context) -> None:
    """Run the daemon's start-up checks without starting it: config (exit 2), model and card (exit 3),
    database and inbox (exit 4, creating them as `run` would)."""
    from edge.config import redact_url
    from edge.daemon.startup import StartupError, load, open_store

    try:
        loaded = load(ctx.find_root().obj.get("config"))
        open_store(loaded.cfg).close()
    except StartupError as e:
        click.echo(str(e), err=True)
        sys.exit(e.code)
    cfg, clf = loaded.cfg, loaded.classifier
    click.echo(
        f"config OK ({cfg.source or 'built-in defaults'}); model {clf.name} on {clf.backend}; "
        f"inbox {cfg.daemon.inbox}; database {redact_url(cfg.database.url)}"
    )
    from edge.web.bind import warnings

    for warning in warnings(cfg.web):
        click.echo(f"warning: {warning}", err=True)


@main.command()
@click.option("--count", "-n", type=int, default=1, show_default=True, help="Stills to take (0 = until stopped).")
@click.option("--interval", type=float, default=None, help="Seconds between stills (default: camera.interval_s).")
# exists=True: a mistyped folder is a usage error (exit 2, one line), not a traceback.
@click.option(
    "--fake",
    "fake",
    type=click.Path(file_okay=False, exists=True, path_type=Path),
    default=None,
    help="Use the fake camera cycling through this folder's JPEGs (for tests/demos).",
)
@click.option("--synthetic", is_flag=True, help="Use the fake camera with synthetic smears.")
@click.option(
    "--sample",
    "sample_id",
    default=None,
    help="Patient sample id: the stills go to inbox/SAMPLE/ (default: the inbox root, one sample a day).",
)
@click.pass_context
def capture(
    ctx: click.Context,
    count: int,
    interval: Optional[float],
    fake: Optional[Path],
    synthetic: bool,
    sample_id: Optional[str],
) -> None:
    """Take camera stills into the inbox atomically (picamera2 on a Raspberry Pi)."""
    import signal

    from edge.daemon.camera import CameraUnavailable, FakeSource, PiCamera2Source, capture_loop
    from edge.store.samples import SampleError, validate_sample_id

    cfg = _cfg(ctx)
    target = cfg.daemon.inbox
    if sample_id is not None:
        try:
            target = target / validate_sample_id(sample_id)
        except SampleError as e:
            raise click.BadParameter(str(e), param_hint="--sample") from None
        # Made before the first still, so the daemon's recursive watch is on it by the time stills land.
        target.mkdir(parents=True, exist_ok=True)
    try:
        src = FakeSource(fake) if (fake or synthetic) else PiCamera2Source(cfg.camera.resolution)
    except CameraUnavailable as e:
        click.echo(f"error: {e}", err=True)
        sys.exit(1)
    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
    with src:
        files = capture_loop(
            src,
            target,
            cfg.camera.interval_s if interval is None else interval,
            None if count == 0 else count,
            should_stop=lambda: bool(stop),
        )
    for f in files:
        click.echo(str(f))


def _register_plugins() -> None:
    for mod_name in ("edge.cli.export", "edge.cli.report", "edge.cli.samples", "edge.cli.web", "edge.cli.model"):
        try:
            mod = importlib.import_module(mod_name)
        except ImportError as e:
            if getattr(e, "name", None) == mod_name:  # only the module itself being absent is skipped
                continue
            raise
        for cmd in getattr(mod, "COMMANDS", ()):
            main.add_command(cmd)


def _set_config(ctx: click.Context, _param, value: Optional[str]) -> None:
    if value:
        ctx.find_root().ensure_object(dict)["config"] = value


def _accept_config_everywhere(group: click.Group) -> None:
    """`edge-screen config check --config FILE` works like `edge-screen --config FILE config check`: every
    command takes --config after its name too (the default config's header shows it that way)."""
    for cmd in group.commands.values():
        if isinstance(cmd, click.Group):
            _accept_config_everywhere(cmd)
        elif not any("--config" in getattr(p, "opts", ()) for p in cmd.params):
            cmd.params.append(
                click.Option(
                    ["--config", "-c"],
                    type=click.Path(dir_okay=False),
                    expose_value=False,
                    is_eager=True,
                    callback=_set_config,
                    help="TOML config file (as before the command name).",
                )
            )


_register_plugins()
_accept_config_everywhere(main)

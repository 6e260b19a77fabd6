"""``edge-screen report`` and ``edge-screen explain``: option parsing only; the work is in
:mod:`edge.report.window`, :mod:`edge.report.query`, :mod:`edge.report.formats`, :mod:`edge.report.html`
and :mod:`edge.inference.explain`."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn, Optional, Tuple

import click

from edge.cli.common import Failure, load_cfg, started
from edge.config import ConfigError
from edge.daemon.startup import EXIT_CONFIG, EXIT_FAILURE, EXIT_MODEL
from edge.vocabulary import LABELS, STATUSES, VERDICTS

if TYPE_CHECKING:  # the model pulls in numpy and OpenCV: only the commands that need it import it
    from edge.inference.classifier import Classifier


def _fail(msg: str, code: int = EXIT_CONFIG) -> NoReturn:
    """One line and the README's exit code: 2 (the default) for a bad option or combination of options."""
    raise Failure(msg, code)


def _classifier(config: Optional[str], model: Optional[str]) -> Classifier:
    from edge.daemon import startup

    return started(startup.classifier, load_cfg(config), model)


def _labels(given: Tuple[str, ...]) -> Tuple[str, ...]:
    """Labels as the model card spells them; anything else is refused with the list (never an empty report)."""
    known = {lab.lower(): lab for lab in LABELS}
    bad = [g for g in given if g.lower() not in known]
    if bad:
        raise click.BadParameter(f"{', '.join(map(repr, bad))} is not a label; the labels are {', '.join(LABELS)}")
    return tuple(known[g.lower()] for g in given)


@click.command("report")
@click.option("--since", help="start: 2024-05-01, 2024-05-01T08:00 (local time), or relative: 30m, 8h, 7d, 2w")
@click.option("--until", help="end (exclusive); a bare date includes that whole day")
@click.option("--today", "today", is_flag=True, help="since local midnight (the default without --since/--until)")
@click.option("--all", "all_time", is_flag=True, help="no time window")
@click.option("--verdict", type=click.Choice(VERDICTS), help="only this verdict")
@click.option(
    "--label",
    "labels",
    multiple=True,
    callback=lambda ctx, param, v: _labels(v),
    help=f"only this label (repeatable): {', '.join(LABELS)}",
)
@click.option("--needs-review", "needs_review", is_flag=True, help="only images that need review")
@click.option("--status", "statuses", multiple=True, type=click.Choice(STATUSES), help="only this status (repeatable)")
@click.option("--device", "devices", multiple=True, help="only this device id (repeatable)")
@click.option(
    "--format", "fmt", type=click.Choice(["table", "csv", "json", "html"]), default="table", show_default=True
)
@click.option("--out", "out", type=click.Path(dir_okay=False, path_type=Path), help="write here instead of stdout")
@click.option(
    "--maps/--no-maps",
    default=False,
    show_default=True,
    help="HTML: an occlusion explanation map per flagged image (about 50 model runs each)",
)
@click.option(
    "--gallery-limit",
    default=200,
    show_default=True,
    type=click.IntRange(0),
    help="HTML: at most this many flagged images get a thumbnail",
)
@click.option("--db", help="database URL or SQLite file (default: database.url of the config)")
@click.option("--model", type=click.Path(dir_okay=False), help="model for --maps (default: the configured one)")
@click.option("--config", type=click.Path(dir_okay=False), help="config file (default: $EDGE_SCREEN_CONFIG)")
def report(
    since,
    until,
    today,
    all_time,
    verdict,
    labels: Tuple[str, ...],
    needs_review,
    statuses,
    devices,
    fmt,
    out: Optional[Path],
    maps,
    gallery_limit,
    db,
    model,
    config,
) -> None:
    """What was screened in a window, and which images need a human."""
    from edge.report.formats import dumps_csv, dumps_json, render_table
    from edge.report.query import build_report
    from edge.report.window import Filters, ReportError, make_window

    try:
        if today and (since or until or all_time):
            _fail("--today cannot be combined with --since/--until/--all")
        if maps and fmt != "html":
            _fail("--maps applies to --format html only")
        if fmt == "html" and out is None:
            _fail("--format html needs --out FILE")
        cfg = load_cfg(config)
        window = make_window(since, until, all_time=all_time)
        filters = Filters(
            verdict=verdict,
            labels=labels,
            needs_review=True if needs_review else None,
            statuses=statuses,
            devices=devices,
        )
        data = build_report(db or cfg.database.url, window, filters)
    except ReportError as e:
        _fail(str(e), e.code)
    except ConfigError as e:
        _fail(str(e))
    if fmt == "html":
        from edge.report.html import write_html

        assert out is not None  # refused above with exit 2

        def factory() -> Classifier:
            from edge.inference.classifier import classifier_from_config

            return classifier_from_config(cfg, model)

        write_html(
            data,
            out,
            maps=maps,
            classifier_factory=factory,
            gallery_limit=gallery_limit,
            progress=sys.stderr.isatty(),
            roots=(cfg.daemon.inbox, cfg.daemon.done_dir, cfg.daemon.rejected_dir),
        )
        click.echo(f"wrote {out} ({data.total:,} images, {len(data.flagged):,} flagged)", err=True)
        return
    if fmt == "table":
        from rich.console import Console

        if out:
            with out.open("w", encoding="utf-8") as f:
                render_table(data, Console(file=f, width=160, color_system=None))
        else:
            render_table(data, Console())
        return
    text = dumps_csv(data) if fmt == "csv" else dumps_json(data)
    if out:
        out.write_text(text, encoding="utf-8")
    else:
        click.echo(text, nl=False)


def _point(text: str) -> tuple:
    parts = text.split(",")
    if len(parts) != 2 or not all(p.strip().lstrip("-").isdigit() for p in parts):
        raise click.BadParameter(f"{text!r}: expected Y,X (two whole numbers)", param_hint="--cell-at")
    return int(parts[0]), int(parts[1])


@click.command("explain")
@click.argument("image", type=click.Path(dir_okay=False, exists=True, path_type=Path))  # a typo: exit 2, as classify
@click.option("--out", "out", required=True, type=click.Path(dir_okay=False, path_type=Path), help="PNG to write")
@click.option("--grid", default=7, show_default=True, type=click.IntRange(1, 32), help="patches per side")
@click.option(
    "--target",
    type=click.Choice(["predicted", "malignant"]),
    default="predicted",
    show_default=True,
    help="score whose drop is mapped: the predicted label's probability or the malignant score",
)
@click.option(
    "--method",
    type=click.Choice(["auto", "occlude", "keep"]),
    default="auto",
    show_default=True,
    help="occlude: score drop per hidden patch; keep: score with only each region visible; "
    "auto: occlude, or keep when no single patch changes a saturated call",
)
@click.option(
    "--cell-at",
    "cell_at",
    metavar="Y,X",
    help="explain the cell nearest to this point of the working "
    "field (a recorded cell position) instead of the most malignant one",
)
@click.option("--model", type=click.Path(dir_okay=False), help="model file (default: the configured one)")
@click.option("--config", type=click.Path(dir_okay=False), help="config file (default: $EDGE_SCREEN_CONFIG)")
def explain(image: Path, out: Path, grid: int, target: str, method: str, cell_at, model, config) -> None:
    """Occlusion-sensitivity map of IMAGE: which region drove the model's call."""
    from edge.imaging.decode import DecodeError
    from edge.inference.classifier import ModelLoadError
    from edge.inference.explain import explain_image, save_png

    try:
        at = _point(cell_at) if cell_at is not None else None
        clf = _classifier(config, model)
        e = explain_image(image, clf, grid=grid, target=target, method=method, cell_at=at)
    except ConfigError as err:
        _fail(str(err))
    except ModelLoadError as err:
        _fail(f"model error: {err}", EXIT_MODEL)
    except DecodeError as err:
        _fail(f"{image}: {err}", EXIT_FAILURE)
    save_png(e, out)
    p = e.prediction
    click.echo(
        f"{image}: {p.label} (malignant score {p.malignant_score:.3f}, {p.verdict}"
        f"{', needs review' if p.needs_review else ''}) -> {out} ({e.seconds * 1000:.0f} ms)"
    )
    click.echo(f"  {e.describe()}")


COMMANDS = [report, explain]

"""edge-screen-train: build and evaluate models. TensorFlow is imported only by commands that train."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import click

from ..augment import CaptureAugment
from ..data import SHARED_DATASET
from .common import Bars, console, load_blocks, progress_bars, split_table
from .measure import evaluate, sample_rule


@click.group()
@click.option("-v", "--verbose", is_flag=True, help="Debug logging.")
def main(verbose: bool) -> None:
    """Train, convert and evaluate edge-screen models."""
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO, format="%(levelname)s %(message)s")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


@main.command()
@click.argument("data_dir", type=click.Path(exists=True, file_okay=False), default=str(SHARED_DATASET))
@click.option("--block-size", default=25, show_default=True, help="Consecutive file numbers per block.")
def split(data_dir, block_size):
    """Show the train/validation split of DATA_DIR."""
    console.print(split_table(load_blocks(data_dir, block_size, 0)))


@main.command()
@click.argument("data_dir", type=click.Path(exists=True, file_okay=False), default=str(SHARED_DATASET))
@click.option(
    "--out",
    "out_dir",
    type=click.Path(file_okay=False),
    default="runs/latest",
    show_default=True,
    help="Where the .tflite, its card and the report go (edge/models to ship).",
)
@click.option(
    "--modes",
    default="cell",
    show_default=True,
    help="Input modes to train (ablation): cell, segmented, raw, balanced.",
)
@click.option("--ship", default="cell", show_default=True, help="The trained mode to convert and ship.")
@click.option(
    "--augment-copies",
    default=2,
    show_default=True,
    help="Capture-augmented copies of each training field (cell mode).",
)
@click.option("--block-size", default=25, show_default=True)
@click.option(
    "--head-epochs",
    default=150,
    show_default=True,
    help="Max epochs of the head on cached frozen features (early stopping decides).",
)
@click.option("--fine-epochs", default=10, show_default=True, help="Max epochs of fine-tuning the upper blocks.")
@click.option(
    "--fine-tune-from",
    default="block_5_expand",
    show_default=True,
    help="First MobileNetV2 layer that fine-tuning unfreezes.",
)
@click.option("--lr-fine", default=5e-5, show_default=True, help="Peak fine-tuning rate (cosine decay).")
@click.option(
    "--color-jitter",
    default=2.0,
    show_default=True,
    help="Stain/colour augmentation strength (1.0: gain/contrast 0.85-1.15, hue 0.04, saturation 0.8-1.2).",
)
@click.option("--batch-size", default=32, show_default=True)
@click.option(
    "--weights",
    type=click.Choice(["shared", "imagenet", "none"]),
    default="shared",
    show_default=True,
    help="shared: ../shared ImageNet int8 checkpoint; imagenet: Keras download (needs internet).",
)
@click.option("--limit-per-class", default=0, help="Use only the first N images of each class (smoke runs).")
@click.option("--seed", default=1234, show_default=True)
@click.option(
    "--version",
    "model_version",
    default=None,
    help="The card's version [default: 2.0.0; with --corrections the bundled model's version plus "
    "+corrections.N.HASH, so a retrained model never passes for the bundled one].",
)
@click.option(
    "--corrections",
    "corrections_dbs",
    multiple=True,
    type=click.Path(exists=True, dir_okay=False),
    help="A device's SQLite database (repeatable): its reviewers' field corrections join the training side.",
)
@click.option(
    "--sources",
    default="pbc,bccd",
    show_default=True,
    help="Other laboratories' labelled sets from ../shared to add (pbc, bccd; empty for none): "
    "their training part joins training, their held-out part is scored per source.",
)
@click.option(
    "--optics/--fixed-scale",
    default=True,
    show_default=True,
    help="Preprocessing v3: fields brought to the training scale and glass by their red cells "
    "(--fixed-scale: v2's centre square at 224 px).",
)
@click.option("--other-copies", default=1, show_default=True, help="Augmented copies of each other-laboratory image.")
@click.option(
    "--untrained-types",
    default="",
    help="Cell-type folders of the other sources kept out of training (comma-separated, e.g. ig); their "
    "held-out images are still scored.",
)
@click.option(
    "--stain-amount",
    default=0.0,
    show_default=True,
    help="Share of augmented copies whose stain is made heavier or lighter (every optical density x0.65-1.6); "
    "tried for 3.6.0 and not shipped (README).",
)
@click.option(
    "--stain-fit",
    type=click.Choice(["cells-chroma", "cells", "background"]),
    default="cells-chroma",
    show_default=True,
    help="v3 stain normalisation: on the stained cells' colour only, on their colour "
    "and lightness, or (v2) on the background.",
)
@click.option(
    "--source-balance",
    type=click.Choice(["pooled", "per-source"]),
    default="pooled",
    show_default=True,
    help="How the other laboratories share their half of the benign weight: by image count (pooled) or "
    "the same share for each laboratory (per-source).",
)
@click.option(
    "--exposure-max",
    default=CaptureAugment.exposure[1],
    show_default=True,
    help=f"Brightest exposure gain of the capture augmentation (darkest {CaptureAugment.exposure[0]}): a lamp "
    "turned up until the glass clips; 1.6 was tried with --source-balance per-source and not shipped (README).",
)
@click.option(
    "--colour-targets",
    type=click.Choice(["fields", "per-source"]),
    default="fields",
    show_default=True,
    help="Whose colours a recoloured training copy takes: any field's (by each laboratory's image count) or "
    "each laboratory's as often (per-source), so no laboratory's colours belong to one class; tried with "
    "--source-balance per-source and not shipped (README).",
)
@click.option(
    "--slide-targets",
    type=click.Choice(["fields", "per-source"]),
    default="fields",
    show_default=True,
    help="Whose slide a training copy's white cells are moved onto: another field of the same size (in "
    "practice a Taleqani one) or each laboratory's as often (per-source), so no laboratory's slide belongs to "
    "one class.",
)
@click.option(
    "--skip-tests",
    is_flag=True,
    help="Experiments only (leave-one-source-out): no cell tests, quality gate or validated range.",
)
def train(
    data_dir,
    out_dir,
    modes,
    ship,
    augment_copies,
    block_size,
    head_epochs,
    fine_epochs,
    fine_tune_from,
    lr_fine,
    color_jitter,
    batch_size,
    weights,
    limit_per_class,
    seed,
    model_version,
    corrections_dbs,
    sources,
    optics,
    other_copies,
    stain_amount,
    source_balance,
    exposure_max,
    colour_targets,
    slide_targets,
    skip_tests,
    stain_fit,
    untrained_types,
):
    """Train on DATA_DIR, convert to int8 TFLite and write the model card and report."""
    from ..build import build
    from ..report import write_report
    from ..train import TrainConfig

    sp = load_blocks(data_dir, block_size, limit_per_class)
    corrections = None
    if corrections_dbs:
        from ..corrections import load_corrections

        sp, corrections = load_corrections(sp, corrections_dbs)
        console.print(
            f"corrections: {corrections['used']} used of {corrections['images_reviewed']} reviewed "
            f"images; dropped {corrections['dropped']}"
        )
    model_version, base_card = _version(model_version, corrections)
    names = [n.strip() for n in sources.split(",") if n.strip()]
    if names:
        from ..sources import add_sources, missing_sources

        for name, where in missing_sources(names).items():
            console.print(f"[yellow]source {name} not found at {where}: training without it[/]")
            names.remove(name)
        sp = add_sources(sp, names, [t.strip().lower() for t in untrained_types.split(",") if t.strip()])
    console.print(split_table(sp))
    cfg = TrainConfig(
        head_epochs=head_epochs,
        fine_epochs=fine_epochs,
        fine_tune_from=fine_tune_from,
        lr_fine=lr_fine,
        color_jitter=color_jitter,
        batch_size=batch_size,
        weights=weights,
        seed=seed,
        augment_copies=augment_copies,
        other_copies=other_copies,
        stain_amount=stain_amount,
        source_balance=source_balance,
        exposure_max=exposure_max,
        colour_targets=colour_targets,
        slide_targets=slide_targets,
    )
    from edge.imaging.preprocess import PreprocessParams

    base = (
        # local_colour_test from the start (3.9.0 set it after training): red cells touching a white cell
        # in PBC's and BCCD's fields are not learnt as benign white cells.
        PreprocessParams(field_scale="optical", crop="none", stain_fit=stain_fit, local_colour_test=True)
        if optics
        else PreprocessParams(version="lab-kmeans-2")
    )
    with progress_bars() as prog:
        res = build(
            sp,
            out_dir,
            modes=[m.strip() for m in modes.split(",") if m.strip()],
            ship=ship,
            cfg=cfg,
            base_params=base,
            version=model_version,
            progress=Bars(prog),
            tests=not skip_tests,
        )
    if corrections is not None:
        from edge.inference.classifier import card_path_for, load_card

        from ..corrections import lineage

        card = load_card(card_path_for(res.tflite))
        card.extra["training"]["corrections"] = corrections
        card.extra["lineage"] = lineage(corrections, base_card)
        card.save(card_path_for(res.tflite))
        res.card = card
    report = write_report(res.tflite, Path(out_dir) / "work")
    v = res.card.extra["validation"]["metrics"]
    console.print(
        f"[bold]{res.tflite}[/] ({res.tflite.stat().st_size / 1e6:.2f} MB), mode {res.chosen_mode}, "
        f"val accuracy {v['accuracy']:.4f}, threshold {res.card.threshold}, "
        f"{res.seconds / 60:.1f} min; report {report}"
    )


def _version(given, corrections):
    """(version, the bundled model's card as a dict or None): see trainer.corrections.corrected_version."""
    if corrections is None:
        return given or "2.0.0", None
    from edge.inference.classifier import DEFAULT_MODEL, ModelLoadError, card_path_for, load_card

    from ..corrections import corrected_version

    try:
        base = load_card(card_path_for(DEFAULT_MODEL)).to_dict()
    except ModelLoadError:
        base = None
    version = corrected_version(given or (base or {}).get("version") or "2.0.0", corrections)
    console.print(f"version {version} (retrained with corrections)")
    return version, base


@main.command()
@click.argument("model", type=click.Path(exists=True, dir_okay=False))
@click.argument("data_dir", type=click.Path(exists=True, file_okay=False), default=str(SHARED_DATASET))
@click.option("--block-size", default=25, show_default=True)
@click.option(
    "--sources",
    default="",
    help="The other laboratories' sets the model was trained with "
    "[default: the card's]: their held-out parts get per-source figures.",
)
def finalize(model, data_dir, block_size, sources):
    """Re-measure MODEL's card on DATA_DIR's validation blocks (no TensorFlow): OOD reference, threshold,
    review band, the cell tests and the quality gate from their failure curves, the domain monitor's
    validated range and per-source figures, then the report."""
    from edge.inference.classifier import card_path_for, load_card

    from ..finalize import finalize as run_finalize
    from ..report import write_report
    from ..sources import add_sources, trained_sources, untrained_types

    sp = load_blocks(data_dir, block_size, 0)
    trained_with = trained_sources(load_card(card_path_for(model)))
    names = [n.strip() for n in sources.split(",") if n.strip()] or sorted(k for k in trained_with if k != "taleqani")
    if names:
        sp = add_sources(sp, names, untrained_types(trained_with))
    work = Path(model).parent / "work"
    with progress_bars() as prog:
        run_finalize(Path(model), sp, work, progress=Bars(prog))
    console.print(f"card and report updated: {write_report(Path(model), work)}")


main.add_command(evaluate)
main.add_command(sample_rule)

"""edge-screen-train: build and evaluate models. TensorFlow is imported only by commands that train."""

from __future__ import annotations

import json
import logging
import os
import sys
from pathlib import Path

import click
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from .data import SHARED_DATASET, block_split, discover

console = Console(stderr=True)


def _progress() -> Progress:
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=console,
        transient=False,
    )


class _Bars:
    """Adapts ``progress(stage, i, n)`` callbacks to one rich bar per stage."""

    def __init__(self, prog: Progress):
        self.prog, self.tasks = prog, {}

    def __call__(self, stage: str, i: int, n: int) -> None:
        if stage not in self.tasks:
            self.tasks[stage] = self.prog.add_task(stage, total=n)
        self.prog.update(self.tasks[stage], completed=i)


def _split_table(split) -> Table:
    d = split.describe()
    t = Table(title=f"split: {d['method']}")
    t.add_column("class")
    t.add_column("train", justify="right")
    t.add_column("validation", justify="right")
    t.add_column("validation blocks")
    for lab in sorted(set(d["train"]) | set(d["validation"])):
        t.add_row(
            lab,
            str(d["train"].get(lab, 0)),
            str(d["validation"].get(lab, 0)),
            ", ".join(map(str, d["validation_blocks"].get(lab, []))),
        )
    return t


@click.group()
@click.option("-v", "--verbose", is_flag=True, help="Debug logging.")
def main(verbose: bool) -> None:
    """Train, convert and evaluate edge-screen models."""
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO, format="%(levelname)s %(message)s")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def _load(data_dir, block_size, limit):
    samples, dropped = discover(data_dir)
    if limit:
        by = {}
        for s in samples:
            by.setdefault(s.label, []).append(s)
        samples = [s for group in by.values() for s in group[:limit]]
    return block_split(samples, block_size, 0.2, dropped)


@main.command()
@click.argument("data_dir", type=click.Path(exists=True, file_okay=False), default=str(SHARED_DATASET))
@click.option("--block-size", default=25, show_default=True, help="Consecutive file numbers per block.")
def split(data_dir, block_size):
    """Show the train/validation split of DATA_DIR."""
    console.print(_split_table(_load(data_dir, block_size, 0)))


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
    "--stain-fit",
    type=click.Choice(["cells-chroma", "cells", "background"]),
    default="cells-chroma",
    show_default=True,
    help="v3 stain normalisation: on the stained cells' colour only, on their colour "
    "and lightness, or (v2) on the background.",
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
    skip_tests,
    stain_fit,
):
    """Train on DATA_DIR, convert to int8 TFLite and write the model card and report."""
    from .build import build
    from .report import write_report
    from .train import TrainConfig

    sp = _load(data_dir, block_size, limit_per_class)
    corrections = None
    if corrections_dbs:
        from .corrections import load_corrections

        sp, corrections = load_corrections(sp, corrections_dbs)
        console.print(
            f"corrections: {corrections['used']} used of {corrections['images_reviewed']} reviewed "
            f"images; dropped {corrections['dropped']}"
        )
    model_version, base_card = _version(model_version, corrections)
    names = [n.strip() for n in sources.split(",") if n.strip()]
    if names:
        from .sources import add_sources, missing_sources

        for name, where in missing_sources(names).items():
            console.print(f"[yellow]source {name} not found at {where}: training without it[/]")
            names.remove(name)
        sp = add_sources(sp, names)
    console.print(_split_table(sp))
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
    )
    from edge.imaging.preprocess import PreprocessParams

    base = (
        PreprocessParams(field_scale="optical", crop="none", stain_fit=stain_fit)
        if optics
        else PreprocessParams(version="lab-kmeans-2")
    )
    with _progress() as prog:
        res = build(
            sp,
            out_dir,
            modes=[m.strip() for m in modes.split(",") if m.strip()],
            ship=ship,
            cfg=cfg,
            base_params=base,
            version=model_version,
            progress=_Bars(prog),
            tests=not skip_tests,
        )
    if corrections is not None:
        from edge.inference.classifier import card_path_for, load_card

        from .corrections import lineage

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

    from .corrections import corrected_version

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

    from .finalize import finalize as run_finalize
    from .report import write_report
    from .sources import add_sources

    sp = _load(data_dir, block_size, 0)
    names = [n.strip() for n in sources.split(",") if n.strip()] or sorted(
        k for k in load_card(card_path_for(model)).extra.get("split", {}).get("sources", {}) if k != "taleqani"
    )
    if names:
        sp = add_sources(sp, names)
    work = Path(model).parent / "work"
    with _progress() as prog:
        run_finalize(Path(model), sp, work, progress=_Bars(prog))
    console.print(f"card and report updated: {write_report(Path(model), work)}")


@main.command("sample-rule")
@click.argument("model", type=click.Path(exists=True, dir_okay=False))
@click.argument("data_dir", type=click.Path(exists=True, file_okay=False), default=str(SHARED_DATASET))
@click.option("--block-size", type=int, help="Consecutive file numbers per block [default: the card's split].")
@click.option(
    "--predictions",
    type=click.Path(exists=True, dir_okay=False),
    help="Field scores from `evaluate --subset validation --predictions` instead of evaluating again.",
)
@click.option("--threads", default=2, show_default=True)
def sample_rule(model, data_dir, block_size, predictions, threads):
    """Choose MODEL's sample verdict rule on DATA_DIR's validation blocks (one block = one sample) and write
    it into the model card (.json and .md). The .tflite is not touched."""
    from edge.inference.classifier import Classifier, ModelLoadError

    from .evaluate import evaluate as run_eval
    from .metrics import malignant_scores
    from .samplerule import blocks_for, choose_rule, scores_from_csv, update_card

    try:
        clf = Classifier(model, num_threads=threads)
    except ModelLoadError as e:
        raise click.ClickException(str(e)) from None
    block_size = block_size or int(clf.card.extra.get("split", {}).get("block_size", 25))
    sp = _load(data_dir, block_size, 0)
    if predictions:
        try:
            scores = scores_from_csv(predictions, sp.val)
        except ValueError as e:
            raise click.ClickException(str(e)) from None
    else:
        with _progress() as prog:
            bars = _Bars(prog)
            ev = run_eval(clf, sp.val, ("plain",), progress=lambda i, n: bars("evaluate validation", i, n))
        scores = [
            None if r else round(float(s), 6)
            for s, r in zip(malignant_scores(ev.probs["plain"], clf.labels), ev.refused["plain"])
        ]
    rule, info = choose_rule(blocks_for(sp, scores), clf.card.threshold)
    entry = update_card(Path(model), rule, info)
    t = Table(
        title=f"sample rule: {rule.statistic}{f' q={rule.q}' if rule.statistic == 'quantile' else ''} "
        f">= {rule.threshold}"
    )
    for c in ("block", "files", "fields", "readable", "statistic", "verdict", "right"):
        t.add_column(c)
    for b in info["per_block"]:
        t.add_row(
            b["block"],
            b["files"],
            str(b["fields"]),
            str(b["readable"]),
            f"{b['statistic']:.4f}",
            b["verdict"],
            "yes" if b["right"] else "[red]NO[/]",
        )
    console.print(t)
    click.echo(
        json.dumps(
            {k: v for k, v in entry.items() if k != "validation"}
            | {"validation": {k: info[k] for k in ("sensitivity", "specificity", "margin", "subsamples")}},
            indent=2,
        )
    )


@main.command()
@click.argument("model", type=click.Path(exists=True, dir_okay=False))
@click.argument("data_dir", type=click.Path(exists=True, file_okay=False), required=False)
@click.option(
    "--external",
    "externals",
    multiple=True,
    type=click.Path(exists=True, file_okay=False),
    help="Another laboratory's labelled folder (repeatable): benign/ and blast/ (or subtype) "
    "folders, or the PBC layout (every folder a normal cell type). Screened through the "
    "daemon's pipeline; per-source figures instead of DATA_DIR's evaluation.",
)
@click.option(
    "--sample-size",
    default=10,
    show_default=True,
    help="--external: consecutive fields of one class per simulated sample.",
)
@click.option(
    "--subset",
    type=click.Choice(["all", "validation"]),
    default="all",
    show_default=True,
    help="validation: only the blocks the trainer held out (same --block-size).",
)
@click.option("--block-size", default=25, show_default=True)
@click.option("--predictions", type=click.Path(dir_okay=False), help="Write one CSV row per image here.")
@click.option("--out", "out_dir", type=click.Path(file_okay=False), help="Write evaluation.json and confusion.png.")
@click.option("--variants", default="plain,corner_masked,stain_jitter", show_default=True)
@click.option(
    "--robustness",
    "robust_out",
    type=click.Path(dir_okay=False),
    help="Also run the cell tests (painted out, cell swap, Reinhard, blur/exposure/JPEG curves, "
    "out-of-distribution set) and write them to this JSON file.",
)
@click.option("--backend", default="auto", show_default=True)
@click.option(
    "--kernels",
    type=click.Choice(["xnnpack", "builtin"]),
    default="xnnpack",
    show_default=True,
    help="litert's int8 kernels; builtin gives tflite_runtime's answers exactly.",
)
@click.option("--threads", default=2, show_default=True)
def evaluate(
    model,
    data_dir,
    externals,
    sample_size,
    subset,
    block_size,
    predictions,
    out_dir,
    variants,
    robust_out,
    backend,
    kernels,
    threads,
):
    """Evaluate a .tflite MODEL on labelled class folders in DATA_DIR, or on other laboratories' folders
    (--external) through the daemon's pipeline (no TensorFlow needed)."""
    from edge.inference.classifier import Classifier, ModelLoadError

    from .evaluate import evaluate as run_eval
    from .evaluate import save_evaluation, write_predictions

    try:
        clf = Classifier(model, backend=backend, num_threads=threads, kernels=kernels)
    except ModelLoadError as e:
        raise click.ClickException(str(e)) from None
    if externals:
        return _evaluate_external(clf, externals, sample_size, out_dir)
    if data_dir is None:
        raise click.UsageError("give DATA_DIR or --external FOLDER")
    sp = _load(data_dir, block_size, 0)
    samples = sp.val if subset == "validation" else sp.train + sp.val
    with _progress() as prog:
        bars = _Bars(prog)
        ev = run_eval(
            clf,
            samples,
            [v.strip() for v in variants.split(",") if v.strip()],
            progress=lambda i, n: bars("evaluate", i, n),
        )
        robust = None
        if robust_out:
            from .robustness import run as run_robustness

            robust = run_robustness(clf, samples, progress=bars)
            Path(robust_out).write_text(json.dumps(robust, indent=2) + "\n")
    if predictions:
        write_predictions(ev, clf.labels, clf.card.threshold, predictions)
    if out_dir:
        save_evaluation(ev, clf, out_dir)
    d = ev.to_dict()
    m = d["metrics"]
    t = Table(title=f"{Path(model).name} on {len(samples)} images ({subset})")
    for c in ("class", "precision", "recall", "f1", "support"):
        t.add_column(c, justify="right" if c != "class" else "left")
    for lab, c in m["per_class"].items():
        t.add_row(lab, f"{c['precision']:.4f}", f"{c['recall']:.4f}", f"{c['f1']:.4f}", str(c["support"]))
    console.print(t)
    summary = {k: m[k] for k in ("accuracy", "macro_f1", "malignant_sensitivity", "specificity", "ece", "threshold")}
    summary["robustness"] = d["robustness"]
    summary["refused"] = m.get("refused", 0.0)
    if robust is not None:
        summary["cell_tests"] = robust
    summary["confusion_matrix"] = m["confusion_matrix"]
    click.echo(json.dumps(summary, indent=2))


def _evaluate_external(clf, folders, sample_size: int, out_dir) -> None:
    from .external import per_source, screen
    from .sources import labelled_folder

    samples = []
    for f in folders:
        try:
            samples.extend(labelled_folder(f, Path(f).name))
        except ValueError as e:
            raise click.ClickException(str(e)) from None
    with _progress() as prog:
        bars = _Bars(prog)
        screened = screen(clf, samples, progress=lambda i, n: bars("screen", i, n))
    figs = per_source(screened, clf.card.sample_rule, sample_size)
    t = Table(title=f"{clf.path.name} on {len(samples)} images of {len(folders)} source(s), through the pipeline")
    for c in (
        "source",
        "class",
        "fields",
        "refused",
        "flagged",
        "malignant",
        "conf. malignant",
        "conf. benign",
        "outside range",
    ):
        t.add_column(c, justify="left" if c in ("source", "class") else "right")
    pct = lambda v: "" if v is None else f"{100 * v:.1f} %"
    for src, d in figs.items():
        for cls, x in (d.get("by_class") or {"all": d}).items():
            t.add_row(
                src,
                cls,
                str(x["fields"]),
                pct(x["refused"]),
                pct(x["flagged"]),
                pct(x["malignant"]),
                pct(x["confidently_malignant"]),
                pct(x["confidently_benign"]),
                pct(x["outside_validated_range"]),
            )
    console.print(t)
    if out_dir:
        Path(out_dir).mkdir(parents=True, exist_ok=True)
        (Path(out_dir) / "external.json").write_text(json.dumps(figs, indent=2) + "\n")
    click.echo(json.dumps(figs, indent=2))


if __name__ == "__main__":
    sys.exit(main())

"""edge-screen-train's measuring commands: ``evaluate`` (this lab's folders or another lab's) and ``sample-rule``.
No TensorFlow: they run the shipped .tflite through the device's own code."""

from __future__ import annotations

import json
from pathlib import Path

import click
from rich.table import Table

from ..data import SHARED_DATASET
from .common import Bars, console, load_blocks, progress_bars


@click.command("sample-rule")
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

    from ..evaluate import evaluate as run_eval
    from ..metrics import malignant_scores
    from ..samplerule import blocks_for, choose_rule, scores_from_csv, update_card

    try:
        clf = Classifier(model, num_threads=threads)
    except ModelLoadError as e:
        raise click.ClickException(str(e)) from None
    block_size = block_size or int(clf.card.extra.get("split", {}).get("block_size", 25))
    sp = load_blocks(data_dir, block_size, 0)
    if predictions:
        try:
            scores = scores_from_csv(predictions, sp.val)
        except ValueError as e:
            raise click.ClickException(str(e)) from None
    else:
        with progress_bars() as prog:
            bars = Bars(prog)
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


@click.command()
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
    "out-of-distribution set; the stain and capture ones again with the card's domain monitor) and write "
    "them to this JSON file.",
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

    from ..evaluate import evaluate as run_eval
    from ..evaluate import save_evaluation, write_predictions

    try:
        clf = Classifier(model, backend=backend, num_threads=threads, kernels=kernels)
    except ModelLoadError as e:
        raise click.ClickException(str(e)) from None
    if externals:
        return _evaluate_external(clf, externals, sample_size, out_dir)
    if data_dir is None:
        raise click.UsageError("give DATA_DIR or --external FOLDER")
    sp = load_blocks(data_dir, block_size, 0)
    samples = sp.val if subset == "validation" else sp.train + sp.val
    with progress_bars() as prog:
        bars = Bars(prog)
        ev = run_eval(
            clf,
            samples,
            [v.strip() for v in variants.split(",") if v.strip()],
            progress=lambda i, n: bars("evaluate", i, n),
        )
        robust = None
        if robust_out:
            from ..robustness import run as run_robustness

            robust = run_robustness(clf, samples, progress=bars)
            if clf.card.validated_range is not None:
                from ..monitored import run_monitored

                # As the device judges them too: the card's domain monitor sends some of these to review.
                robust["with_monitor"] = run_monitored(clf, samples, clf.card.validated_range, progress=bars)
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
    from ..external import per_source, screen
    from ..sources import labelled_folder

    samples = []
    for f in folders:
        try:
            samples.extend(labelled_folder(f, Path(f).name))
        except ValueError as e:
            raise click.ClickException(str(e)) from None
    with progress_bars() as prog:
        bars = Bars(prog)
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

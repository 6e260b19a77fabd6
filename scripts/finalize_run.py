#!/usr/bin/env python3
"""Finish a training run whose finalize did not complete (interrupted, or run under older code): the
float model's validation probabilities from ``work/cell.keras`` (for the float/int8 agreement), then
``trainer.finalize.finalize`` and the report, exactly as ``edge-screen-train train`` ends.

    .venv/bin/python scripts/finalize_run.py runs/v3/edge-screen-mnv2-int8.tflite --sources pbc,bccd
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import time
from pathlib import Path

import numpy as np

from edge.inference.classifier import card_path_for, load_card
from trainer.build import field_probs
from trainer.cellset import build_cellset
from trainer.data import SHARED_DATASET, load_split
from trainer.finalize import finalize
from trainer.report import write_report
from trainer.sources import add_sources, trained_sources, untrained_types
from trainer.train import predict_float

# The card's preprocessing switches a finalize can turn on, each with the card version that shipped it.
SWITCHES = {
    "carve_merged": "3.3.0",
    "pale_search": "3.4.0",
    "clipped_glass_review": "3.5.0",
    "local_colour_test": "3.9.0",
    "carved_stain_fit": "3.10.0",
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("tflite", type=Path)
    ap.add_argument("--data", type=Path, default=SHARED_DATASET)
    ap.add_argument("--sources", default="pbc,bccd")
    ap.add_argument("--skip-tests", action="store_true")
    ap.add_argument(
        "--cell-views", type=int, default=None, help="set the card's cell_views (1, 2 or 4) before finalizing"
    )
    for field, version in SWITCHES.items():
        ap.add_argument(
            "--" + field.replace("_", "-"),
            action="store_true",
            help=f"set the card's preprocessing {field} ({version}) before finalizing",
        )
    ap.add_argument(
        "--keep-float-agreement",
        action="store_true",
        help="keep the card's float/int8 agreement instead of loading work/cell.keras: for a change that "
        "leaves every validation crop as it was (check that first); the run's work/ folder may then be gone",
    )
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    t0 = time.perf_counter()
    split = load_split(args.data)
    names = [n for n in args.sources.split(",") if n]
    card = load_card(card_path_for(args.tflite))
    if names:
        split = add_sources(split, names, untrained_types(trained_sources(card)))
    work = args.tflite.parent / "work"
    if args.cell_views is not None:
        card.set_section("cell_views", args.cell_views)
        card.save(card_path_for(args.tflite))
    switched = {f: True for f in SWITCHES if getattr(args, f) and not getattr(card.preprocessing, f)}
    if switched:
        card.preprocessing = dataclasses.replace(card.preprocessing, **switched)
        card.save(card_path_for(args.tflite))
    probs = None
    if not args.keep_float_agreement:
        import keras

        model = keras.models.load_model(work / "cell.keras")
        va = build_cellset(split.val, card.preprocessing)
        probs = field_probs(predict_float(model, va.x), va.field, len(split.val))
        logging.info("float probabilities for %d validation fields", int((~np.isnan(probs[:, 0])).sum()))
    finalize(
        args.tflite,
        split,
        work,
        float_probs=probs,
        tests=not args.skip_tests,
        progress=lambda stage, i, n: logging.info("%s %d/%d", stage, i, n) if i == n else None,
    )
    card = load_card(card_path_for(args.tflite))
    if card.extra["training"].get("seconds_total_build") is None:
        card.extra["training"]["seconds_total_build"] = round(time.perf_counter() - t0, 1)
        card.extra["training"]["finalize_note"] = "finalized by scripts/finalize_run.py; build time not recorded"
        card.save(card_path_for(args.tflite))
    print(write_report(args.tflite, work))


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""Fit a finalized model's domain monitor again (its card's ``validated_range``, ``per_source`` and
``ood_auroc``) from the cell tests already in its card, without re-running them: what
``trainer.finalize.domain_and_sources`` does at the end of a finalize, for a change to the monitor's rule
alone (nothing the model answers changes). Then writes the report again. ``--novelty`` fits the
monitor's novelty reference (``trainer.finalize.fit_novelty``) on the primary source's clean training
cells first, as a finalize does. ``--exposure`` first runs the exposure tests again at every level of
``trainer.robustness.EXPOSURE`` and sets the quality gate's brightness limits from them
(``trainer.robustness.refit_exposure``): fields the old limits refused may then be answered.

    .venv/bin/python scripts/refit_domain.py runs/v4g/edge-screen-mnv2-int8.tflite --sources pbc,bccd
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
from pathlib import Path

from edge.inference.classifier import Classifier, card_path_for, load_card
from trainer.cellset import build_cellset
from trainer.data import SHARED_DATASET, load_split
from trainer.finalize import domain_and_sources, fit_novelty, quality_gate_section
from trainer.report import write_report
from trainer.robustness import refit_exposure
from trainer.sources import add_sources, trained_sources, untrained_types


def progress(stage: str):
    return lambda i, n: logging.info("%s %d/%d", stage, i, n) if i == n or i % 200 == 0 else None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("tflite", type=Path)
    ap.add_argument("--data", type=Path, default=SHARED_DATASET)
    ap.add_argument("--sources", default="pbc,bccd")
    ap.add_argument("--novelty", action="store_true", help="fit the novelty reference again first")
    ap.add_argument(
        "--exposure", action="store_true", help="run the exposure tests again and set the gate's brightness limits"
    )
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    split = load_split(args.data)
    names = [n for n in args.sources.split(",") if n]
    card = load_card(card_path_for(args.tflite))
    if names:
        split = add_sources(split, names, untrained_types(trained_sources(card)))
    tests = card.extra.get("cell_tests")
    if not tests:
        raise SystemExit(f"{card_path_for(args.tflite)}: no cell_tests in the card; finalize it first")
    if args.exposure:
        clf = Classifier(args.tflite, num_threads=2)
        tests = refit_exposure(clf, split.val, tests, progress=lambda stage, i, n: progress(stage)(i, n))
        card.extra["cell_tests"] = tests
        card.set_section("quality_gate", quality_gate_section(tests))
        card.save(card_path_for(args.tflite))
    if args.novelty:
        primary = [s for s in split.train if s.source == "taleqani"]
        found = dataclasses.replace(card.preprocessing, carve_merged=False, pale_search=False)
        cells = build_cellset(primary, found, progress=progress("cells: primary training fields (clean)"))
        card.set_section("novelty", fit_novelty(Classifier(args.tflite, num_threads=2), args.tflite, cells, primary))
        card.save(card_path_for(args.tflite))
    domain_and_sources(args.tflite, split, tests, progress=lambda stage, i, n: progress(stage)(i, n))
    print(write_report(args.tflite, args.tflite.parent / "work"))


if __name__ == "__main__":
    main()

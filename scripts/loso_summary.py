#!/usr/bin/env python3
"""Leave-one-source-out figures for a model trained without one source: the left-out source screened
through the daemon's pipeline (every image of it: the model never saw any), the primary validation blocks
beside it, and the embedding distance's AUROC between their cells. Optionally written into the shipped
model's card (``extra.leave_one_source_out``) and report.

    .venv/bin/python scripts/loso_summary.py runs/loso-pbc/edge-screen-mnv2-int8.tflite pbc \\
        --card edge/models/edge-screen-mnv2-int8.tflite
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from edge.inference.classifier import Classifier, card_path_for, load_card
from trainer.data import SHARED_DATASET, load_split
from trainer.external import cell_values, ood_auroc, per_source, screen
from trainer.sources import FOLDERS, bccd, labelled_folder


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model", type=Path)
    ap.add_argument("source", choices=sorted(FOLDERS))
    ap.add_argument("--card", type=Path, help="the shipped .tflite whose card records the result")
    ap.add_argument("--load", type=Path, help="a JSON this script printed before: record it without screening again")
    args = ap.parse_args()
    if args.load:
        out = json.loads(args.load.read_text())
        if args.card:
            record(out, args.card)
        return
    clf = Classifier(args.model, num_threads=2)
    split = load_split(SHARED_DATASET)
    left = labelled_folder(FOLDERS["pbc"], "pbc") if args.source == "pbc" else sum(bccd(), [])
    scr = screen(clf, list(split.val) + left)
    rule = clf.card.sample_rule
    figs = per_source(scr, rule)
    inside = cell_values([x for x in scr if x.sample.source == "taleqani"])
    out = {
        "model": str(args.model),
        "left_out": args.source,
        "trained_on": clf.card.extra["split"].get("sources"),
        "fine_tuning": clf.card.extra["training"].get("fine_epochs"),
        "per_source": figs,
        "ood_auroc": ood_auroc(inside, cell_values([x for x in scr if x.sample.source == args.source])),
        "note": "the domain monitor is not part of this experiment's card (no validated range): these are the "
        "model's own answers on a laboratory it never saw",
    }
    print(json.dumps(out, indent=2))
    if args.card:
        record(out, args.card)


def record(out: dict, shipped: Path) -> None:
    card = load_card(card_path_for(shipped))
    f = out["per_source"][out["left_out"]]
    out["summary"] = (
        f"Trained without {out['left_out']} (fine-tuning epochs {out['fine_tuning']}), then screened on all "
        f"{f['fields']} of its images: refused {100 * (f['refused'] or 0):.1f} %, called malignant "
        f"{100 * (f['malignant'] or 0):.1f} % ({100 * (f['confidently_malignant'] or 0):.1f} % with confidence), "
        f"labels {f['labels']}; embedding-distance AUROC against the Taleqani validation cells "
        f"{out['ood_auroc']}. The shipped model's own figures on the held-out part are in the per-source table."
    )
    loso = card.extra.setdefault("leave_one_source_out", {})
    loso[out["left_out"]] = out
    loso["summary"] = " ".join(v["summary"] for k, v in loso.items() if k != "summary" and "summary" in v)
    card.save(card_path_for(shipped))


if __name__ == "__main__":
    main()

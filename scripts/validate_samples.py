#!/usr/bin/env python3
"""The acceptance check of issue 9 the way the maintainers re-run it: every validation block (25
consecutive file numbers of one class ~ one slide) is copied into its own inbox subfolder, the device's
pipeline (the daemon's code: sample assignment, per-field transaction, the card's sample rule) screens
them, and each sample's verdict is compared with the block's class.

    .venv/bin/python scripts/validate_samples.py ../shared/datasets/all-taleqani [--model FILE] [--json OUT]

With ``--as-lab pbc|bccd [--zoom 4]`` every field is first shown as that laboratory would show it: recoloured
onto the mean stain of its held-out images (trainer/monitored.py ``other_lab_stains``) and magnified, then
saved as a JPEG (quality 95) in the inbox: the maintainers' check of other laboratories' blast samples,
simulated on slides the model never saw. A blast sample is caught when its verdict is malignant or it is
sent to review.

Needs no TensorFlow. Prints one line per sample and the sample-level sensitivity and specificity.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from typing import Callable  # noqa: E402

import numpy as np  # noqa: E402

from edge.config import config_from_dict  # noqa: E402
from edge.imaging import synthetic  # noqa: E402
from edge.imaging.decode import decode_file  # noqa: E402
from edge.inference.classifier import classifier_from_config  # noqa: E402
from edge.pipeline.settings import PipelineSettings  # noqa: E402
from edge.pipeline.stages import Pipeline  # noqa: E402
from edge.store.database import Store  # noqa: E402
from edge.vocabulary import BENIGN  # noqa: E402
from trainer.augment import reinhard_to  # noqa: E402
from trainer.data import load_split  # noqa: E402
from trainer.monitored import other_lab_stains  # noqa: E402
from trainer.robustness import resample  # noqa: E402
from trainer.sources import SPLITS  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("data_dir", type=Path)
    ap.add_argument("--model", type=Path, default=None)
    ap.add_argument("--block-size", type=int, default=25)
    ap.add_argument("--json", type=Path, default=None, help="write the per-sample results here")
    ap.add_argument("--as-lab", choices=sorted(SPLITS), default=None, help="in this laboratory's stain")
    ap.add_argument("--zoom", type=float, default=1.0, help="and magnified this much (with --as-lab)")
    a = ap.parse_args()
    if a.zoom != 1.0 and not a.as_lab:
        ap.error("--zoom needs --as-lab")
    split = load_split(a.data_dir, a.block_size)
    show = as_lab(a.as_lab, a.zoom) if a.as_lab else None
    with tempfile.TemporaryDirectory(prefix="es-samples-") as tmp:
        tmp = Path(tmp)
        inbox = tmp / "inbox"
        truth = {}
        files = []
        for s in split.val:
            sid = f"{s.label.replace(' ', '')}-{s.number // a.block_size:03d}"
            truth[sid] = s.label
            dest = inbox / sid / s.path.name
            dest.parent.mkdir(parents=True, exist_ok=True)
            if show is None:
                shutil.copyfile(s.path, dest)
            else:
                dest = dest.with_suffix(".jpg")
                dest.write_bytes(synthetic.encode(show(decode_file(s.path).rgb), quality=95))
            files.append(dest)
        raw = {
            "daemon": {"inbox": str(inbox), "device_id": "validation"},
            "database": {"url": f"sqlite:///{tmp / 'db.sqlite'}"},
        }
        if a.model:
            raw["model"] = {"path": str(a.model)}
        cfg = config_from_dict(raw)
        clf = classifier_from_config(cfg)
        store = Store.open(cfg.database.url, device_id="validation", sample_rule=clf.card.sample_rule)
        pipe = Pipeline(PipelineSettings.of(cfg, clf.card, inbox=inbox), clf, store=store)
        for _ in pipe.run_paths(sorted(files)):
            pass
        results = store.samples.list()
        store.close()
    tp = fn = tn = fp = review = caught = unreviewed_benign = 0
    rows = []
    for s in sorted(results, key=lambda x: x.sample_id):
        malignant = truth[s.sample_id] != BENIGN
        right = (s.verdict == "malignant") == malignant
        tp, fn = tp + (malignant and right), fn + (malignant and not right)
        tn, fp = tn + (not malignant and right), fp + (not malignant and not right)
        review += s.needs_review
        caught += malignant and (s.verdict == "malignant" or s.needs_review)
        unreviewed_benign += not malignant and s.verdict == "benign" and not s.needs_review
        rows.append(
            {
                "sample": s.sample_id,
                "truth": truth[s.sample_id],
                "fields": s.fields,
                "readable": s.readable,
                "verdict": s.verdict,
                "score": s.score,
                "needs_review": s.needs_review,
                "right": right,
            }
        )
        print(
            f"{s.sample_id:16s} {truth[s.sample_id]:12s} {s.readable:2d}/{s.fields:2d} readable  "
            f"{s.verdict or '-':9s} {s.score if s.score is not None else float('nan'):.3f}"
            f"{'  REVIEW' if s.needs_review else ''}{'' if right else '  WRONG'}"
        )
    sens = tp / (tp + fn) if tp + fn else float("nan")
    spec = tn / (tn + fp) if tn + fp else float("nan")
    print(
        f"\n{len(rows)} samples ({tp + fn} malignant, {tn + fp} benign): sensitivity {sens:.1%} ({tp}/{tp + fn}), "
        f"specificity {spec:.1%} ({tn}/{tn + fp}), {review} to review; model {clf.name} ({clf.sha256[:12]})"
    )
    print(
        f"blast samples caught (malignant or sent to review): {caught}/{tp + fn}; benign samples answered "
        f"benign without review: {unreviewed_benign}/{tn + fp}"
        + (f"; fields shown as {a.as_lab} shows them, magnified x{a.zoom:g}" if a.as_lab else "")
    )
    if a.json:
        a.json.write_text(
            json.dumps(
                {"samples": rows, "sensitivity": sens, "specificity": spec, "review": review, "caught": caught},
                indent=2,
            )
        )
    return 0 if fn == 0 and fp == 0 else 1


def as_lab(source: str, zoom: float) -> Callable[[np.ndarray], np.ndarray]:
    """A field as ``source`` would show it: in the mean stain of its held-out images, magnified ``zoom``."""
    held = SPLITS[source]()[1]
    target = other_lab_stains({source: held})[source]
    return lambda rgb: resample(reinhard_to(rgb, target), zoom) if zoom != 1.0 else reinhard_to(rgb, target)


if __name__ == "__main__":
    sys.exit(main())

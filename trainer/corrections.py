"""Reviewers' field corrections from device databases, as extra training images.

A reviewer who relabels a field on a device (the append-only ``reviews`` table, kind 'field') has produced a
labelled image from the clinic's own microscope, which is exactly what the public dataset lacks. Such images
join the TRAINING side only: the validation blocks must stay the public dataset's held-out slides, so a
corrected image that is byte-identical to a validation image is dropped rather than allowed to leak.
No TensorFlow here.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

from sqlalchemy import create_engine, select

from edge.inference.classifier import BENIGN, sha256_file
from edge.store.schema import images, reviews

from .data import IMAGE_SUFFIXES, Sample, Split, canonical_label

# Why a correction did not become a training image (the card records the count of each).
REASONS = ("missing_file", "file_changed", "no_label", "same_as_validation", "same_as_training", "duplicate_correction")


@dataclass(frozen=True)
class Correction:
    db: str
    image_id: str
    path: Path
    sha256: str  # as recorded by the device
    label: str  # canonical class name, the reviewer's
    reviewer: str


def _label(reviewer_label, reviewer_verdict) -> str | None:
    if reviewer_label:
        return canonical_label(str(reviewer_label))
    # A plain "benign" is a full label; a plain "malignant" names no subtype, and a 4-class model cannot
    # learn from it.
    return BENIGN if reviewer_verdict == "benign" else None


def read_corrections(db_paths: Sequence[str | Path]) -> Tuple[List[Correction], Dict[str, int]]:
    """The latest field review of every image in each database, with a readable file and a class label.

    Returns the corrections and counts: ``reviews`` (field review rows), ``images`` (reviewed images, i.e.
    after the latest review per image won) and one count per skip reason.
    """
    out: List[Correction] = []
    counts: Counter = Counter()
    for db in db_paths:
        db = Path(db)
        if not db.is_file():
            raise FileNotFoundError(f"corrections database not found: {db}")
        # Read-only: a device's database is evidence and must not be migrated or locked for writing here.
        engine = create_engine(f"sqlite:///file:{db.resolve()}?mode=ro&uri=true")
        q = (
            select(
                reviews.c.image_id,
                reviews.c.created_at,
                reviews.c.reviewer,
                reviews.c.reviewer_label,
                reviews.c.reviewer_verdict,
                images.c.path,
                images.c.moved_to,
                images.c.sha256,
            )
            .join(images, images.c.id == reviews.c.image_id)
            .where(reviews.c.kind == "field", reviews.c.image_id.isnot(None))
            .order_by(reviews.c.created_at)
        )
        try:
            with engine.connect() as conn:
                rows = conn.execute(q).all()
        finally:
            engine.dispose()
        counts["reviews"] += len(rows)
        latest = {}
        for r in rows:  # ordered by time: a later review of the same image replaces the earlier one
            latest[r.image_id] = r
        counts["images"] += len(latest)
        for image_id, r in latest.items():
            label = _label(r.reviewer_label, r.reviewer_verdict)
            path = Path(r.moved_to or r.path)
            if label is None:
                counts["no_label"] += 1
            elif not path.is_file() or path.suffix.lower() not in IMAGE_SUFFIXES:
                counts["missing_file"] += 1
            elif sha256_file(path) != r.sha256:
                counts["file_changed"] += 1  # not the image the reviewer looked at
            else:
                out.append(
                    Correction(
                        db=str(db), image_id=image_id, path=path, sha256=r.sha256, label=label, reviewer=r.reviewer
                    )
                )
    return out, dict(counts)


def add_corrections(
    split: Split, corrections: Sequence[Correction], read_counts: Dict[str, int] | None = None
) -> Tuple[Split, dict]:
    """``split`` with the usable corrections appended to its training side, and the card's record of it."""
    val = {s.sha256 for s in split.val}
    train = {s.sha256 for s in split.train}
    counts: Counter = Counter({k: v for k, v in (read_counts or {}).items() if k in REASONS})
    used: List[Sample] = []
    seen = set()
    for c in corrections:
        if c.sha256 in val:
            counts["same_as_validation"] += 1
        elif c.sha256 in train:
            counts["same_as_training"] += 1  # the dataset already has it, with the dataset's label
        elif c.sha256 in seen:
            counts["duplicate_correction"] += 1
        else:
            seen.add(c.sha256)
            # number -1: corrections are placed after the split, so no block arithmetic ever sees them
            used.append(Sample(path=c.path, label=c.label, number=-1, sha256=c.sha256))
    digest = hashlib.sha256("\n".join(sorted(f"{u.sha256}:{u.label}" for u in used)).encode()).hexdigest()
    info = {
        "databases": sorted({c.db for c in corrections}),
        "sha256": digest,
        "reviews_read": (read_counts or {}).get("reviews", len(corrections)),
        "images_reviewed": (read_counts or {}).get("images", len(corrections)),
        "used": len(used),
        "used_by_label": dict(Counter(s.label for s in used)),
        "dropped": {k: counts.get(k, 0) for k in REASONS},
        "rule": "latest field review per image; reviewer's label; training side only; an image identical "
        "(sha256) to a validation or training image is dropped",
    }
    return dataclasses.replace(split, train=list(split.train) + used), info


def load_corrections(split: Split, db_paths: Sequence[str | Path]) -> Tuple[Split, dict]:
    """What ``edge-screen-train train --corrections`` calls: read every database, then add to ``split``."""
    corrections, counts = read_corrections(db_paths)
    new, info = add_corrections(split, corrections, counts)
    info["databases"] = [str(Path(p)) for p in db_paths]
    return new, info


def corrected_version(version: str, info: dict) -> str:
    """The version of a model retrained with corrections says so: ``3.0.0`` becomes
    ``3.0.0+corrections.12.ab12cd34`` (SemVer build metadata: how many corrections, and which, by the hash
    of their images and labels). Without it a retrained model installed under the bundled model's own name
    and version, and `model list` could not tell them apart. A version that already carries build
    metadata (``+...``) is the user's own and is kept."""
    if "+" in version:
        return version
    return f"{version}+corrections.{info.get('used', 0)}.{str(info.get('sha256', ''))[:8] or 'none'}"


def lineage(info: dict, base: Optional[dict]) -> dict:
    """The card's ``lineage``: what this model was made from, for the card, `model list` and a person.
    ``base``: the card (as a dict) of the model whose recipe and version it builds on (the bundled one)."""
    dbs = [Path(d).name for d in info.get("databases", [])]
    out = {
        "kind": "retrained with reviewers' field corrections",
        "summary": f"retrained with {info.get('used', 0)} reviewer field correction(s) from {', '.join(dbs) or '-'}",
        "corrections": {"used": info.get("used", 0), "sha256": info.get("sha256"), "databases": dbs},
        "weights": "trained again from the initial weights with the corrections on the training side, "
        "not fine-tuned from the base model's weights",
    }
    if base:
        out["base"] = {k: base.get(k) for k in ("name", "version", "sha256")}
    return out


__all__ = [
    "Correction",
    "REASONS",
    "add_corrections",
    "corrected_version",
    "lineage",
    "load_corrections",
    "read_corrections",
]

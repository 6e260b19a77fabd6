"""Dataset discovery and the block split.

Neighbouring file numbers come from the same slide and look nearly identical, so images are grouped into
blocks of consecutive numbers and whole blocks go to one side of the split; a random image-level split
would put near-copies on both sides and inflate every validation figure.
"""

from __future__ import annotations

import hashlib
import re
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple

from edge.inference.classifier import LABELS

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff"}
SHARED_DATASET = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "all-taleqani"

# Folder names seen in copies of the Taleqani dataset, lower-cased, without separators.
_ALIASES = {
    "benign": "Benign",
    "hematogones": "Benign",
    "normal": "Benign",
    "early": "Early Pre-B",
    "earlyprebpre": "Early Pre-B",
    "earlypreb": "Early Pre-B",
    "malignantearlypreb": "Early Pre-B",
    "malignantearly": "Early Pre-B",
    "pre": "Pre-B",
    "preb": "Pre-B",
    "malignantpreb": "Pre-B",
    "malignantpre": "Pre-B",
    "pro": "Pro-B",
    "prob": "Pro-B",
    "malignantprob": "Pro-B",
    "malignantpro": "Pro-B",
}


def canonical_label(folder: str) -> str | None:
    key = re.sub(r"[^a-z]", "", folder.lower())
    if key in _ALIASES:
        return _ALIASES[key]
    for lab in LABELS:
        if key == re.sub(r"[^a-z]", "", lab.lower()):
            return lab
    return None


@dataclass(frozen=True)
class Sample:
    path: Path
    label: str
    number: int  # the file number; neighbours come from the same slide
    sha256: str
    source: str = "taleqani"  # the laboratory (trainer/sources.py): per-source figures and leave-one-out

    @property
    def y(self) -> int:
        return LABELS.index(self.label)


@dataclass
class Split:
    train: List[Sample]
    val: List[Sample]
    block_size: int
    duplicates_dropped: int
    data_hash: str  # over sorted (label, sha256): identifies the exact image set
    val_blocks: Dict[str, List[int]] = field(default_factory=dict)
    # Other laboratories' held-out images (trainer/sources.py), scored per source; ``val`` stays the
    # primary source's blocks, on which threshold, review band and sample rule are chosen.
    extra_val: List[Sample] = field(default_factory=list)
    sources: Dict[str, dict] = field(default_factory=dict)

    def describe(self) -> dict:
        return {
            "method": f"blocks of {self.block_size} consecutive file numbers per class, stratified by class; "
            "whole blocks go to train or validation",
            "block_size": self.block_size,
            "train": dict(Counter(s.label for s in self.train)),
            "validation": dict(Counter(s.label for s in self.val)),
            "validation_blocks": self.val_blocks,
            "duplicates_dropped": self.duplicates_dropped,
            "data_sha256": self.data_hash,
            "sources": self.sources,
        }


def file_number(path: Path) -> int:
    """The last number in a file's name: neighbouring numbers come from the same slide."""
    m = re.findall(r"\d+", path.stem)
    return int(m[-1]) if m else 0


def discover(
    root: str | Path, label_of: Callable[[str], Optional[str]] = canonical_label, source: str = "taleqani"
) -> Tuple[List[Sample], int]:
    """All images under class folders of ``root`` (folder name -> label by ``label_of``; folders it
    does not know are skipped); exact duplicates (same bytes) are dropped."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"dataset folder not found: {root}")
    samples, seen, dropped = [], set(), 0
    for folder in sorted(p for p in root.iterdir() if p.is_dir()):
        label = label_of(folder.name)
        if label is None:
            continue
        for f in sorted(folder.rglob("*")):
            if f.suffix.lower() not in IMAGE_SUFFIXES or not f.is_file():
                continue
            digest = hashlib.sha256(f.read_bytes()).hexdigest()
            if digest in seen:
                dropped += 1
                continue
            seen.add(digest)
            samples.append(Sample(path=f, label=label, number=file_number(f), sha256=digest, source=source))
    if not samples:
        raise ValueError(
            f"no class folders with images under {root} (expected e.g. Benign/ Early/ Pre/ Pro/, "
            f"or for another lab benign/ blast/)"
        )
    return samples, dropped


def block_split(
    samples: Sequence[Sample], block_size: int = 25, val_fraction: float = 0.2, duplicates_dropped: int = 0
) -> Split:
    """Every ``round(1/val_fraction)``-th block of each class goes to validation, offset by class.

    Taking evenly spaced blocks (rather than random ones) spreads validation across the whole numbering
    range, i.e. across slides recorded at different times, and is reproducible without a seed.
    """
    if block_size < 1:
        raise ValueError("block_size must be >= 1")
    step = max(2, round(1 / val_fraction))
    by_class: Dict[str, Dict[int, List[Sample]]] = defaultdict(lambda: defaultdict(list))
    for s in samples:
        by_class[s.label][s.number // block_size].append(s)
    train, val, val_blocks = [], [], {}
    for ci, label in enumerate(sorted(by_class)):
        blocks = sorted(by_class[label])
        chosen = [b for i, b in enumerate(blocks) if i % step == (ci + step // 2) % step]
        if not chosen and len(blocks) >= 2:
            # A class with fewer blocks than the stride still needs validation cases.
            chosen = [blocks[len(blocks) // 2]]
        val_blocks[label] = chosen
        for b in blocks:
            (val if b in chosen else train).extend(by_class[label][b])
    h = hashlib.sha256("".join(sorted(f"{s.label}:{s.sha256}\n" for s in samples)).encode()).hexdigest()
    return Split(
        train=train,
        val=val,
        block_size=block_size,
        duplicates_dropped=duplicates_dropped,
        data_hash=h,
        val_blocks=val_blocks,
    )


def load_split(root: str | Path, block_size: int = 25, val_fraction: float = 0.2) -> Split:
    samples, dropped = discover(root)
    return block_split(samples, block_size, val_fraction, dropped)

"""Other laboratories' labelled images beside the primary (Taleqani) blocks.

Every clinic is another laboratory, so the trainer takes several sources and reports figures per source.
Each source is split by its own rule (never image by image where neighbours are near-copies):

- ``pbc``: PBC normal white cells (Barcelona, CellaVision; Acevedo et al., Data in Brief 30 (2020)
  105474), eight normal cell types in class folders, all benign. No donor ids: split by class and file
  (every ``step``-th file of each class, sorted by name, is held out).
- ``bccd``: BCCD whole normal smear fields (MIT licence), all benign. Split by blocks of 10 consecutive
  file numbers (neighbouring fields may be one smear).
- a labelled folder of another laboratory (``evaluate --external``): benign/blast class folders, or the
  PBC layout (every folder a normal cell type).
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import replace
from pathlib import Path
from typing import Dict, List, Mapping, Sequence, Tuple

from edge.inference.card import ModelCard

from .data import IMAGE_SUFFIXES, Sample, Split, canonical_label, discover, file_number

SHARED = Path(__file__).resolve().parents[2] / "shared" / "datasets"
# Folder names that mean "a normal cell or field" in another lab's layout (PBC's eight types and plain words).
NORMAL_FOLDERS = {
    "basophil",
    "eosinophil",
    "erythroblast",
    "ig",
    "lymphocyte",
    "monocyte",
    "neutrophil",
    "platelet",
    "benign",
    "normal",
    "negative",
}
# Folder names that mean "a leukemic blast" (any lineage: lymphoid or myeloid).
BLAST_FOLDERS = {"blast", "blasts", "malignant", "all", "aml", "apl", "lymphoblast", "myeloblast", "positive"}


def _images(folder: Path) -> List[Path]:
    return sorted(f for f in folder.rglob("*") if f.suffix.lower() in IMAGE_SUFFIXES and f.is_file())


def folder_label(name: str) -> str | None:
    """The label a folder of another lab's images carries: Benign for normal cells, one of ours for a
    subtype folder, "blast" for a blast folder of another lineage (malignant, no subtype)."""
    key = re.sub(r"[^a-z]", "", name.lower())
    if key in NORMAL_FOLDERS:
        return "Benign"
    if key in BLAST_FOLDERS:
        return "blast"
    return canonical_label(name)


def labelled_folder(root: str | Path, source: str) -> List[Sample]:
    """Every image under class folders of ``root`` with its label (:func:`folder_label`); exact
    duplicates dropped."""
    return discover(root, folder_label, source)[0]


def pbc(root: Path = SHARED / "pbc-normal", step: int = 5) -> Tuple[List[Sample], List[Sample]]:
    """(train, held out): every ``step``-th file of each cell type, by sorted name, is held out."""
    train, held = [], []
    by_type: Dict[str, List[Sample]] = {}
    for s in labelled_folder(root, "pbc"):
        by_type.setdefault(s.path.parent.name, []).append(s)
    for members in by_type.values():
        for i, s in enumerate(sorted(members, key=lambda m: m.path.name)):
            (held if i % step == step // 2 else train).append(s)
    return train, held


def bccd(root: Path = SHARED / "bccd-fields", block: int = 10, step: int = 5) -> Tuple[List[Sample], List[Sample]]:
    """(train, held out) whole fields, all benign, by blocks of ``block`` consecutive file numbers."""
    train, held = [], []
    for f in _images(root):
        if f.parent != root:
            continue
        s = Sample(
            path=f,
            label="Benign",
            number=file_number(f),
            sha256=hashlib.sha256(f.read_bytes()).hexdigest(),
            source="bccd",
        )
        (held if (s.number // block) % step == step // 2 else train).append(s)
    return train, held


FOLDERS = {"pbc": SHARED / "pbc-normal", "bccd": SHARED / "bccd-fields"}
# Each source's (train, held out) split, by name.
SPLITS = {"pbc": pbc, "bccd": bccd}


def missing_sources(names: Sequence[str]) -> Dict[str, Path]:
    """The named sources whose folder is not there (a fresh clone without ../shared)."""
    return {n: FOLDERS[n] for n in names if n in FOLDERS and not FOLDERS[n].is_dir()}


def add_sources(split: Split, names: Sequence[str], untrained: Sequence[str] = ()) -> Split:
    """``split`` with the named other-lab sources' training part added to ``train`` and their held-out
    part in ``extra_val``. Images in a class folder named in ``untrained`` (a cell type, e.g. ``ig``) stay
    out of training; their held-out part is still scored."""
    for name in names:
        if name not in SPLITS:
            raise ValueError(f"unknown source {name!r} (known: {', '.join(SPLITS)})")
        tr, held = SPLITS[name]()
        left = sorted({s.path.parent.name for s in tr if s.path.parent.name.lower() in untrained})
        tr = [s for s in tr if s.path.parent.name.lower() not in untrained]
        split.train = list(split.train) + tr
        split.extra_val = list(split.extra_val) + held
        split.sources[name] = {
            "train": len(tr),
            "held_out": len(held),
            "split": "by class and file" if name == "pbc" else "by blocks of 10 file numbers",
            "label": "Benign",
        }
        if left:
            split.sources[name]["untrained_types"] = left
    split.sources.setdefault(
        "taleqani",
        {
            "train": sum(s.source == "taleqani" for s in split.train),
            "held_out": len(split.val),
            "split": f"blocks of {split.block_size}",
        },
    )
    return split


def trained_sources(card: ModelCard) -> Dict[str, dict]:
    """The sources a card's split names (``split.sources``): what its model was trained with."""
    return card.extra.get("split", {}).get("sources", {})


def untrained_types(sources: Mapping[str, dict]) -> List[str]:
    """The cell types a card's split (``split.sources``) kept out of training: a finalize must keep them out
    of the training cells too (the embedding reference is fitted on those)."""
    return sorted({t.lower() for d in sources.values() for t in d.get("untrained_types", ())})


def without_source(samples: Sequence[Sample], source: str) -> List[Sample]:
    return [s for s in samples if s.source != source]


def relabel(samples: Sequence[Sample], label: str) -> List[Sample]:
    return [replace(s, label=label) for s in samples]

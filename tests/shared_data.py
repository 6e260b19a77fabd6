"""Where tests find ../shared; real-data tests fall back to synthetic smears when it is absent."""

from __future__ import annotations

from pathlib import Path

SHARED = Path(__file__).resolve().parents[2] / "shared"
DATASET = SHARED / "datasets" / "all-taleqani"
WEIGHTS = SHARED / "weights" / "imagenet-mobilenetv2"
HAVE_DATASET = DATASET.is_dir()
NO_DATASET = f"../shared dataset not present at {DATASET} (CI always has it)"


def real_images(per_class: int = 3) -> list:
    """A few real images of every class, spread across the numbering range."""
    out = []
    if not HAVE_DATASET:
        return out
    for folder in sorted(p for p in DATASET.iterdir() if p.is_dir()):
        files = sorted(folder.glob("*.jpg"))
        step = max(1, len(files) // per_class)
        out.extend(files[::step][:per_class])
    return out


# The other laboratories' normal sets (shared/README.md).
PBC = SHARED / "datasets" / "pbc-normal"
BCCD = SHARED / "datasets" / "bccd-fields"
NO_PBC = f"../shared PBC normal cells not present at {PBC} (CI always has them)"
NO_BCCD = f"../shared BCCD fields not present at {BCCD} (CI always has them)"


def pbc_held_out(folder: str, n: int) -> list:
    """The first ``n`` of PBC's held-out images of one cell type: the trainer's split holds out every fifth
    file of a type from the third on (trainer/sources.py)."""
    return sorted((PBC / folder).glob("*.jpg"))[2::5][:n]

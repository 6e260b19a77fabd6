"""What every edge-screen-train command shares: the console, progress bars, the block split of a data folder."""

from __future__ import annotations

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from ..data import Split, block_split, discover

console = Console(stderr=True)


def progress_bars() -> Progress:
    """The bars long work shows on stderr (a count and the time left), kept on screen when done."""
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=console,
        transient=False,
    )


class Bars:
    """Adapts ``progress(stage, i, n)`` callbacks to one rich bar per stage."""

    def __init__(self, prog: Progress):
        self.prog, self.tasks = prog, {}  # stage -> its bar

    def __call__(self, stage: str, i: int, n: int) -> None:
        if stage not in self.tasks:
            self.tasks[stage] = self.prog.add_task(stage, total=n)
        self.prog.update(self.tasks[stage], completed=i)


def split_table(split: Split) -> Table:
    """Images per class in training and validation, and which blocks were held out."""
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


def load_blocks(data_dir, block_size: int, limit: int) -> Split:
    """DATA_DIR's images (the first ``limit`` of each class when given) split by blocks of consecutive numbers."""
    samples, dropped = discover(data_dir)
    if limit:
        by: dict = {}
        for s in samples:
            by.setdefault(s.label, []).append(s)
        samples = [s for group in by.values() for s in group[:limit]]
    return block_split(samples, block_size, 0.2, dropped)

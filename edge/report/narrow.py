"""The report's image lists on a narrow terminal (a Pi console is 80 columns), as lines instead of tables.

A table column narrower than a file name folds it mid-name ("WBC-Malig" / "nant-001.jpg"), and a reason
squeezed beside it becomes a column of two-letter fragments. Here each image is one line of figures with
its file name at the end when the name fits there, else on the next line by itself; a rejected image's
reason wraps below it at word boundaries. A name is never cut or folded: it is what a technician searches
the inbox for (a name longer than the whole terminal is printed whole, past the edge).
"""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import List, Sequence

from rich.console import Console
from rich.text import Text

from edge.report.data import FlaggedImage, ProblemImage


def flagged_lines(flagged: Sequence[FlaggedImage], width: int) -> List[Text]:
    many_devices = len({f.device_id for f in flagged}) > 1
    out = [
        Text(
            "  time         " + ("device        " if many_devices else "") + "label        score  verdict  file",
            style="bold",
        )
    ]
    for f in flagged:
        score = "-" if f.malignant_score is None else f"{f.malignant_score:.3f}"
        verdict = ("mal" if f.verdict == "malignant" else "ben") + (" REV" if f.needs_review else "")
        head = Text(
            f"  {f.time[5:16]:<11}  "
            + (f"{f.device_id:<12.12}  " if many_devices else "")
            + f"{(f.label or '-'):<11.11}  {score:>5}  "
        )
        head.append(f"{verdict:<7}", style="red" if f.verdict == "malignant" else "yellow")
        head.append("  ")
        out.extend(_with_name(head, Path(f.path).name, width))
    return out


def problem_lines(problems: Sequence[ProblemImage], width: int) -> List[Text]:
    out = [Text("  time         status      file, then the reason", style="bold")]
    for p in problems:
        out.extend(_with_name(Text(f"  {p.time[5:16]:<11}  {p.status:<10}  "), Path(p.path).name, width))
        out.extend(
            Text(line, style="dim")
            for line in textwrap.wrap(
                p.reason or "-",
                width=max(width - 4, 20),
                initial_indent="    ",
                subsequent_indent="    ",
                break_long_words=False,
                break_on_hyphens=False,
            )
        )
    return out


def _with_name(head: Text, name: str, width: int) -> List[Text]:
    if len(head) + len(name) <= width:
        return [head + Text(name)]
    head.rstrip()  # rich's Text.rstrip works in place and returns None
    return [head, Text("    " + name)]


def print_lines(console: Console, lines: Sequence[Text]) -> None:
    for line in lines:
        console.print(line, no_wrap=True, overflow="ignore", crop=False, highlight=False)


__all__ = ["flagged_lines", "print_lines", "problem_lines"]

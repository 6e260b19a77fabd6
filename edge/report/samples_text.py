"""`edge-screen samples` as text for a terminal: one line of figures per sample and its review reasons,
or its sign-off, on the lines below at the full width. A table squeezed the reasons into a 10-column
cell on an 80-column Pi console (17 lines for one sample, words cut as "0.230-0.906" / "; 2 of 5")."""

from __future__ import annotations

import textwrap
from typing import Dict, List, Optional, Sequence, Tuple

from edge.store.samples import Sample
from edge.vocabulary import SampleStatus

FIXED = 43  # the columns after the sample id: status, fields, readable, verdict, score and their gaps


def sample_lines(
    items: Sequence[Sample], width: int = 80, extra: Optional[Dict[Tuple[str, str], str]] = None
) -> List[str]:
    """The samples as lines no longer than ``width`` (a sample id longer than its column gets a line of
    its own: never cut, it is what the technician types next). ``extra`` adds a note per (device id,
    sample id), e.g. the laboratory's patient and specimen ids."""
    id_width = max(6, min(max((len(s.sample_id) for s in items), default=6), max(width - FIXED, 6)))
    out = [_row("sample", "status", "fields", "readable", "verdict", "score", id_width)]
    for s in items:
        sid = s.sample_id
        if len(sid) > id_width:
            out.append(sid)
            sid = ""
        out.append(
            _row(
                sid,
                s.status,
                str(s.fields),
                str(s.readable),
                s.final_verdict or s.verdict or "-",
                "-" if s.score is None else f"{s.score:.3f}",
                id_width,
            )
        )
        note = "; ".join(n for n in ((extra or {}).get((s.device_id, s.sample_id), ""), _note(s)) if n)
        if note:
            out.extend(
                textwrap.wrap(
                    note,
                    width=width,
                    initial_indent="  ",
                    subsequent_indent="    ",
                    break_long_words=False,
                    break_on_hyphens=False,
                )
            )
    return out


def _row(sample: str, status: str, fields: str, readable: str, verdict: str, score: str, id_width: int) -> str:
    return f"{sample:<{id_width}} {status:<10} {fields:>6} {readable:>8} {verdict:<9} {score:>5}".rstrip()


def _note(s: Sample) -> str:
    if s.status == SampleStatus.SIGNED:
        final = s.final_verdict or "-"
        if s.final_label:
            final += f", {s.final_label}"
        when = f" at {s.signed_at:%Y-%m-%d %H:%M} UTC" if s.signed_at else ""
        late = f"; {s.late_fields} late field(s) arrived after the sign-off" if s.late_fields else ""
        return f"signed by {s.signed_by or '?'}{when}: {final} (the model said {s.verdict or '-'}){late}"
    if s.needs_review:
        return "review: " + "; ".join(s.review_reasons or ["flagged"])
    return ""


__all__ = ["sample_lines"]

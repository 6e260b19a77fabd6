"""Plain words for a technologist: why a sample is in the queue, why a field is unreadable or needs review.

The records keep the exact reasons with their figures ("overexposed: mean brightness 241.7 > 240.22"): that
is what the audit, `samples` and the export carry. A person at the microscope reads the meaning first
("too bright to read"); the figures stay one hover away (the pages put them in a ``title``). The patterns
below are the reason formats written by :mod:`edge.pipeline.quality`, :mod:`edge.pipeline.stages` and
:func:`edge.store.samples.judge`; a reason that matches none is shown as it is, so nothing is ever hidden
behind a translation.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import List, Optional, Sequence, Tuple

from edge.vocabulary import CARVED, CLIPPED, CLIPPED_GLASS_HINT, GRANULOCYTE, NO_CELL, NOVEL, PALE

# (pattern on the recorded reason, plain words; groups may be used by name)
_FIELD: Tuple[Tuple[str, str], ...] = (
    (r"^too dark to correct", "too dark to read (the lamp or the exposure is too low)"),
    (r"^too dark", "too dark to read"),
    (r"^overexposed", "too bright to read"),
    (r"^badly exposed", "badly exposed: parts of the picture are pure black or white (adjust the lamp or exposure)"),
    (
        r"^out of focus.*" + re.escape(CLIPPED_GLASS_HINT),
        "out of focus or overexposed: the glass is clipped white (lower the lamp or exposure first)",
    ),
    (r"^out of focus", "out of focus"),
    (r"^no stain", "no stain: an empty field or not a smear"),
    (r"^no stained cells", "no stained cells: an empty field or not a smear"),
    ("^" + re.escape(f"{NO_CELL}: {CLIPPED_GLASS_HINT}"), f"no white cell in the field: {CLIPPED_GLASS_HINT}"),
    ("^" + re.escape(NO_CELL), "no white cell in the field"),
    (r"^not a blood smear", "does not look like a blood smear (no cell resembles the training cells)"),
    (
        r"^magnification (?P<m>[\d.]+)x",
        "magnification {m}× is outside what the model can read (check the objective and the camera adapter)",
    ),
    (r"^same content as", "the same picture as another field (a duplicate)"),
    (r"^file too large", "file too large"),
    (r"^unsupported format", "not a picture format the device reads"),
    (r"^cannot read file", "the file could not be read"),
    (r"^processing error", "the device failed on this file (see the log)"),
    (r"truncated", "the file is incomplete (cut off while copying)"),
    (r"symlink", "a link, not a picture: refused"),
)

_SAMPLE: Tuple[Tuple[str, str], ...] = (
    (
        r"^only (?P<n>\d+) readable field\(s\), the rule needs (?P<k>\d+)",
        "too few readable fields: {n} of the {k} needed",
    ),
    (
        r"^score (?P<s>[\d.]+) is inside the review band (?P<lo>[\d.]+)-(?P<hi>[\d.]+)",
        "uncertain: the score is neither clearly benign nor clearly malignant",
    ),
    (r"^(?P<a>\d+) of (?P<n>\d+) fields disagree", "fields disagree: {a} of {n} point the other way"),
    (
        r"^outside the validated range on (?P<a>\d+) of (?P<n>\d+) readable fields: glass clipped white",
        "overexposed: the camera clips the glass white on {a} of {n} fields (lower the lamp or exposure)",
    ),
    (
        r"^outside the validated range on (?P<a>\d+) of (?P<n>\d+) readable fields: (?P<why>.*)",
        "the microscope or stain is outside what the model was validated on ({a} of {n} fields)",
    ),
    (r"^the model card has no sample rule", "the model gives no sample verdict: a person decides"),
    (
        r"^(?P<n>\d+) field\(s\) with a white cell carved from red cells",
        "{n} field(s) whose white cell had to be cut out of red cells: shown for review, not counted",
    ),
    (
        r"^(?P<n>\d+) field\(s\) with a white cell paler than",
        "{n} field(s) whose white cell was too pale to read with confidence (overexposed or faded stain): shown "
        "for review, not counted",
    ),
    (
        r"^(?P<n>\d+) field\(s\) with a cell like an immature granulocyte",
        "{n} field(s) with a cell like an immature granulocyte (left shift, infection or a myeloid leukaemia): "
        "a person must look; the model screens for lymphoid blasts only",
    ),
)


# The domain monitor's reasons (edge/pipeline/domain.py, edge.vocabulary), one per part of a row's `domain`.
_DOMAIN: Tuple[Tuple[str, str], ...] = (
    (
        r"^magnification not measured.*guessed from the white cell",
        "the magnification could not be measured (no red cells to measure it by): it was guessed from the white "
        "cell's size, which differs from cell to cell",
    ),
    (r"^magnification not measured", "the magnification could not be measured (no red cells to measure it by)"),
    (
        r"^magnification (?P<m>[\d.]+)x the training scale.*validated (?P<lo>[\d.]+)-(?P<hi>[\d.]+)x",
        "another magnification: {m}× where the model was validated at {lo}–{hi}×",
    ),
    (r"^glass unlike the validated slides", "another lamp, camera or slide: the glass is unlike the validated slides"),
    (r"^stain unlike the validated slides", "the stain's colour is unlike the validated slides"),
    (r"^cells unlike the validated cells", "cells unlike any the model was validated on (another cell type or lab)"),
    (
        "^" + re.escape(NOVEL),
        "the cells look unlike those of the laboratory the model was validated on (another stain, microscope or "
        "cell type)",
    ),
    ("^" + re.escape(CARVED), "the white cell had to be cut out of red cells stained as dark as it"),
    ("^" + re.escape(PALE), "the white cell is paler than on the validated slides (overexposed or faded stain)"),
    ("^" + re.escape(CLIPPED), "overexposed: the camera clips the glass white (lower the lamp or exposure)"),
    (
        "^" + re.escape(GRANULOCYTE),
        "a cell looks like an immature granulocyte (left shift, infection or a myeloid leukaemia): the model "
        "screens for lymphoid blasts only",
    ),
)
_LIGHTNESS = re.compile(r"^stain unlike the validated slides \(cell lightness (?P<v>[\d.]+), validated (?P<lo>[\d.]+)-")


@dataclass(frozen=True)
class Reason:
    text: str  # plain words
    detail: str  # the recorded reason with its figures


def _translate(reason: str, table: Sequence[Tuple[str, str]]) -> Reason:
    for pattern, words in table:
        m = re.search(pattern, reason)
        if m:
            return Reason(words.format(**m.groupdict()), reason)
    return Reason(reason, reason)


def field_reason(reason: Optional[str]) -> Reason:
    """Why a field was not classified, in plain words."""
    return _translate(reason or "no reason recorded", _FIELD)


def sample_reasons(reasons: Sequence[str]) -> List[Reason]:
    """A sample's review reasons (``samples.review_reasons``) in plain words, in the same order."""
    return [_translate(r, _SAMPLE) for r in reasons]


def domain_reasons(domain: str) -> List[Reason]:
    """Each of the domain monitor's reasons for a field, in plain words. Cells stained darker than every
    validated slide get a warning of their own: the model reads a darker cell as benign (a blast recoloured
    onto the Benign slides' statistics was called benign with confidence; README, "What reaches a clinic
    without review"), so a benign answer on such a field reassures nobody."""
    out = []
    for part in (p.strip() for p in domain.split("; ") if p.strip()):
        m = _LIGHTNESS.match(part)
        if m and float(m["v"]) < float(m["lo"]):
            out.append(
                Reason(
                    "cells stained darker than on any validated slide: the model reads darker cells as benign, "
                    "so a benign answer here does not rule out blasts",
                    part,
                )
            )
        elif m:
            out.append(Reason("cells stained paler than on any validated slide", part))
        else:
            out.append(_translate(part, _DOMAIN))
    return out


def field_review_reasons(
    rec, review_band: Optional[Sequence[float]], cell_scores: Sequence[float] = ()
) -> List[Reason]:
    """Why a classified field is marked "review": the model's own reasons re-told from the record (the
    card's review band, a benign call that outvoted a malignant-looking cell, the domain monitor)."""
    out: List[Reason] = []
    if not rec.needs_review or rec.malignant_score is None:
        return out
    score = rec.malignant_score
    if rec.domain:
        out.extend(domain_reasons(rec.domain))
    if review_band and review_band[0] <= score < review_band[1]:
        out.append(
            Reason(
                "uncertain call: neither clearly benign nor clearly malignant",
                f"malignant score {score:.3f} inside the review band {review_band[0]:.3f}-{review_band[1]:.3f}",
            )
        )
    if rec.verdict == "benign" and review_band and cell_scores and max(cell_scores) >= review_band[1]:
        out.append(
            Reason(
                "called benign, but one cell looks malignant",
                f"a cell scored {max(cell_scores):.3f} >= {review_band[1]:.3f}",
            )
        )
    if not out:
        out.append(Reason("marked for review by the model", f"malignant score {score:.3f}"))
    return out


def queue_reason(sample) -> List[Reason]:
    """Why a ready sample is in the queue: its review reasons, or, when it has none, what is left to do."""
    if sample.needs_review and sample.review_reasons:
        return sample_reasons(sample.review_reasons)
    if sample.verdict is None:
        return [Reason("no readable field: the model gives no verdict", "no readable field")]
    how = "closed by hand" if sample.closed_by == "manual" else "no new field for a while"
    return [Reason(f"confident {sample.verdict} call: check and sign", f"ready ({how}); no review reason")]


__all__ = ["Reason", "domain_reasons", "field_reason", "field_review_reasons", "queue_reason", "sample_reasons"]

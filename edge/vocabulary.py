"""The words records are made of: labels, image and sample statuses, verdicts, stages. A module of its own
so the command line can build its options (and answer --help) without importing numpy, OpenCV or
SQLAlchemy."""

from enum import Enum
from typing import List, Optional

LABELS = ("Benign", "Early Pre-B", "Pre-B", "Pro-B")
BENIGN = "Benign"
# The refusal of a field without a plausible white cell: the classifier's, the pipeline's (which may add
# why, after a colon) and the review app's plain-words table all start with it.
NO_CELL = "no white cell found"
# A field whose white cell had merged with red cells as magenta as its nucleus (another lab's stain) and was
# carved out of them (edge/imaging/cells.py carve_merged): no validation field needed that, so the field is
# flagged with this (its domain reason) and the sample rule shows it without counting its score.
CARVED = "white cell carved from red cells as magenta as its nucleus: a stain unlike the validated slides"
# A field whose white cell was too pale for the stain bar and was found by its contrast to the field's red
# cells (edge/imaging/cells.py find_pale: washed out by the exposure, or a faded stain): flagged and not
# counted by the sample rule, as a carved one.
PALE = (
    "white cell paler than on the validated slides (overexposed or faded stain): found by its contrast to the red cells"
)
# A field with a cell whose embedding reads like an immature granulocyte's (edge/inference/granulocyte.py):
# answered, counted, and sent to review with this reason (and the read-out's figure after it).
GRANULOCYTE = "cell like an immature granulocyte (a myeloid precursor): myeloid cells were not validated"
# A field whose cells are unlike the primary laboratory's training cells by their nearest neighbours in the
# model's embedding (edge/inference/novelty.py; the domain monitor's cell_novelty): figures after it.
NOVEL = "cells unlike the validated laboratory's cells (another stain, optics or cell type)"


def optics_reasons(domain: Optional[str]) -> List[str]:
    """The parts of a row's recorded ``domain`` ("; "-joined) about the microscope, the stain or the cell
    search: all but a cell like an immature granulocyte, which is a finding about the patient."""
    return [p for p in (domain or "").split("; ") if p and not p.startswith(GRANULOCYTE)]


# A field whose glass is clipped white in every channel (the camera saturates; card preprocessing
# clipped_glass_review): answered, counted, and sent to review with this reason.
CLIPPED = "glass clipped white: the camera saturates and pale cells may be washed out (lower the lamp or exposure)"
# What a refusal the clipped glass caused adds after its reason (no white cell found, out of focus:
# edge/pipeline/quality.py), and what the review app's plain words recognise it by and keep.
CLIPPED_GLASS_HINT = "the glass is clipped white, pale cells may be washed out (lower the lamp or exposure)"


class Status(str, Enum):
    """What became of one file. A ``str``: it is stored, compared and printed as its value."""

    CLASSIFIED = "classified"  # the model answered
    UNREADABLE = "unreadable"  # an image, but the gate or the cell finder refused it (reason recorded)
    REJECTED = "rejected"  # not an image we may read (format, size, link, name; reason recorded)
    DUPLICATE = "duplicate"  # the same bytes as a recorded file: its answer, not a new field

    def __str__(self) -> str:
        return str(self.value)

    def __format__(self, spec: str) -> str:
        return format(str(self.value), spec)


STATUSES = tuple(s.value for s in Status)


class SampleStatus(str, Enum):
    """Where one sample is in its lifecycle, in the order it moves (:mod:`edge.store.samples`). A ``str``: it
    is stored, compared and printed as its value."""

    COLLECTING = "collecting"  # fields arriving
    READY = "ready"  # closed (by the rule or by hand), waiting for a reviewer
    SIGNED = "signed"  # a reviewer's sign-off; the verdict is final

    def __str__(self) -> str:
        return str(self.value)

    def __format__(self, spec: str) -> str:
        return format(str(self.value), spec)


SAMPLE_STATUSES = tuple(s.value for s in SampleStatus)
VERDICTS = ("benign", "malignant")
STAGES = ("queue", "decode", "quality", "preprocess", "inference", "store", "total")
ROLES = ("viewer", "reviewer", "admin")  # accounts of the review web app


def printable(text: str) -> str:
    """Control characters escaped: a newline in a file name must not start a forged line in the journal."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)

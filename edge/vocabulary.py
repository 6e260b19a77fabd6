"""The words records are made of: labels, statuses, verdicts, stages. A module of its own so the command
line can build its options (and answer --help) without importing numpy, OpenCV or SQLAlchemy."""

LABELS = ("Benign", "Early Pre-B", "Pre-B", "Pro-B")
BENIGN = "Benign"
STATUSES = ("classified", "unreadable", "rejected", "duplicate")
VERDICTS = ("benign", "malignant")
STAGES = ("queue", "decode", "quality", "preprocess", "inference", "store", "total")
ROLES = ("viewer", "reviewer", "admin")  # accounts of the review web app


def printable(text: str) -> str:
    """Control characters escaped: a newline in a file name must not start a forged line in the journal."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)

"""A sample's pure rules: what a sample id may be, which sample a file belongs to, and the verdict rule
over its fields' scores. No database here (the pipeline imports it on `classify --no-db`); the store's
aggregation is :mod:`edge.store.samples`."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import List, Optional, Sequence

from edge.vocabulary import CARVED, GRANULOCYTE, PALE, Status, optics_reasons

SAMPLE_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
STATISTICS = ("mean", "quantile", "fraction_malignant")


class SampleError(ValueError):
    """A bad sample id or a sample that cannot change as asked; ``str(err)`` is one line."""


def validate_sample_id(text: str) -> str:
    if not isinstance(text, str) or not SAMPLE_ID_RE.match(text) or ".." in text:
        raise SampleError(
            f"invalid sample id {text!r}: use 1-64 of A-Z a-z 0-9 . _ - , starting with a letter or digit, no '..'"
        )
    return text


def day_sample(when: datetime) -> str:
    return f"day-{when.strftime('%Y-%m-%d')}"


def sample_of(path: Path, inbox: Path, when: datetime) -> str:
    """The sample a file in the inbox belongs to; raises :class:`SampleError` for a folder name that is not a
    valid sample id (the pipeline records the file as rejected with that reason)."""
    rel = Path(path).relative_to(inbox)
    if len(rel.parts) == 1:
        return day_sample(when)
    if len(rel.parts) != 2:
        raise SampleError(f"{rel.parent} is nested too deep: a sample is one folder directly in the inbox")
    return validate_sample_id(rel.parts[0])


# ------------------------------------------------------------------------------------------- the rule
@dataclass(frozen=True)
class SampleRule:
    """The card's ``sample_rule``: how the fields' malignant scores become one sample verdict."""

    statistic: str  # mean | quantile | fraction_malignant (share of readable fields at/above field threshold)
    threshold: float  # the sample is malignant when statistic >= threshold
    review_band: tuple  # (lo, hi): a statistic inside it needs review
    min_readable: int  # fewer readable fields than this: needs review
    disagreement: float  # this share of fields confidently against the sample verdict: needs review
    q: float = 0.5
    field_threshold: float = 0.5

    @classmethod
    def from_card(cls, card_extra: dict, field_threshold: float) -> Optional[SampleRule]:
        raw = card_extra.get("sample_rule")
        if not raw:
            return None
        if raw.get("statistic") not in STATISTICS:
            raise ValueError(f"sample_rule.statistic {raw.get('statistic')!r} is not one of {', '.join(STATISTICS)}")
        return cls(
            statistic=raw["statistic"],
            threshold=float(raw["threshold"]),
            review_band=tuple(float(x) for x in raw["review_band"]),
            min_readable=int(raw["min_readable"]),
            disagreement=float(raw["disagreement"]),
            q=float(raw.get("q", 0.5)),
            field_threshold=float(raw.get("field_threshold", field_threshold)),
        )

    def statistic_of(self, scores: Sequence[float]) -> float:
        xs = sorted(scores)
        if self.statistic == "mean":
            return sum(xs) / len(xs)
        if self.statistic == "fraction_malignant":
            return sum(1 for x in xs if x >= self.field_threshold) / len(xs)
        pos = self.q * (len(xs) - 1)  # linear interpolation, as numpy.quantile's default
        lo = int(pos)
        hi = min(lo + 1, len(xs) - 1)
        return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)

    def to_dict(self) -> dict:
        return {
            "statistic": self.statistic,
            "q": self.q,
            "threshold": self.threshold,
            "review_band": list(self.review_band),
            "min_readable": self.min_readable,
            "disagreement": self.disagreement,
            "field_threshold": self.field_threshold,
        }


@dataclass
class SampleVerdict:
    fields: int
    readable: int
    verdict: Optional[str] = None
    score: Optional[float] = None
    needs_review: bool = True
    reasons: List[str] = field(default_factory=list)


def judge(
    statuses: Sequence[str],
    scores: Sequence[Optional[float]],
    rule: Optional[SampleRule],
    domains: Sequence[Optional[str]] = (),
) -> SampleVerdict:
    """The sample verdict from its fields (status, malignant score and domain-monitor reason of each,
    duplicates left out). A field whose white cell had to be carved out of red cells, or was found only by
    its contrast to the red cells (too pale for the stain bar), is shown to the reviewer but not counted:
    no validation field needed either search, so its score is no evidence either way (on BCCD's normal
    fields carved cells turned a benign sample malignant)."""
    domains = list(domains) + [None] * (len(statuses) - len(domains))
    answered = [st == Status.CLASSIFIED for st in statuses]
    carved = [a and CARVED in (d or "") for a, d in zip(answered, domains)]
    pale = [a and PALE in (d or "") for a, d in zip(answered, domains)]
    uncounted = [c or p for c, p in zip(carved, pale)]
    readable = [s for a, s, u in zip(answered, scores, uncounted) if a and s is not None and not u]
    out = SampleVerdict(fields=len(statuses), readable=len(readable))
    if any(carved):
        out.reasons.append(
            f"{sum(carved)} field(s) with a white cell carved from red cells: shown, not counted in the verdict"
        )
    if any(pale):
        out.reasons.append(
            f"{sum(pale)} field(s) with a white cell paler than on the validated slides: shown, not counted in the "
            "verdict"
        )
    counted = [d for a, d, u in zip(answered, domains, uncounted) if a and d and not u]
    granulocyte = [d for d in counted if GRANULOCYTE in d]
    if granulocyte:
        # Counted: the optics and the search were validated, the score stands; the cell itself is for a person.
        out.reasons.append(
            f"{len(granulocyte)} field(s) with a cell like an immature granulocyte: myeloid cells were not validated"
        )
    outside = [parts for parts in map(optics_reasons, counted) if parts]
    if outside:
        # The model was not validated on slides like these: its verdict is a hint, a person decides.
        out.reasons.append(
            f"outside the validated range on {len(outside)} of {len(readable)} readable fields: {outside[0][0]}"
        )
    if rule is None:
        out.reasons.append("the model card has no sample rule")
        return out
    if readable:
        out.score = round(rule.statistic_of(readable), 6)
        out.verdict = "malignant" if out.score >= rule.threshold else "benign"
    if len(readable) < rule.min_readable:
        out.reasons.append(f"only {len(readable)} readable field(s), the rule needs {rule.min_readable}")
    if out.score is not None:
        lo, hi = rule.review_band
        if lo <= out.score <= hi:
            out.reasons.append(f"score {out.score:.3f} is inside the review band {lo:.3f}-{hi:.3f}")
        against = sum(1 for s in readable if (s >= rule.field_threshold) != (out.verdict == "malignant"))
        if against and against / len(readable) >= rule.disagreement:
            out.reasons.append(f"{against} of {len(readable)} fields disagree with the sample verdict")
    out.needs_review = bool(out.reasons)
    return out


# ------------------------------------------------------------------------------------- persistence

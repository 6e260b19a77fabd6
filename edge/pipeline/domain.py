"""The domain monitor: is this field inside what the model was validated on?

A model validated on one laboratory's slides answers with the same confidence on anything, so every
field's measurements are compared with the model card's ``validated_range`` (set by the trainer from
the validation fields of every source it was validated on):

- magnification (the field's scale relative to the training scale, from its red cells),
- the glass colour before balancing (lamp, camera white balance, slide),
- the stained cells' colour before stain normalisation (LAB means: the stain),
- the cells' embedding distance to the training cells (the model's own features),
- the cells' novelty: how unlike the validated laboratory's training cells they are, by their nearest
  neighbours among them (:mod:`edge.inference.novelty`; cards from 3.7.0).

Outside any of them the field is recorded with ``needs_review`` and a plain reason ("magnification 4.8x
the training scale, validated 0.7-1.6x"), its sample needs review, and ``status`` and the review app say
that the microscope is outside the validated range. Inside, nothing is added. A card without a
``validated_range`` (models before 3.0) is not checked.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Dict, List, Optional, Sequence, Tuple

from edge.vocabulary import NOVEL

if TYPE_CHECKING:  # a name for annotations only: `serve` imports this module and must not load OpenCV (+17 MB)
    from edge.imaging.optics import Optics

# Names of the cell-colour statistics (LAB means of the stained pixels, float LAB).
_CELL_AXES = (("cell_l", "lightness"), ("cell_a", "red-violet (A)"), ("cell_b", "blue-yellow (B)"))


_GLASS_NAMES = {"glass_level": "brightness", "glass_rg": "red/green", "glass_bg": "blue/green"}


def _glass(glass_rgb: Sequence[float]) -> Dict[str, float]:
    """Glass level (lamp and exposure) and chromaticity (camera white balance, slide tint): R/G and B/G."""
    r, g, b = (float(v) for v in glass_rgb)
    return {"glass_level": (r + g + b) / 3.0, "glass_rg": r / max(g, 1.0), "glass_bg": b / max(g, 1.0)}


@dataclass(frozen=True)
class ValidatedRange:
    ranges: Dict[str, Tuple[float, float]]  # statistic -> (low, high), from the card
    sources: Tuple[str, ...] = ()

    @classmethod
    def from_card(cls, extra: dict) -> Optional[ValidatedRange]:
        vr = extra.get("validated_range")
        if not vr:
            return None
        return cls(
            ranges={k: (float(v[0]), float(v[1])) for k, v in vr["ranges"].items()},
            sources=tuple(vr.get("sources", ())),
        )

    def check(
        self,
        optics: Optional[Optics],
        cell_lab: Optional[Sequence[float]],
        distances: Sequence[float],
        novelty: Sequence[float] = (),
    ) -> List[str]:
        """Plain reasons the field lies outside the validated range; empty inside it."""
        out: List[str] = []
        r = self.ranges
        stats = statistics(
            optics.magnification if optics else None,
            optics.glass_rgb if optics else None,
            cell_lab,
            distances,
            novelty,
        )
        if optics is not None and optics.scale_source in ("cell", "assumed"):
            out.append(
                "magnification not measured: no red cells to measure it by ("
                + (
                    "guessed from the white cell's size"
                    if optics.scale_source == "cell"
                    else "set [optics] px_per_um for this microscope"
                )
                + ")"
            )
        elif optics is not None and self._outside("magnification", stats):
            lo, hi = r["magnification"]
            how = (
                "measured from its red cells"
                if optics.scale_source == "measured"
                else f"{optics.scale_source}, not measured"
            )
            out.append(
                f"magnification {optics.magnification:.1f}x the training scale ({how}), validated {lo:.1f}-{hi:.1f}x"
            )
        off = [k for k in _GLASS_NAMES if self._outside(k, stats)]
        if off:
            k = off[0]
            out.append(
                f"glass unlike the validated slides ({_GLASS_NAMES[k]} {stats[k]:.2f}, validated "
                f"{r[k][0]:.2f}-{r[k][1]:.2f}): another lamp, camera or slide"
            )
        off = [k for k, _ in _CELL_AXES if self._outside(k, stats)]
        if off:
            k = off[0]
            out.append(
                f"stain unlike the validated slides (cell {dict(_CELL_AXES)[k]} {stats[k]:.1f}, validated "
                f"{r[k][0]:.1f}-{r[k][1]:.1f})"
            )
        if (
            "embedding_distance" in stats
            and "embedding_distance" in r
            and stats["embedding_distance"] > r["embedding_distance"][1]
        ):
            out.append(
                f"cells unlike the validated cells (embedding distance {stats['embedding_distance']:.1f} "
                f"> {r['embedding_distance'][1]:.1f})"
            )
        if "cell_novelty" in stats and "cell_novelty" in r and stats["cell_novelty"] > r["cell_novelty"][1]:
            out.append(f"{NOVEL} (novelty {stats['cell_novelty']:.3f}, validated up to {r['cell_novelty'][1]:.3f})")
        return out

    def _outside(self, key: str, stats: Dict[str, float]) -> bool:
        return key in stats and key in self.ranges and not self.ranges[key][0] <= stats[key] <= self.ranges[key][1]


def statistics(
    magnification: Optional[float],
    glass_rgb: Optional[Sequence[float]],
    cell_lab: Optional[Sequence[float]],
    distances: Sequence[float],
    novelty: Sequence[float] = (),
) -> Dict[str, float]:
    """The monitored statistics of one field (what the trainer collects to set the range)."""
    out: Dict[str, float] = {}
    if magnification is not None:
        out["magnification"] = float(magnification)
    if glass_rgb is not None:
        out.update(_glass(glass_rgb))
    if cell_lab is not None:
        out.update({k: float(v) for (k, _), v in zip(_CELL_AXES, cell_lab[:3])})
    if distances:
        out["embedding_distance"] = float(sorted(distances)[len(distances) // 2])
    if novelty:
        out["cell_novelty"] = float(sorted(novelty)[len(novelty) // 2])
    return out


def fit_range(
    rows: Sequence[Dict[str, float]], lo_q: float = 0.005, hi_q: float = 0.995, margin: float = 0.05
) -> Dict[str, List[float]]:
    """Each statistic's validated interval: the validation fields' 0.5-99.5 % quantiles, widened by
    ``margin`` of their span (so the validation fields themselves are not flagged by rounding)."""
    import numpy as np

    keys = sorted({k for r in rows for k in r})
    out = {}
    for k in keys:
        v = np.array([r[k] for r in rows if k in r], np.float64)
        if v.size < 10:
            continue
        lo, hi = np.quantile(v, lo_q), np.quantile(v, hi_q)
        pad = (hi - lo) * margin
        out[k] = [round(float(lo - pad), 3), round(float(hi + pad), 3)]
    return out


@dataclass
class DomainSummary:
    """The microscope's recent fields against the validated range (``status``, the review app)."""

    fields: int  # recent classified fields with optics measured
    outside: int  # of those, outside the validated range
    reason: Optional[str]  # the most common first reason among them
    magnification: Optional[float]  # median magnification of the recent fields

    def describe(self) -> str:
        """One line, or two (the reason) when outside the range."""
        if not self.fields:
            return "no field measured yet"
        mag = f"magnification {self.magnification:.1f}x the training scale; " if self.magnification else ""
        if not self.outside:
            return f"{mag}inside the validated range ({self.fields} recent fields)"
        return f"OUTSIDE the validated range ({self.outside} of {self.fields} recent fields): to review\n{self.reason}"

    def to_dict(self) -> dict:
        return {
            "fields": self.fields,
            "outside": self.outside,
            "reason": self.reason,
            "magnification": self.magnification,
        }


def recent(store, n: int = 50) -> DomainSummary:
    """The last ``n`` classified fields of this device."""
    from collections import Counter

    from sqlalchemy import select

    from edge.store.schema import images
    from edge.vocabulary import Status, optics_reasons

    q = (
        select(images.c.magnification, images.c.domain)
        .where(
            images.c.status == Status.CLASSIFIED,
            images.c.device_id == store.device(),
            images.c.magnification.is_not(None),
        )
        .order_by(images.c.recorded_at.desc())
        .limit(n)
    )
    with store.engine.connect() as conn:
        rows = conn.execute(q).all()
    if not rows:
        return DomainSummary(0, 0, None, None)
    mags = sorted(float(r.magnification) for r in rows)
    # A cell like an immature granulocyte is a finding about the patient, not the microscope.
    reasons = Counter(parts[0] for parts in (optics_reasons(r.domain) for r in rows) if parts)
    return DomainSummary(
        fields=len(rows),
        outside=sum(reasons.values()),
        reason=reasons.most_common(1)[0][0] if reasons else None,
        magnification=round(mags[len(mags) // 2], 2),
    )

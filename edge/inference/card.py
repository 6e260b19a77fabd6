"""The model card: the JSON beside a .tflite that says what the model expects and how to read its answers.

The core keys (labels, preprocessing, threshold, review band) and the rules the device applies are typed:
checked when the card is loaded (a malformed one fails the load) and parsed from ``extra`` when read: the
quality gate, the sample rule, the cell rule, the out-of-distribution reference, the immature-granulocyte
check, the novelty reference and the validated range (:data:`SECTIONS`). A card without one of them gets
its documented default (no gate of its own, no sample rule, the geometric mean, no OOD reference, no
granulocyte check, no novelty, no domain monitor), so older cards still load. Everything else (metrics,
training, lineage, ...) stays in ``extra`` as written, sections included, so a card read and saved again is
unchanged; the trainer writes a section with :meth:`ModelCard.set_section`, which parses it at once.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, List, Mapping, Optional, Tuple

from edge.imaging.preprocess import PreprocessParams, UnknownPreprocessing
from edge.pipeline.domain import ValidatedRange
from edge.store.samplerule import SampleRule
from edge.vocabulary import BENIGN

__all__ = [
    "CARD_SCHEMA",
    "CELL_RULES",
    "DEFAULT_CELL_RULE",
    "DEFAULT_MODEL",
    "MODELS_DIR",
    "SECTIONS",
    "GranulocyteSpec",
    "ModelCard",
    "ModelLoadError",
    "NoveltySpec",
    "OodSpec",
    "QualityGate",
    "card_path_for",
    "companion",
    "load_card",
    "sha256_file",
]

CARD_SCHEMA = 1
MODELS_DIR = Path(__file__).resolve().parent.parent / "models"  # edge/models, not edge/inference/models
DEFAULT_MODEL = MODELS_DIR / "edge-screen-mnv2-int8.tflite"
CELL_RULES = ("geometric-mean", "most-malignant")
DEFAULT_CELL_RULE = "geometric-mean"
# How many orientations of each cell crop the model scores (identity; + left-right mirror; + up-down mirror
# and the half turn): a white cell has no "up", so its answer should not depend on how it lies.
CELL_VIEWS = (1, 2, 4)
# The typed sections of a card, in the order they are parsed.
SECTIONS = (
    "quality_gate",
    "sample_rule",
    "cell_rule",
    "cell_views",
    "ood",
    "granulocyte_check",
    "novelty",
    "validated_range",
)
_CORE = (
    "card_schema",
    "name",
    "version",
    "sha256",
    "labels",
    "input_mode",
    "preprocessing",
    "threshold",
    "review_band",
)


class ModelLoadError(RuntimeError):
    """The model or its card is missing, corrupt, or asks for something this code does not know."""


@dataclass(frozen=True)
class QualityGate:
    """The card's ``quality_gate``: where the trainer's cell tests found the model starts failing. The
    device's gate is the config's thresholds tightened to these, never loosened; a key the card leaves out
    (or a card without the section) leaves the config's threshold as it is."""

    min_focus: Optional[float] = None
    min_brightness: Optional[float] = None
    max_brightness: Optional[float] = None

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> QualityGate:
        return cls(
            **{k: None if d.get(k) is None else float(d[k]) for k in ("min_focus", "min_brightness", "max_brightness")}
        )


@dataclass(frozen=True)
class OodSpec:
    """The card's ``ood``: the out-of-distribution reference file beside the model and its sha256."""

    file: str
    sha256: Optional[str] = None

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> OodSpec:
        sha = d.get("sha256")
        return cls(file=str(d["file"]), sha256=None if sha is None else str(sha))


@dataclass(frozen=True)
class NoveltySpec:
    """The card's ``novelty``: the file of the primary source's reference cells beside the model (its
    sha256). The level that sends a field to review is the validated range's ``cell_novelty``."""

    file: str
    sha256: str

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> NoveltySpec:
        return cls(file=str(d["file"]), sha256=str(d["sha256"]))


@dataclass(frozen=True)
class GranulocyteSpec:
    """The card's ``granulocyte_check``: the file of the linear read-out beside the model (its sha256) and
    the level at or above which a cell is sent to review as like an immature granulocyte."""

    file: str
    sha256: str
    threshold: float

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> GranulocyteSpec:
        return cls(file=str(d["file"]), sha256=str(d["sha256"]), threshold=float(d["threshold"]))


def _cell_rule(value: Any) -> str:
    if value is None:
        return DEFAULT_CELL_RULE
    if value not in CELL_RULES:
        raise ModelLoadError(f"unknown cell_rule {value!r} in the model card (known: {', '.join(CELL_RULES)})")
    return str(value)


def _cell_views(value: Any) -> int:
    if value is None:
        return 1
    if isinstance(value, bool) or value not in CELL_VIEWS:
        raise ModelLoadError(f"cell_views {value!r} in the model card is not one of {', '.join(map(str, CELL_VIEWS))}")
    return int(value)


@dataclass
class ModelCard:
    name: str
    version: str
    sha256: str
    labels: List[str]
    input_mode: str
    preprocessing: PreprocessParams
    threshold: float  # malignant score at or above which the verdict is "malignant"
    review_band: Tuple[float, float]  # scores in [lo, hi) need a human
    # The card beyond the core keys, as written (metrics, ablation, lineage, ... and the sections' JSON).
    extra: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name in SECTIONS:  # now, so that a malformed section fails the load, not the first field
            self._section(name)

    def _section(self, name: str) -> Any:
        """The typed value of one section, parsed from ``extra`` as it is now (each is a few keys: the
        trainer may replace a section, and nothing cached can go stale)."""
        raw = self.extra.get(name)
        if name == "quality_gate":
            return QualityGate.from_dict(raw or {})
        if name == "sample_rule":
            return SampleRule.from_card(self.extra, self.threshold)  # field_threshold defaults to the card's
        if name == "cell_rule":
            return _cell_rule(raw)
        if name == "cell_views":
            return _cell_views(raw)
        if name == "ood":
            return OodSpec.from_dict(raw) if raw else None
        if name == "granulocyte_check":
            return GranulocyteSpec.from_dict(raw) if raw else None
        if name == "novelty":
            return NoveltySpec.from_dict(raw) if raw else None
        return ValidatedRange.from_card(self.extra)

    @property
    def quality_gate(self) -> QualityGate:
        """Where the model starts failing; empty (all None) when the card has no ``quality_gate``."""
        return self._section("quality_gate")

    @property
    def sample_rule(self) -> Optional[SampleRule]:
        """How the fields' scores become one sample verdict; None when the card has no ``sample_rule``."""
        return self._section("sample_rule")

    @property
    def cell_rule(self) -> str:
        """How a field's cells become one answer; the geometric mean when the card names none."""
        return self._section("cell_rule")

    @property
    def cell_views(self) -> int:
        """Orientations of each cell crop scored and geometric-averaged (CELL_VIEWS); 1 when the card names none."""
        return self._section("cell_views")

    @property
    def ood(self) -> Optional[OodSpec]:
        """The out-of-distribution reference; None when the card has none (no cell is set aside)."""
        return self._section("ood")

    @property
    def granulocyte_check(self) -> Optional[GranulocyteSpec]:
        """The immature-granulocyte read-out of the embedding; None when the card has none (nothing flagged)."""
        return self._section("granulocyte_check")

    @property
    def novelty(self) -> Optional[NoveltySpec]:
        """The primary source's reference cells for the monitor's novelty; None when the card has none."""
        return self._section("novelty")

    @property
    def validated_range(self) -> Optional[ValidatedRange]:
        """What the model was validated on (the domain monitor); None when the card has none (not checked)."""
        return self._section("validated_range")

    def set_section(self, name: str, value: Any) -> None:
        """Write one typed section (its JSON value; None removes it) and parse it, as loading would."""
        if name not in SECTIONS:
            raise KeyError(f"{name!r} is not a typed card section (those are {', '.join(SECTIONS)})")
        if value is None:
            self.extra.pop(name, None)
        else:
            self.extra[name] = value
        self._section(name)

    def to_dict(self) -> dict:
        d = dict(self.extra)
        d.update(
            card_schema=CARD_SCHEMA,
            name=self.name,
            version=self.version,
            sha256=self.sha256,
            labels=list(self.labels),
            input_mode=self.input_mode,
            preprocessing=self.preprocessing.to_dict(),
            threshold=self.threshold,
            review_band=list(self.review_band),
        )
        return d

    @classmethod
    def from_dict(cls, d: dict) -> ModelCard:
        try:
            if d.get("card_schema") != CARD_SCHEMA:
                raise ModelLoadError(f"model card schema {d.get('card_schema')!r} is not {CARD_SCHEMA}")
            pre = PreprocessParams.from_dict(d["preprocessing"])
            if pre.input_mode != d["input_mode"]:
                raise ModelLoadError("model card input_mode disagrees with its preprocessing parameters")
            lo, hi = (float(x) for x in d["review_band"])
            card = cls(
                name=str(d["name"]),
                version=str(d["version"]),
                sha256=str(d["sha256"]),
                labels=[str(x) for x in d["labels"]],
                input_mode=str(d["input_mode"]),
                preprocessing=pre,
                threshold=float(d["threshold"]),
                review_band=(lo, hi),
                extra={k: v for k, v in d.items() if k not in _CORE},
            )
        except UnknownPreprocessing as e:
            raise ModelLoadError(f"model card: {e}") from e
        except (KeyError, TypeError, ValueError) as e:
            raise ModelLoadError(f"model card is malformed: {type(e).__name__}: {e}") from e
        if BENIGN not in card.labels:
            raise ModelLoadError(f"model card labels {card.labels} have no {BENIGN!r} class")
        if not 0.0 <= lo <= card.threshold <= hi <= 1.0:
            raise ModelLoadError(f"review band {card.review_band} must contain the threshold {card.threshold}")
        return card

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=2, sort_keys=False) + "\n")


def card_path_for(model_path: str | Path) -> Path:
    return Path(model_path).with_suffix(".json")


def load_card(path: str | Path) -> ModelCard:
    path = Path(path)
    try:
        d = json.loads(path.read_text())
    except FileNotFoundError:
        raise ModelLoadError(f"model card not found: {path}") from None
    except (OSError, ValueError) as e:
        raise ModelLoadError(f"model card {path} is not valid JSON: {e}") from None
    return ModelCard.from_dict(d)


def companion(model_path: Path, file: str, sha256: Optional[str], what: str) -> Path:
    """A file the card names beside the model (the OOD reference, the granulocyte check, the novelty
    reference), checked: there, and the bytes the card's sha256 says. ``what`` names it in the error."""
    path = model_path.parent / file
    if not path.is_file():
        raise ModelLoadError(f"{what} not found: {path}")
    if sha256_file(path) != sha256:
        raise ModelLoadError(f"{what} {path.name} does not match the card's sha256")
    return path


def sha256_file(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()

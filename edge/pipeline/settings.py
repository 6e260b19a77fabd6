"""What a :class:`edge.pipeline.stages.Pipeline` runs with, typed and built once from the config and the model
card: the daemon builds it in :mod:`edge.daemon.startup` (on start and on every reload), ``classify`` and
``bench`` for their own runs. The pipeline never reads the config itself.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Optional

from edge.config import Config
from edge.imaging.preprocess import OpticsSettings
from edge.pipeline import quality
from edge.pipeline.domain import ValidatedRange
from edge.store.samplerule import SampleRule

if TYPE_CHECKING:
    from edge.inference.card import ModelCard


@dataclass(frozen=True)
class PipelineSettings:
    gate: quality.Thresholds  # the config's [quality] thresholds, tightened to the card's quality gate
    optics: OpticsSettings  # the config's [optics]
    sample_rule: Optional[SampleRule]  # the card's; None: samples are collected without a verdict
    validated: Optional[ValidatedRange]  # the card's; None: the domain monitor is off
    max_file_bytes: int  # larger files are rejected unread
    inbox: Optional[Path] = None  # files inside it belong to a sample (its folder) and stay inside it
    move_after: bool = False  # move each file to done_dir / rejected_dir after its commit
    done_dir: Path = Path("done")
    rejected_dir: Path = Path("rejected")
    # Polling only (inotify reports the writer's close): a file that reads as truncated and was written
    # to less than this long ago is probably still arriving, so it is watched again, not recorded.
    defer_incomplete_s: float = 0.0

    @classmethod
    def of(cls, cfg: Config, card: ModelCard, inbox: Optional[Path] = None, daemon: bool = False) -> PipelineSettings:
        """The settings for ``card`` under ``cfg``. ``daemon=True``: the daemon's inbox, after and polling
        settings; otherwise files given now (``inbox`` only when they stand for an inbox, as in ``bench``)."""
        d = cfg.daemon
        if daemon:
            inbox = d.inbox
        return cls(
            gate=quality.stricter(cfg.quality, card.quality_gate),
            optics=OpticsSettings(px_per_um=cfg.optics.px_per_um or None, scale_source=cfg.optics.scale_source),
            sample_rule=card.sample_rule,
            validated=card.validated_range,
            max_file_bytes=d.max_file_bytes,
            inbox=Path(inbox).resolve() if inbox else None,
            move_after=daemon and d.after == "move",
            done_dir=d.done_dir,
            rejected_dir=d.rejected_dir,
            defer_incomplete_s=d.incomplete_wait_s if daemon and d.observer == "polling" else 0.0,
        )

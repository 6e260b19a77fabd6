"""The pipeline's typed settings: built once from the config and the model card."""

from pathlib import Path

from edge.config import config_from_dict
from edge.inference.card import DEFAULT_MODEL, card_path_for, load_card
from edge.pipeline.settings import PipelineSettings


def test_daemon_settings_come_from_config_and_card(tmp_path):
    card = load_card(card_path_for(DEFAULT_MODEL))
    cfg = config_from_dict(
        {
            "daemon": {"inbox": "in", "after": "move", "observer": "polling", "incomplete_wait_s": 7.0},
            "quality": {"min_focus": 0.5, "max_brightness": 255.0},
            "optics": {"px_per_um": 3.5},
        },
        base_dir=tmp_path,
    )
    s = PipelineSettings.of(cfg, card, daemon=True)
    assert s.inbox == (tmp_path / "in").resolve() and s.move_after and s.defer_incomplete_s == 7.0
    assert s.done_dir == cfg.daemon.done_dir and s.max_file_bytes == cfg.daemon.max_file_bytes
    gate = card.quality_gate
    assert gate.min_focus is not None and gate.max_brightness is not None
    assert s.gate.min_focus == max(0.5, gate.min_focus) and s.gate.max_brightness == min(255.0, gate.max_brightness)
    assert s.optics.px_per_um == 3.5 and s.sample_rule == card.sample_rule and s.validated == card.validated_range


def test_files_given_now_are_not_moved_nor_deferred(tmp_path):
    card = load_card(card_path_for(DEFAULT_MODEL))
    cfg = config_from_dict({"daemon": {"after": "move", "observer": "polling"}}, base_dir=tmp_path)
    s = PipelineSettings.of(cfg, card)
    assert (s.inbox, s.move_after, s.defer_incomplete_s, s.optics.px_per_um) == (None, False, 0.0, None)
    assert PipelineSettings.of(cfg, card, inbox=Path("x")).inbox == Path("x").resolve()

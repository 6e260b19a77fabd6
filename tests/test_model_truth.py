"""`model rollback` and `model list` tell the truth (issue 14, item 15): the bundled model is what the first
install replaced, so rollback goes back to it; a model retrained with --corrections says so in its
version and its card's lineage, and `model list` shows it beside the bundled one.

Real parts: the shipped model file, `edge-screen model ...` as subprocesses, the daemon's own model path.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from daemon_support import cli

from edge.config import load_config
from edge.inference.classifier import DEFAULT_MODEL, card_path_for, load_card, model_files
from edge.inference.modelstore import model_in_use
from trainer.corrections import corrected_version, lineage


def _config(tmp_path: Path) -> Path:
    cfg = tmp_path / "edge.toml"
    cfg.write_text(f'[model]\ninstall_dir = "{tmp_path / "inst"}"\n')
    return cfg


def _model(tmp_path: Path, version: str, extra: dict) -> Path:
    """The shipped model's file with its card relabelled, as `edge-screen-train train` would write it."""
    dest = tmp_path / "new"
    dest.mkdir()
    for f in model_files(DEFAULT_MODEL):
        shutil.copyfile(f, dest / f.name)
    card = json.loads(card_path_for(DEFAULT_MODEL).read_text())
    card.update(version=version, **extra)
    card_path_for(dest / DEFAULT_MODEL.name).write_text(json.dumps(card))
    return dest / DEFAULT_MODEL.name


def test_rollback_after_the_first_install_goes_back_to_the_bundled_model(tmp_path):
    cfg = _config(tmp_path)
    r = cli("model", "rollback", "--config", str(cfg), check=False)
    assert r.returncode == 3 and "no model installed" in r.stderr and "bundled model is in use" in r.stderr
    new = _model(tmp_path, "3.0.1-test", {})
    assert "installed" in cli("model", "install", str(new), "--config", str(cfg)).stdout
    assert model_in_use(load_config(str(cfg)).model) != DEFAULT_MODEL
    listed = json.loads(cli("model", "list", "--format", "json", "--config", str(cfg)).stdout)["models"]
    assert [(m["version"], m["current"], m["previous"], m["bundled"]) for m in listed] == [
        ("3.0.1-test", True, False, False),
        (load_card(card_path_for(DEFAULT_MODEL)).version, False, True, True),
    ]
    r = cli("model", "rollback", "--config", str(cfg), check=False)
    assert r.returncode == 0, r.stderr  # it said "no previous model to roll back to" (exit 3)
    assert "the bundled model" in r.stdout and str(DEFAULT_MODEL) in r.stdout
    assert model_in_use(load_config(str(cfg)).model) == DEFAULT_MODEL  # what the daemon loads on its next SIGHUP
    text = cli("model", "list", "--config", str(cfg)).stdout
    assert "* edge-screen-mnv2-int8" in text and "(bundled)" in text.split("*")[1].splitlines()[0]
    r = cli("model", "rollback", "--config", str(cfg))  # and forward again
    assert "3.0.1-test" in r.stdout and model_in_use(load_config(str(cfg)).model).parent.parent == tmp_path / "inst"


def test_a_model_retrained_with_corrections_says_so_in_its_version_card_and_list(tmp_path):
    base = load_card(card_path_for(DEFAULT_MODEL)).to_dict()
    info = {"used": 12, "sha256": "ab12cd34" + "0" * 56, "databases": ["/var/lib/pi-1.sqlite", "pi-2.sqlite"]}
    version = corrected_version(base["version"], info)
    assert version == f"{base['version']}+corrections.12.ab12cd34" and version != base["version"]
    assert corrected_version("4.1.0+clinic.7", info) == "4.1.0+clinic.7"  # the user's own build metadata
    card_lineage = lineage(info, base)
    assert card_lineage["base"] == {k: base[k] for k in ("name", "version", "sha256")}
    assert card_lineage["corrections"] == {
        "used": 12,
        "sha256": info["sha256"],
        "databases": ["pi-1.sqlite", "pi-2.sqlite"],
    }
    cfg = _config(tmp_path)
    new = _model(tmp_path, version, {"lineage": card_lineage})
    out = cli("model", "install", str(new), "--config", str(cfg)).stdout
    assert version in out  # its own version, not the bundled model's
    installed = next((tmp_path / "inst").glob("*/*.tflite"))
    assert version in installed.parent.name
    text = cli("model", "list", "--config", str(cfg)).stdout
    assert f"* edge-screen-mnv2-int8 {version}" in text
    assert "retrained with 12 reviewer field correction(s) from pi-1.sqlite, pi-2.sqlite" in text
    assert f"recipe of {base['name']} {base['version']}" in text
    listed = json.loads(cli("model", "list", "--format", "json", "--config", str(cfg)).stdout)["models"]
    assert listed[0]["lineage"] == card_lineage and listed[1]["bundled"] and listed[1]["lineage"] is None


def test_with_nothing_installed_the_bundled_model_is_listed_as_current(tmp_path):
    cfg = _config(tmp_path)
    text = cli("model", "list", "--config", str(cfg)).stdout
    assert text.startswith("* edge-screen-mnv2-int8") and "(bundled)" in text.splitlines()[0]
    assert "no models installed" in text


def test_the_evaluation_report_names_the_lineage():
    from trainer.report import lineage_lines

    base = load_card(card_path_for(DEFAULT_MODEL)).to_dict()
    info = {"used": 3, "sha256": "cd" * 32, "databases": ["pi-1.sqlite"]}
    (line,) = lineage_lines(lineage(info, base))
    assert "retrained with 3 reviewer field correction(s) from pi-1.sqlite" in line
    assert f"base {base['name']} {base['version']}" in line and "cdcdcdcdcdcd" in line
    assert lineage_lines(None) == []

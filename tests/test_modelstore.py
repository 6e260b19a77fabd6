"""Installed models: checked install, atomic current.json, rollback, and the daemon's model path follows it."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from edge.config import config_from_dict
from edge.inference.classifier import (
    DEFAULT_MODEL,
    ModelLoadError,
    card_path_for,
    classifier_from_config,
    model_files,
)
from edge.inference.modelstore import CURRENT, ModelStore, ModelStoreError, current_model, model_in_use
from edge.inference.ood import ood_path_for


def _copy_model(dest: Path, version: str | None = None, tamper: bool = False) -> Path:
    """The shipped model under another folder; ``version`` relabels its card, ``tamper`` flips one byte."""
    dest.mkdir(parents=True)
    tfl = dest / DEFAULT_MODEL.name
    for f in model_files(DEFAULT_MODEL):
        shutil.copyfile(f, dest / f.name)
    if version:
        card = json.loads(card_path_for(tfl).read_text())
        card["version"] = version
        card_path_for(tfl).write_text(json.dumps(card))
    if tamper:
        data = bytearray(tfl.read_bytes())
        data[len(data) // 2] ^= 0xFF
        tfl.write_bytes(bytes(data))
    return tfl


@pytest.fixture(scope="module")
def two_models(tmp_path_factory):
    base = tmp_path_factory.mktemp("models")
    return _copy_model(base / "a", "2.0.0"), _copy_model(base / "b", "2.0.1-test")


def _snapshot(root: Path) -> dict:
    return {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def test_install_copies_checked_model_and_makes_it_current(tmp_path, two_models):
    a, _ = two_models
    store = ModelStore(tmp_path / "inst")
    m = store.install(a)
    assert m.current and m.version == "2.0.0"
    assert store.current() == m.path and m.path.parent.parent == tmp_path / "inst"
    names = {f.name for f in m.path.parent.iterdir()}
    assert names == {f.name for f in model_files(a)} >= {a.name, card_path_for(a).name, ood_path_for(a).name}
    pointer = json.loads((tmp_path / "inst" / CURRENT).read_text())
    assert pointer["previous"] is None and not Path(pointer["current"]).is_absolute()
    assert not [p for p in (tmp_path / "inst").iterdir() if p.name.startswith(".")]  # no temp leftovers


def test_tampered_model_refused_and_nothing_changed(tmp_path, two_models):
    a, _ = two_models
    store = ModelStore(tmp_path / "inst")
    store.install(a)
    before = _snapshot(tmp_path / "inst")
    bad = _copy_model(tmp_path / "bad", "9.9.9", tamper=True)
    with pytest.raises(ModelLoadError) as e:
        store.install(bad)
    assert "sha256" in str(e.value) and "\n" not in str(e.value)
    assert _snapshot(tmp_path / "inst") == before


def test_rollback_restores_previous_and_swaps(tmp_path, two_models):
    a, b = two_models
    store = ModelStore(tmp_path / "inst")
    with pytest.raises(ModelStoreError):
        store.rollback()  # nothing installed
    ia = store.install(a)
    back = store.rollback()  # issue 14: the bundled model was in use before the first install
    assert back.bundled and back.path == DEFAULT_MODEL and store.current() is None
    assert store.rollback().path == ia.path and store.current() == ia.path  # and forward again
    ib = store.install(b)
    assert store.current() == ib.path
    listed = {m.version: m for m in store.list()}
    assert listed["2.0.1-test"].current and listed["2.0.0"].previous
    assert store.rollback().path == ia.path and store.current() == ia.path
    assert store.rollback().path == ib.path  # rolling back twice is the way forward again
    store.install(b)  # re-installing the current model keeps the previous one
    assert {m.version for m in store.list() if m.previous} == {"2.0.0"}


def test_classifier_from_config_follows_current_json(tmp_path, two_models):
    a, b = two_models
    cfg = config_from_dict({"model": {"install_dir": "inst"}}, base_dir=tmp_path)
    assert cfg.model.install_dir == tmp_path / "inst"
    assert model_in_use(cfg.model) == DEFAULT_MODEL  # nothing installed: the bundled model
    store = ModelStore(cfg.model.install_dir)
    store.install(a)
    ib = store.install(b)
    clf = classifier_from_config(cfg)
    assert clf.path == ib.path and clf.card.version == "2.0.1-test"
    store.rollback()
    assert classifier_from_config(cfg).card.version == "2.0.0"  # what a SIGHUP reload now loads
    pinned = config_from_dict({"model": {"install_dir": "inst", "path": str(DEFAULT_MODEL)}}, base_dir=tmp_path)
    assert model_in_use(pinned.model) == DEFAULT_MODEL  # model.path set by hand wins


def test_broken_current_json_is_a_model_error(tmp_path):
    (tmp_path / CURRENT).write_text("{not json")
    with pytest.raises(ModelLoadError):
        current_model(tmp_path)


def _cli(tmp_path: Path, *args: str):
    from edge.cli.app import main

    cfg = tmp_path / "edge.toml"
    if not cfg.exists():
        cfg.write_text(f'[model]\ninstall_dir = "{tmp_path / "inst"}"\n')
    return CliRunner().invoke(main, ["model", *args, "--config", str(cfg)])


def test_cli_exit_codes(tmp_path, two_models):
    a, b = two_models
    r = _cli(tmp_path, "rollback")
    assert r.exit_code == 3 and "no model installed" in r.stderr
    bad = _copy_model(tmp_path / "bad", tamper=True)
    r = _cli(tmp_path, "install", str(bad))
    assert r.exit_code == 3 and len(r.stderr.strip().splitlines()) == 1 and "sha256" in r.stderr
    assert not (tmp_path / "inst" / CURRENT).exists()
    r = _cli(tmp_path, "install", str(tmp_path / "nope.tflite"))
    assert r.exit_code == 3 and "not found" in r.stderr
    for m in (a, b):
        r = _cli(tmp_path, "install", str(m))
        assert r.exit_code == 0 and "systemctl reload edge-screen" in r.output, r.output
    r = _cli(tmp_path, "list", "--format", "json")
    assert r.exit_code == 0
    d = json.loads(r.stdout)
    assert [m["version"] for m in d["models"] if m["current"]] == ["2.0.1-test"]
    assert d["in_use"].endswith(DEFAULT_MODEL.name) and "2.0.1-test" in d["in_use"]
    r = _cli(tmp_path, "rollback")
    assert r.exit_code == 0 and "2.0.0" in r.output

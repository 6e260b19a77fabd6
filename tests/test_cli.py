"""The command line: config errors name the key, classify --json fields, status, --help everywhere."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import datetime, timezone

import click
import pytest
from click.testing import CliRunner
from daemon_support import ROOT, cli, model_path, write_config  # noqa: F401

from edge.cli import app as edge_cli
from edge.imaging import synthetic
from trainer import cli as trainer_cli


def _commands(group: click.Command, path: tuple = ()) -> list:
    """Every command and subcommand under ``group``, as argument paths."""
    out = [path]
    if isinstance(group, click.Group):
        for name, sub in sorted(group.commands.items()):
            out += _commands(sub, path + (name,))
    return out


ALL_COMMANDS = [("edge-screen", p) for p in _commands(edge_cli.main)] + [
    ("edge-screen-train", p) for p in _commands(trainer_cli.main)
]


@pytest.mark.parametrize("prog, path", ALL_COMMANDS, ids=lambda c: " ".join(c) if isinstance(c, tuple) else c)
def test_every_command_has_help(prog, path):
    """Walks the click tree, so a new command is covered without touching this test."""
    group = edge_cli.main if prog == "edge-screen" else trainer_cli.main
    r = CliRunner().invoke(group, [*path, "--help"], prog_name=prog)
    assert r.exit_code == 0, r.output
    assert r.output.startswith("Usage: " + " ".join((prog, *path)))
    cmd = group
    for name in path:
        cmd = cmd.commands[name]
    assert (cmd.help or cmd.short_help or "").strip(), f"{prog} {' '.join(path)} has no help text"


def test_serve_help_names_how_to_reach_other_machines():
    """Binding beyond loopback is a deliberate act: serve's help says which flag does it."""
    r = CliRunner().invoke(edge_cli.main, ["serve", "--help"], prog_name="edge-screen")
    assert r.exit_code == 0 and "--allow-remote" in r.output


def test_every_command_defined_is_in_the_tree():
    """The help test walks the tree; a command defined in a module but never added to it (a new
    ``edge/cli/*.py`` missing from ``_register_plugins``, a forgotten ``COMMANDS`` entry) would escape it."""
    import importlib
    import pkgutil

    import edge.cli

    def walk(cmd: click.Command) -> list:
        subs = cmd.commands.values() if isinstance(cmd, click.Group) else ()
        return [cmd, *(c for s in subs for c in walk(s))]

    in_tree = {id(c) for c in walk(edge_cli.main) + walk(trainer_cli.main)}
    mods = [
        importlib.import_module(f"{pkg.__name__}.{m.name}")
        for pkg in (edge.cli, trainer_cli)
        for m in pkgutil.iter_modules(pkg.__path__)
        if m.name != "__main__"  # running it runs the command line
    ]
    defined = {
        f"{mod.__name__}.{name}": obj
        for mod in [*mods, trainer_cli]
        for name, obj in vars(mod).items()
        if isinstance(obj, click.Command)
    }
    assert defined
    missing = sorted(k for k, c in defined.items() if id(c) not in in_tree)
    assert not missing, f"defined but not reachable from the command line: {missing}"


def test_help_from_the_installed_entry_point():
    p = cli("--help")
    assert "Usage:" in p.stdout and "run" in p.stdout


def test_the_entry_point_s_quick_exit_waits_for_a_thread_still_running():
    """edge.cli.main ends the process without the interpreter's teardown only when nothing else runs: with
    a thread still running it takes the ordinary exit (SystemExit, which waits for the thread)."""
    code = (
        "import threading, edge.cli as c\n"
        "release = threading.Event()\n"
        "worker = threading.Thread(target=release.wait)\n"
        "worker.start()\n"
        "try:\n"
        "    c.main(['--help'])\n"
        "except SystemExit as e:\n"
        "    print('ordinary exit', e.code)\n"
        "release.set()\n"
        "worker.join()\n"
    )
    p = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    assert p.stdout.startswith("Usage: edge-screen") and p.stdout.rstrip().endswith("ordinary exit 0")


def test_start_up_objects_are_set_aside_from_the_collector_only_in_a_process_of_its_own():
    """long_lived pauses the cyclic collector and freezes what was made, leaving it on afterwards; in a
    process that did not start through the entry point (tests, scripts) it does nothing."""
    code = (
        "import gc, sys\n"
        "from edge.cli import common\n"
        "if sys.argv[1] == 'own':\n"
        "    common.own_process()\n"
        "with common.long_lived():\n"
        "    paused = not gc.isenabled()\n"
        "    kept = [[i] for i in range(5000)]\n"
        "print(paused, gc.get_freeze_count() >= 5000, gc.isenabled())\n"
    )
    run = [sys.executable, "-c", code]
    own = subprocess.run([*run, "own"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    other = subprocess.run([*run, "other"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert own.stdout.split() == ["True", "True", "True"], own.stderr
    assert other.stdout.split() == ["False", "False", "True"], other.stderr


def test_the_entry_point_keeps_click_s_exit_status_and_message():
    """The quick exit passes on what the command said: a usage error's status 2 and its message."""
    code = "import edge.cli as c; c.main(['classify', '--no-such-option'])"
    p = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert p.returncode == 2 and "No such option '--no-such-option'" in p.stderr and not p.stdout


@pytest.mark.parametrize(
    "toml, key",
    [
        ('[quality]\nmin_focus = "abc"\n', "quality.min_focus"),
        ('[daemon]\nafter = "delete"\n', "daemon.after"),
        ("[model]\nthreads = 2\n", "model.threads"),
    ],
)
def test_config_errors_name_the_key(tmp_path, toml, key):
    cfg = tmp_path / "c.toml"
    cfg.write_text(toml)
    for cmd in (["config", "check"], ["run"], ["status"]):
        p = cli("--config", str(cfg), *cmd, check=False)
        assert p.returncode == 2 and key in p.stderr, (cmd, p.stderr)
    assert not (tmp_path / "inbox").exists()


def test_config_show_and_check(tmp_path, model_path):
    cfg = write_config(tmp_path, model_path)
    assert "[quality]" in cli("--config", str(cfg), "config", "show").stdout
    assert "config OK" in cli("--config", str(cfg), "config", "check").stdout


def _noon_zone() -> dict:
    """A TZ in which it is now about noon: "today" in status cannot roll over while the test runs."""
    offset = (12 - datetime.now(timezone.utc).hour + 12) % 24 - 12  # hours east of UTC, -12..11
    return {"TZ": f"NOON{-offset:+d}"}  # POSIX TZ counts hours west of UTC


def test_classify_json_then_status(tmp_path, model_path):
    cfg = write_config(tmp_path, model_path)
    tz = _noon_zone()
    imgs = tmp_path / "imgs"
    imgs.mkdir()
    for i in range(5):
        (imgs / f"{i}.jpg").write_bytes(synthetic.smear_jpeg(i))
    (imgs / "bad.jpg").write_bytes(b"nope")
    out = [json.loads(line) for line in cli("--config", str(cfg), "classify", "--json", str(imgs)).stdout.splitlines()]
    assert len(out) == 6
    for j in out:
        assert {
            "path",
            "status",
            "reason",
            "label",
            "probabilities",
            "score",
            "verdict",
            "needs_review",
            "timings",
        } <= set(j)
    good = [j for j in out if j["status"] == "classified"]
    assert len(good) == 5 and all(j["label"] and j["verdict"] in ("benign", "malignant") for j in good)
    assert abs(sum(good[0]["probabilities"].values()) - 1) < 1e-3 and "inference" in good[0]["timings"]
    (bad,) = [j for j in out if j["status"] == "rejected"]
    assert bad["reason"] and bad["label"] is None
    st = json.loads(cli("--config", str(cfg), "status", "--json", env=tz).stdout)
    assert st["today"]["by_status"] == {"classified": 5, "rejected": 1}
    assert st["last_error"]["path"].endswith("bad.jpg") and st["timings_ms"]["total"]["n"] == 5
    # The backend in use, not the config's "auto" (no interpreter is loaded for it).
    assert st["backend"] in ("litert", "tflite_runtime") and st["kernels"] in ("xnnpack", "builtin")
    assert "today" in cli("--config", str(cfg), "status", env=tz).stdout


def test_classify_of_a_missing_file_is_a_usage_error_and_records_nothing(tmp_path, model_path):
    cfg = write_config(tmp_path, model_path)
    p = cli("--config", str(cfg), "classify", str(tmp_path / "typo.jpg"), check=False)
    assert p.returncode == 2 and "typo.jpg" in p.stderr and "does not exist" in p.stderr
    assert "Traceback" not in p.stderr
    db = tmp_path / "db.sqlite"
    if db.exists():
        import sqlite3

        assert sqlite3.connect(db).execute("select count(*) from images").fetchone()[0] == 0


@pytest.mark.parametrize(
    "section, text",
    [
        ("database", 'url = "mysql+pymysql://u:secret@127.0.0.1/x"'),  # a driver that is not installed
        ("database", 'url = "postgresql+pg8000://u:secret@127.0.0.1/x"'),
        ("daemon", 'inbox = "{tmp}/a-file/inbox"'),  # a file where a folder must go
    ],
)
def test_config_check_runs_the_same_checks_as_run(tmp_path, model_path, section, text):
    (tmp_path / "a-file").write_text("not a folder")
    cfg = write_config(tmp_path, model_path)
    body = cfg.read_text()
    line = text.format(tmp=tmp_path)
    key = line.split(" = ")[0]
    lines = [ln for ln in body.splitlines() if not ln.startswith(key + " ")]
    at = lines.index(f"[{section}]") + 1 if f"[{section}]" in lines else None
    if at is None:
        lines += [f"[{section}]", line]
    else:
        lines.insert(at, line)
    cfg.write_text("\n".join(lines) + "\n")
    for cmd in (["config", "check"], ["run"]):
        p = cli("--config", str(cfg), *cmd, check=False)
        assert p.returncode == 4, (cmd, p.returncode, p.stderr)
        assert "Traceback" not in p.stderr and "secret" not in p.stderr, p.stderr
        assert ("driver" in p.stderr) if section == "database" else ("inbox error" in p.stderr), p.stderr
    if "pg8000" in text:
        assert "pip install 'edge-screen[postgres]'" in p.stderr


def test_commands_do_not_print_the_runtime_s_native_notices(tmp_path, model_path):
    cfg = write_config(tmp_path, model_path)
    img = tmp_path / "one.jpg"
    img.write_bytes(synthetic.smear_jpeg(1))
    p = cli("--config", str(cfg), "classify", "--no-db", "--json", str(img))
    assert "XNNPACK" not in p.stderr and "INFO:" not in p.stderr, p.stderr
    assert json.loads(p.stdout)["status"] in ("classified", "unreadable")


def test_bench_reports_every_stage_and_shows_progress(tmp_path, model_path):
    from edge.config import config_from_dict
    from edge.inference.classifier import Classifier
    from edge.pipeline.bench import format_report, run_bench

    cfg = config_from_dict({"model": {"path": str(model_path), "num_threads": 1}}, base_dir=tmp_path)
    seen = {}
    report = run_bench(
        cfg,
        Classifier(model_path, num_threads=1),
        [],
        n=6,
        progress=lambda stage, i, n: seen.__setitem__(stage, (i, n)),
    )
    assert seen == {"bare invoke": (6, 6), "pipeline, one at a time": (3, 3), "pipeline, overlapped batch": (6, 6)}
    assert report["pipeline_ms"]["total"]["median"] > 0 and report["batch"]["images_per_s"] > 0
    views = Classifier(model_path, num_threads=1).card.cell_views
    assert report["cell_views"] == views
    assert (f"one cell in {views} orientations" in format_report(report)) == (views > 1)


def test_classify_table_fits_an_80_column_console_without_cutting_names(tmp_path, model_path):
    cfg = write_config(tmp_path, model_path)
    names = ["WBC-Malignant-Early-0001-long-name.jpg", "WBC-Benign-0002.jpg"]
    for i, name in enumerate(names):
        (tmp_path / name).write_bytes(synthetic.smear_jpeg(i))
    p = cli("--config", str(cfg), "classify", "--no-db", *[str(tmp_path / n) for n in names], env={"COLUMNS": "80"})
    lines = p.stdout.splitlines()
    assert all(len(line) <= 80 for line in lines), lines
    for name in names:
        assert name in p.stdout, p.stdout


@pytest.mark.parametrize("cmd", [["config", "check"], ["config", "show"], ["status", "--json"]])
def test_config_is_accepted_after_the_command_name_too(tmp_path, model_path, cmd):
    cfg = write_config(tmp_path, model_path)
    cli("--config", str(cfg), "config", "check")  # creates the database and inbox, as `run` would
    before = cli("--config", str(cfg), *cmd, check=False)
    after = cli(*cmd, "--config", str(cfg), check=False)
    assert after.returncode == before.returncode == 0, after.stderr
    assert str(tmp_path) in after.stdout
    # free disk space is the one figure other processes on the machine change between the two calls
    same = [ln for ln in before.stdout.splitlines()[1:] if '"free_mb"' not in ln]
    assert [ln for ln in after.stdout.splitlines()[1:] if '"free_mb"' not in ln] == same

import dataclasses
import re
import sys
from pathlib import Path

import pytest

from edge.config import SECTIONS, Config, ConfigError, config_from_dict, default_device_id, load_config, resolve_db_url
from edge.inference.modelstore import model_in_use

if sys.version_info >= (3, 11):
    import tomllib
else:
    import tomli as tomllib

REPO = Path(__file__).resolve().parent.parent
SHIPPED = REPO / "config" / "edge-screen.toml"


def write(tmp_path, text):
    p = tmp_path / "c.toml"
    p.write_text(text)
    return p


def test_defaults_resolve_against_working_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("EDGE_SCREEN_CONFIG", raising=False)
    cfg = load_config()
    assert cfg.daemon.inbox == tmp_path.resolve() / "inbox"
    assert cfg.daemon.done_dir == tmp_path.resolve() / "done"
    assert cfg.database.url == f"sqlite:///{tmp_path.resolve()}/data/edge-screen.sqlite"
    assert cfg.database.synchronous == "FULL"
    assert cfg.model.path is None and model_in_use(cfg.model).name == "edge-screen-mnv2-int8.tflite"
    assert cfg.model.backend == "auto" and cfg.model.num_threads == 2
    assert re.match(r"^[A-Za-z0-9._-]+-[0-9a-f]{8}$", cfg.daemon.device_id)


def test_shipped_file_is_valid_and_its_commented_values_are_the_defaults(tmp_path):
    # Uncommenting every documented default must give exactly the built-in defaults: the file and the
    # code cannot drift apart silently. Three keys show an example rather than the (unset) default.
    examples = {("model", "path"), ("export", "anonymize_key_file"), ("export", "target")}
    section, lines = None, []
    for line in SHIPPED.read_text().splitlines():
        m = re.match(r"^\[(\w+)\]", line)
        if m:
            section = m.group(1)
        m = re.match(r"^# (\w+) = (.*)$", line)
        known = {f.name for f in dataclasses.fields(SECTIONS[section])} if section else set()
        if m and m.group(1) in known and (section, m.group(1)) not in examples:
            line = f"{m.group(1)} = {m.group(2)}"
        lines.append(line)
    uncommented = tomllib.loads("\n".join(lines))
    documented = {(s, k) for s, vals in uncommented.items() for k in vals} | examples
    every = {(s, f.name) for s, cls in SECTIONS.items() for f in dataclasses.fields(cls)}
    assert documented == every
    assert config_from_dict(uncommented, tmp_path) == config_from_dict({}, tmp_path)
    assert load_config(SHIPPED, tmp_path) == config_from_dict({}, tmp_path)


@pytest.mark.parametrize(
    "text, message",
    [
        ('[quality]\nmin_focus = "abc"', 'quality.min_focus: expected a number, got "abc"'),
        ("[quality]\nmin_focus = true", "quality.min_focus: expected a number, got true"),
        ('[daemon]\nobserver = "fanotify"', 'daemon.observer: expected one of "inotify", "polling", got "fanotify"'),
        ("[daemon]\nstable_checks = 0", "daemon.stable_checks: must be at least 1, got 0"),
        ("[daemon]\nstable_checks = 1.5", "daemon.stable_checks: expected an integer, got 1.5"),
        ('[daemon]\nbacklog_scan = "yes"', 'daemon.backlog_scan: expected true or false, got "yes"'),
        ('[daemon]\ninbxo = "x"', "daemon.inbxo: unknown key"),
        ('[daemon]\ndevice_id = "has space"', "daemon.device_id: expected 1-64 letters"),
        ('[deamon]\ninbox = "x"', "deamon: unknown section"),
        ("daemon = 3", "daemon: expected a table [daemon], got an integer"),
        ('[database]\nsynchronous = "OFF"', "database.synchronous: expected one of"),
        ('[database]\nurl = "data.sqlite"', "database.url: expected a SQLAlchemy URL"),
        ('[model]\nbackend = "cuda"', "model.backend: expected one of"),
        ("[model]\nnum_threads = 0", "model.num_threads: must be at least 1"),
        ("[quality]\nmax_clipped_fraction = 1.5", "quality.max_clipped_fraction: must be at most 1"),
        ("[quality]\nmin_brightness = 200\nmax_brightness = 100", "quality.min_brightness: must be below"),
        ("[camera]\nresolution = [4056]", "camera.resolution: expected [positive integer, positive integer]"),
        ("[daemon]\npoll_interval_s = 0", "daemon.poll_interval_s: must be greater than 0"),
    ],
)
def test_bad_values_name_the_key(tmp_path, text, message):
    with pytest.raises(ConfigError) as e:
        load_config(write(tmp_path, text), tmp_path)
    assert str(e.value).startswith(message)
    assert "\n" not in str(e.value)


def test_missing_file_and_syntax_error_are_config_errors(tmp_path):
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "nope.toml")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(write(tmp_path, "[daemon\n"))


def test_values_are_converted_and_relative_paths_resolved(tmp_path):
    cfg = load_config(
        write(
            tmp_path,
            """
[daemon]
inbox = "smears/in"
after = "move"
rejected_dir = "/var/lib/edge/rejected"
device_id = "microscope-2"
[database]
url = "sqlite:///rel/x.sqlite"
[quality]
min_focus = 35
[camera]
resolution = [1920, 1080]
[model]
path = "m/model.tflite"
""",
        ),
        base_dir=tmp_path,
    )
    assert cfg.daemon.inbox == tmp_path.resolve() / "smears" / "in"
    assert cfg.daemon.rejected_dir == Path("/var/lib/edge/rejected")
    assert cfg.daemon.device_id == "microscope-2"
    assert cfg.database.url == f"sqlite:///{tmp_path.resolve()}/rel/x.sqlite"
    assert cfg.quality.min_focus == 35.0 and isinstance(cfg.quality.min_focus, float)
    assert cfg.camera.resolution == (1920, 1080)
    assert model_in_use(cfg.model) == tmp_path.resolve() / "m" / "model.tflite"
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.daemon.inbox = Path("x")


def test_env_var_names_the_file(tmp_path):
    p = write(tmp_path, '[daemon]\ndevice_id = "from-env"')
    assert load_config(environ={"EDGE_SCREEN_CONFIG": str(p)}).daemon.device_id == "from-env"


def test_to_toml_round_trips(tmp_path):
    cfg = load_config(
        write(tmp_path, '[daemon]\ndevice_id = "d1"\ninbox = "a \\"quoted\\" dir"\n[model]\npath = "x.tflite"'),
        tmp_path,
    )
    again = load_config(write(tmp_path, cfg.to_toml()), tmp_path)
    assert again == cfg
    assert cfg.to_dict()["daemon"]["inbox"] == str(tmp_path.resolve() / 'a "quoted" dir')


def test_default_device_id_is_stable_and_separates_same_hostnames(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    a.write_text("0123456789abcdef0123456789abcdef\n")
    b.write_text("fedcba9876543210fedcba9876543210\n")
    assert default_device_id(a, "pi") == default_device_id(a, "pi")
    assert default_device_id(a, "pi") != default_device_id(b, "pi")
    assert default_device_id(a, "pi").startswith("pi-")
    assert "0123456789abcdef" not in default_device_id(a, "pi")
    assert re.match(r"^edge-[0-9a-f]{8}$", default_device_id(tmp_path / "missing", "!!"))


def test_resolve_db_url_leaves_absolute_and_server_urls(tmp_path):
    assert resolve_db_url("sqlite:////abs/x.db", tmp_path) == "sqlite:////abs/x.db"
    assert resolve_db_url("sqlite:///:memory:", tmp_path) == "sqlite:///:memory:"
    assert resolve_db_url("postgresql+psycopg://u@h/db", tmp_path) == "postgresql+psycopg://u@h/db"


def test_anonymize_key_env_wins_over_file(tmp_path):
    key = tmp_path / "k"
    key.write_text("file-key\n")
    cfg = load_config(write(tmp_path, f'[export]\nanonymize_key_file = "{key}"'), tmp_path)
    assert cfg.export.anonymize_key({}) == b"file-key"
    assert cfg.export.anonymize_key({"EDGE_SCREEN_ANONYMIZE_KEY": "env-key"}) == b"env-key"
    assert Config().export.anonymize_key({}) is None
    key.write_text("")
    with pytest.raises(ConfigError, match="export.anonymize_key_file: .* is empty"):
        cfg.export.anonymize_key({})


def test_a_database_password_is_never_shown(tmp_path):
    from edge.config import redact_url

    assert (
        redact_url("postgresql+psycopg://clinic:s3cr%40t@db.local:5432/edge")
        == "postgresql+psycopg://clinic:***@db.local:5432/edge"
    )
    assert redact_url("sqlite:////var/lib/edge/edge.sqlite") == "sqlite:////var/lib/edge/edge.sqlite"
    cfg = config_from_dict({"database": {"url": "postgresql://clinic:hunter2@127.0.0.1:1/edge"}}, base_dir=tmp_path)
    shown = cfg.to_toml()
    assert "hunter2" not in shown and "clinic:***@127.0.0.1" in shown

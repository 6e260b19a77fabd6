"""All configuration of edge-screen, in one place.

A frozen dataclass tree loaded from TOML. Every key has a default that works from a fresh clone (inbox and
database under the working directory), so a missing file or a missing key is never an error; an unknown key
or a value of the wrong type or range is, and the message names the key (``quality.min_focus: expected a
number, got "abc"``). Relative paths are resolved against the working directory at load time, so a daemon
that later changes directory, and ``config show``, see the same absolute paths.

Each field's ``metadata["doc"]`` is its documentation; ``config/edge-screen.toml`` repeats it with reasons.
"""

from __future__ import annotations

import dataclasses
import hashlib
import ipaddress
import json
import os
import re
import socket
import sys
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Mapping, Optional, Tuple

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on the Pi's older Pythons only
    import tomli as tomllib

from edge.inference.backends import BACKENDS, KERNELS

ENV_CONFIG = "EDGE_SCREEN_CONFIG"
DEFAULT_DB_URL = "sqlite:///./data/edge-screen.sqlite"
DEVICE_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
URI_RE = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:[^\s]+$")  # FHIR uri: a scheme, no whitespace


class ConfigError(ValueError):
    """A configuration problem; ``str(err)`` is one line that starts with the offending key."""


def _f(default: Any, doc: str, **rules: Any) -> Any:
    # rules: choices=(...), min=, max=, gt= (exclusive lower bound); checked by _convert.
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda: default, metadata={"doc": doc, **rules})
    return field(default=default, metadata={"doc": doc, **rules})


@dataclass(frozen=True)
class DaemonConfig:
    inbox: Path = _f(Path("inbox"), "folder the camera drops images into")
    observer: str = _f("inotify", "inotify (local disks) or polling (network shares)", choices=("inotify", "polling"))
    poll_interval_s: float = _f(1.0, "seconds between scans with the polling observer", gt=0)
    stable_checks: int = _f(2, "polling: consecutive scans with unchanged size before a file is read", min=1)
    incomplete_wait_s: float = _f(
        30.0,
        "polling: a file that reads as truncated is watched again, not recorded, until unchanged for this long",
        min=0,
    )
    backlog_scan: bool = _f(True, "on start, classify inbox files not yet recorded, oldest first")
    after: str = _f("keep", "after the commit: keep files in place or move them", choices=("keep", "move"))
    done_dir: Path = _f(Path("done"), "where after=move puts classified and duplicate files")
    rejected_dir: Path = _f(Path("rejected"), "where after=move puts unreadable and rejected files")
    max_file_bytes: int = _f(64 * 1024 * 1024, "larger files are rejected unread", min=1)
    device_id: str = _f("", "stable id stamped on every row; empty derives one from hostname and machine-id")
    log_level: str = _f("INFO", "logging level", choices=("DEBUG", "INFO", "WARNING", "ERROR"))


@dataclass(frozen=True)
class DatabaseConfig:
    url: str = _f(DEFAULT_DB_URL, "SQLAlchemy URL of the result store")
    busy_timeout_ms: int = _f(5000, "how long a writer or reader waits for a lock before failing", min=0)
    synchronous: str = _f("FULL", "SQLite fsync policy; FULL survives power loss", choices=("FULL", "NORMAL"))


@dataclass(frozen=True)
class ModelConfig:
    path: Optional[Path] = _f(
        None,
        "TFLite model (its card is the .json beside it); unset = the installed current model, else the bundled one",
    )
    install_dir: Path = _f(Path("models"), "where `edge-screen model install` keeps models and current.json")
    backend: str = _f("auto", "TFLite runtime", choices=("auto",) + tuple(BACKENDS))
    num_threads: int = _f(2, "interpreter threads", min=1, max=64)
    kernels: str = _f(
        "xnnpack", "int8 kernels: xnnpack (fast) or builtin (the same answers as tflite_runtime)", choices=KERNELS
    )


@dataclass(frozen=True)
class QualityConfig:
    # Defaults from scripts/calibrate_quality.py on the 2,550 real smears: none of them is refused.
    min_focus: float = _f(6.0, "minimum variance of the Laplacian (8-bit grey); lower is blurred", min=0)
    min_brightness: float = _f(80.0, "minimum mean grey level, 0-255", min=0, max=255)
    max_brightness: float = _f(250.0, "maximum mean grey level, 0-255", min=0, max=255)
    max_clipped_fraction: float = _f(0.75, "maximum share of pixels at <=8 or >=254", min=0, max=1)
    min_stain_contrast: float = _f(4.0, "minimum A-channel spread of the stain clusters; below = no stain", min=0)
    min_cell_fraction: float = _f(0.0, "minimum share of stained-cell pixels; below = empty field", min=0, max=1)


@dataclass(frozen=True)
class CameraConfig:
    enabled: bool = _f(False, "run the picamera2 capture loop")
    interval_s: float = _f(0.0, "seconds between stills; 0 = on demand only", min=0)
    resolution: Tuple[int, int] = _f((4056, 3040), "still size [width, height] in pixels")
    format: str = _f("jpeg", "still file format", choices=("jpeg",))


@dataclass(frozen=True)
class RetentionConfig:
    keep_days: float = _f(30.0, "delete screened image files older than this, once exported (0 = keep)", min=0)
    max_mb: float = _f(0.0, "...and the oldest exported ones while screened files take more (0 = no limit)", min=0)
    min_free_mb: float = _f(200.0, "below this free space intake pauses until it is back (0 = never pause)", min=0)
    clinic_targets: Tuple[str, ...] = _f(
        (),
        "clinic databases that must all hold a row before its file may be "
        "deleted (empty = [export] target; neither = nothing is deleted)",
    )


@dataclass(frozen=True)
class SamplesConfig:
    min_readable: int = _f(5, "a sample is ready for review with at least this many readable fields...", min=1)
    idle_s: float = _f(120.0, "...and no new field for this many seconds (or after `edge-screen sample close`)", gt=0)


@dataclass(frozen=True)
class OpticsConfig:
    px_per_um: float = _f(
        0.0,
        "this microscope's camera pixels per micrometre (0 = measure every field from "
        "its red cells); used when a field cannot be measured",
        min=0,
    )
    scale_source: str = _f(
        "auto", "auto: measure each field, fall back to px_per_um; config: always px_per_um", choices=("auto", "config")
    )


@dataclass(frozen=True)
class WebConfig:
    host: str = _f(
        "127.0.0.1", "address `edge-screen serve` binds (loopback: reach it through an SSH tunnel or a reverse proxy)"
    )
    port: int = _f(8080, "port `edge-screen serve` listens on", min=1, max=65535)
    session_minutes: int = _f(480, "a login lasts this long (one shift), then the session expires", min=1)
    server_names: Tuple[str, ...] = _f(
        (),
        "host names clients reach serve by (the Host header is checked "
        "against them; loopback names are always accepted)",
    )
    trusted_proxies: Tuple[str, ...] = _f(
        (),
        "addresses of reverse proxies whose X-Forwarded-For and "
        "X-Forwarded-Proto are believed (a Secure cookie behind HTTPS)",
    )
    login_slowdown_after: int = _f(
        3, "failed log-ins of a user name or a client before each try must wait 1, 2, 4 ... s", min=1
    )
    login_lock_after: int = _f(10, "failed log-ins of a user name that lock it for login_lock_minutes", min=1)
    login_client_lock_after: int = _f(30, "failed log-ins from one client address that lock it", min=1)
    login_lock_minutes: int = _f(15, "how long a lock lasts, and how long without a failure resets the count", min=1)


@dataclass(frozen=True)
class ExportConfig:
    target: Optional[str] = _f(None, "clinic database for `edge-screen export` without --to (SQLite file or URL)")
    anonymize_key_file: Optional[Path] = _f(None, "file holding the HMAC key for --anonymize")
    anonymize_key_env: str = _f("EDGE_SCREEN_ANONYMIZE_KEY", "environment variable holding the key (wins)")
    patient_system: str = _f(
        "urn:edge-screen:patient",
        "FHIR Identifier.system of the patient ids given per sample (your laboratory's MRN system URI)",
    )
    specimen_system: str = _f(
        "urn:edge-screen:specimen", "FHIR Identifier.system of the specimen (accession) ids given per sample"
    )

    def anonymize_key(self, environ: Mapping[str, str] = os.environ) -> Optional[bytes]:
        """The key from the environment variable, else from the file; None when neither is set."""
        val = environ.get(self.anonymize_key_env) if self.anonymize_key_env else None
        if val:
            return val.encode()
        if self.anonymize_key_file is not None:
            try:
                data = self.anonymize_key_file.read_bytes().strip()
            except OSError as e:
                raise ConfigError(
                    f"export.anonymize_key_file: cannot read {self.anonymize_key_file}: {e.strerror}"
                ) from None
            if not data:
                raise ConfigError(f"export.anonymize_key_file: {self.anonymize_key_file} is empty")
            return data
        return None


@dataclass(frozen=True)
class Config:
    daemon: DaemonConfig = field(default_factory=DaemonConfig)
    database: DatabaseConfig = field(default_factory=DatabaseConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    quality: QualityConfig = field(default_factory=QualityConfig)
    camera: CameraConfig = field(default_factory=CameraConfig)
    export: ExportConfig = field(default_factory=ExportConfig)
    samples: SamplesConfig = field(default_factory=SamplesConfig)
    retention: RetentionConfig = field(default_factory=RetentionConfig)
    web: WebConfig = field(default_factory=WebConfig)
    optics: OpticsConfig = field(default_factory=OpticsConfig)
    source: Optional[Path] = field(default=None, compare=False)  # the file it came from, for messages

    def to_dict(self) -> Dict[str, Dict[str, Any]]:
        """Plain TOML-able values; unset optional keys are left out (TOML has no null)."""
        out: Dict[str, Dict[str, Any]] = {}
        for sec in SECTIONS:
            vals = {}
            for f in dataclasses.fields(SECTIONS[sec]):
                v = getattr(getattr(self, sec), f.name)
                if v is None:
                    continue
                vals[f.name] = str(v) if isinstance(v, Path) else list(v) if isinstance(v, tuple) else v
            out[sec] = vals
        return out

    def to_toml(self) -> str:
        lines = []
        for sec, vals in self.to_dict().items():
            lines.append(f"[{sec}]")
            for f in dataclasses.fields(SECTIONS[sec]):
                doc = f.metadata.get("doc", "")
                if f.name in vals:
                    v = redact_url(vals[f.name]) if (sec, f.name) == ("database", "url") else vals[f.name]
                    lines.append(f"{f.name} = {_toml_value(v)}  # {doc}")
                else:
                    lines.append(f"# {f.name} = (unset)  # {doc}")
            lines.append("")
        return "\n".join(lines)


SECTIONS = {
    "daemon": DaemonConfig,
    "database": DatabaseConfig,
    "model": ModelConfig,
    "quality": QualityConfig,
    "camera": CameraConfig,
    "export": ExportConfig,
    "samples": SamplesConfig,
    "retention": RetentionConfig,
    "web": WebConfig,
    "optics": OpticsConfig,
}


def redact_url(url: str) -> str:
    """A database URL fit for logs and screens: the password replaced by ***."""
    return re.sub(r"^([\w+.-]+://[^:/@?#]*:)[^@/]*@", r"\1***@", url)


def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, list):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    # JSON string escapes are a subset of TOML basic-string escapes.
    return json.dumps(str(v), ensure_ascii=False)


def _show(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    try:
        return json.dumps(v, ensure_ascii=False, default=str)
    except (TypeError, ValueError):
        return repr(v)


def _kind(v: Any) -> str:
    return {
        bool: "a boolean",
        int: "an integer",
        float: "a number",
        str: "a string",
        list: "a list",
        dict: "a table",
    }.get(type(v), type(v).__name__)


def _convert(key: str, tp: Any, meta: Mapping[str, Any], v: Any, base: Path) -> Any:
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is typing.Union:  # Optional[X]; an empty string means "unset" because TOML has no null
        if v == "":
            return None
        tp = next(a for a in args if a is not type(None))
        origin, args = typing.get_origin(tp), typing.get_args(tp)
    if tp is bool:
        if not isinstance(v, bool):
            raise ConfigError(f"{key}: expected true or false, got {_show(v)}")
    elif tp is int:
        if isinstance(v, bool) or not isinstance(v, int):
            raise ConfigError(f"{key}: expected an integer, got {_show(v)}")
    elif tp is float:
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise ConfigError(f"{key}: expected a number, got {_show(v)}")
        v = float(v)
        if v != v or v in (float("inf"), float("-inf")):
            raise ConfigError(f"{key}: expected a finite number, got {v}")
    elif tp is str:
        if not isinstance(v, str):
            raise ConfigError(f"{key}: expected a string, got {_kind(v)} {_show(v)}")
    elif tp is Path:
        if not isinstance(v, str) or not v:
            raise ConfigError(f"{key}: expected a path string, got {_show(v)}")
        p = Path(v).expanduser()
        v = p if p.is_absolute() else (base / p)
    elif origin is tuple and len(args) == 2 and args[1] is Ellipsis:  # Tuple[str, ...]: a list of strings
        if not isinstance(v, (list, tuple)) or not all(isinstance(x, str) and x for x in v):
            raise ConfigError(f"{key}: expected a list of non-empty strings, got {_show(v)}")
        v = tuple(v)
    elif origin is tuple:
        if (
            not isinstance(v, (list, tuple))
            or len(v) != len(args)
            or not all(isinstance(x, int) and not isinstance(x, bool) and x > 0 for x in v)
        ):
            raise ConfigError(f"{key}: expected [{', '.join('positive integer' for _ in args)}], got {_show(v)}")
        v = tuple(v)
    if "choices" in meta and v not in meta["choices"]:
        raise ConfigError(f"{key}: expected one of {', '.join(map(_show, meta['choices']))}, got {_show(v)}")
    if "min" in meta and v < meta["min"]:
        raise ConfigError(f"{key}: must be at least {meta['min']}, got {_show(v)}")
    if "max" in meta and v > meta["max"]:
        raise ConfigError(f"{key}: must be at most {meta['max']}, got {_show(v)}")
    if "gt" in meta and v <= meta["gt"]:
        raise ConfigError(f"{key}: must be greater than {meta['gt']}, got {_show(v)}")
    return v


def _section(name: str, cls: type, raw: Any, base: Path) -> Any:
    if not isinstance(raw, dict):
        raise ConfigError(f"{name}: expected a table [{name}], got {_kind(raw)}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(raw) - set(fields))
    if unknown:
        raise ConfigError(f"{name}.{unknown[0]}: unknown key (known: {', '.join(fields)})")
    kw = {}
    for fname, f in fields.items():
        if fname in raw:
            kw[fname] = _convert(f"{name}.{fname}", hints[fname], f.metadata, raw[fname], base)
        elif hints[fname] is Path:  # defaults are relative too and must resolve against the same base
            kw[fname] = base / str(f.default)
    return cls(**kw)


def resolve_db_url(url: str, base: Path) -> str:
    """Make a relative SQLite file URL absolute; other URLs pass through untouched."""
    m = re.match(r"^(sqlite(?:\+\w+)?):///(.*)$", url)
    if not m or not m.group(2) or m.group(2) == ":memory:" or m.group(2).startswith("/"):
        return url
    path, _, query = m.group(2).partition("?")
    return f"{m.group(1)}:///{(base / path).resolve()}" + (f"?{query}" if query else "")


def default_device_id(machine_id_path: str | Path = "/etc/machine-id", hostname: Optional[str] = None) -> str:
    """``<hostname>-<8 hex>``: readable in clinic reports, and the hash of the machine-id (which is stable
    across reboots but must not be disclosed raw) tells apart two devices that share a hostname."""
    host = hostname if hostname is not None else socket.gethostname()
    host = re.sub(r"[^A-Za-z0-9._-]", "-", host.split(".")[0]).strip("-._")[:40] or "edge"
    try:
        secret = Path(machine_id_path).read_text().strip()
    except OSError:
        secret = ""
    digest = hashlib.sha256(b"edge-screen device " + (secret or host).encode()).hexdigest()[:8]
    return f"{host}-{digest}"


def config_from_dict(
    raw: Mapping[str, Any], base_dir: str | Path | None = None, source: Optional[Path] = None
) -> Config:
    base = Path(base_dir) if base_dir is not None else Path.cwd()
    base = base.resolve()
    unknown = sorted(set(raw) - set(SECTIONS))
    if unknown:
        raise ConfigError(f"{unknown[0]}: unknown section (known: {', '.join(SECTIONS)})")
    secs = {name: _section(name, cls, raw.get(name, {}), base) for name, cls in SECTIONS.items()}
    d, q = secs["daemon"], secs["quality"]
    # One spelling of the inbox: inotify reports events under the real path, so a symlinked inbox would
    # otherwise give every image two paths (and a "duplicate" row).
    d = secs["daemon"] = dataclasses.replace(d, inbox=d.inbox.resolve())
    if not d.device_id:
        secs["daemon"] = dataclasses.replace(d, device_id=default_device_id())
    elif not DEVICE_ID_RE.match(d.device_id):
        raise ConfigError(f"daemon.device_id: expected 1-64 letters, digits, '.', '_' or '-', got {_show(d.device_id)}")
    if q.min_brightness >= q.max_brightness:
        raise ConfigError(
            f"quality.min_brightness: must be below quality.max_brightness ({q.min_brightness} >= {q.max_brightness})"
        )
    o = secs["optics"]
    if o.scale_source == "config" and not o.px_per_um:
        raise ConfigError(
            'optics.scale_source: "config" needs optics.px_per_um (this microscope\'s pixels per micrometre)'
        )
    for key in ("patient_system", "specimen_system"):
        if not URI_RE.match(getattr(secs["export"], key)):
            raise ConfigError(
                f'export.{key}: expected an absolute URI such as "urn:oid:1.2.3" or '
                f'"https://lab.example/mrn", got {_show(getattr(secs["export"], key))}'
            )
    for addr in secs["web"].trusted_proxies:
        try:
            ipaddress.ip_address(addr)
        except ValueError:
            raise ConfigError(f"web.trusted_proxies: expected IP addresses, got {_show(addr)}") from None
    db = secs["database"]
    if not db.url or "://" not in db.url:
        raise ConfigError(f"database.url: expected a SQLAlchemy URL like {DEFAULT_DB_URL}, got {_show(db.url)}")
    secs["database"] = dataclasses.replace(db, url=resolve_db_url(db.url, base))
    return Config(**secs, source=source)


def load_config(
    path: str | Path | None = None, base_dir: str | Path | None = None, environ: Mapping[str, str] = os.environ
) -> Config:
    """Load ``path``, else the file named by $EDGE_SCREEN_CONFIG, else the built-in defaults."""
    if path is None and environ.get(ENV_CONFIG):
        path = environ[ENV_CONFIG]
    if path is None:
        return config_from_dict({}, base_dir)
    p = Path(path).expanduser()
    try:
        raw = tomllib.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {p}") from None
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"config file {p} cannot be read: {getattr(e, 'strerror', None) or e}") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"config file {p} is not valid TOML: {e}") from None
    return config_from_dict(raw, base_dir, source=p.resolve())


__all__ = [
    "CameraConfig",
    "Config",
    "ConfigError",
    "DaemonConfig",
    "DatabaseConfig",
    "ExportConfig",
    "ModelConfig",
    "QualityConfig",
    "RetentionConfig",
    "SamplesConfig",
    "SECTIONS",
    "WebConfig",
    "config_from_dict",
    "default_device_id",
    "load_config",
    "redact_url",
    "resolve_db_url",
]

"""Loading the configuration: TOML (or a dict) checked key by key and turned into the frozen
:class:`~edge.config.sections.Config`.

Every key has a default that works from a fresh clone (inbox and database under the working directory), so
a missing file or a missing key is never an error; an unknown key or a value of the wrong type or range is,
and the message names the key (``quality.min_focus: expected a number, got "abc"``). Relative paths are
resolved against the working directory at load time, so a daemon that later changes directory, and
``config show``, see the same absolute paths.
"""

from __future__ import annotations

import dataclasses
import hashlib
import ipaddress
import json
import os
import platform
import re
import sys
import typing
from pathlib import Path
from typing import Any, Mapping, Optional

from edge.config.sections import DEFAULT_DB_URL, SECTIONS, Config, ConfigError

ENV_CONFIG = "EDGE_SCREEN_CONFIG"
DEVICE_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
URI_RE = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:[^\s]+$")  # FHIR uri: a scheme, no whitespace


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
    # platform.node() is gethostname() (uname's node name) without importing socket (~3 ms of a start).
    host = hostname if hostname is not None else platform.node()
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
    # Imported only when there is a file to read: most one-shot commands run on the defaults.
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover - exercised on the Pi's older Pythons only
        import tomli as tomllib
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

"""A configuration written back out: plain TOML-able values (``config show --json``) and the commented TOML
``config show`` prints, every key with its documentation and the database password hidden."""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path
from typing import Any, Dict, Iterator, Tuple


def redact_url(url: str) -> str:
    """A database URL fit for logs and screens: the password replaced by ***."""
    return re.sub(r"^([\w+.-]+://[^:/@?#]*:)[^@/]*@", r"\1***@", url)


def toml_value(v: Any) -> str:
    """One value as TOML (booleans, numbers, strings and lists of them)."""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, list):
        return "[" + ", ".join(toml_value(x) for x in v) + "]"
    # JSON string escapes are a subset of TOML basic-string escapes.
    return json.dumps(str(v), ensure_ascii=False)


def _sections(cfg: Any) -> Iterator[Tuple[str, Any]]:
    """(name, section) of a Config, in order: its dataclass-valued fields."""
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        if dataclasses.is_dataclass(value):
            yield f.name, value


def toml_dict(cfg: Any) -> Dict[str, Dict[str, Any]]:
    """Plain TOML-able values of a Config; unset optional keys are left out (TOML has no null)."""
    out: Dict[str, Dict[str, Any]] = {}
    for sec, section in _sections(cfg):
        vals = {}
        for f in dataclasses.fields(section):
            v = getattr(section, f.name)
            if v is None:
                continue
            vals[f.name] = str(v) if isinstance(v, Path) else list(v) if isinstance(v, tuple) else v
        out[sec] = vals
    return out


def config_toml(cfg: Any) -> str:
    """A Config as commented TOML: each key with its documentation, unset ones as comments."""
    values = toml_dict(cfg)
    lines = []
    for sec, section in _sections(cfg):
        vals = values[sec]
        lines.append(f"[{sec}]")
        for f in dataclasses.fields(section):
            doc = f.metadata.get("doc", "")
            if f.name in vals:
                v = redact_url(vals[f.name]) if (sec, f.name) == ("database", "url") else vals[f.name]
                lines.append(f"{f.name} = {toml_value(v)}  # {doc}")
            else:
                lines.append(f"# {f.name} = (unset)  # {doc}")
        lines.append("")
    return "\n".join(lines)

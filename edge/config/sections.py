"""The configuration's sections: one frozen dataclass per TOML table, each field with its default and its
documentation (``metadata["doc"]``; ``config/edge-screen.toml`` repeats it with reasons) and the checks
:mod:`edge.config.loading` applies (``choices``, ``min``, ``max``, ``gt``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Mapping, Optional, Tuple

from edge.config.render import config_toml, toml_dict
from edge.inference.backends import BACKENDS, KERNELS

DEFAULT_DB_URL = "sqlite:///./data/edge-screen.sqlite"


class ConfigError(ValueError):
    """A configuration problem; ``str(err)`` is one line that starts with the offending key."""


def _f(default: Any, doc: str, **rules: Any) -> Any:
    # rules: choices=(...), min=, max=, gt= (exclusive lower bound); checked by edge.config.loading.
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
        return toml_dict(self)

    def to_toml(self) -> str:
        """Every key with its documentation, as ``config show`` prints it (the database password hidden)."""
        return config_toml(self)


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

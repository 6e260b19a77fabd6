"""All configuration of edge-screen, in one place: one TOML file, a frozen dataclass tree.

:mod:`~edge.config.sections` holds the sections with their defaults and documentation,
:mod:`~edge.config.loading` checks and converts TOML into them, :mod:`~edge.config.render` writes a
configuration back out (``config show``). Import from here.
"""

from edge.config.loading import (
    DEVICE_ID_RE,
    ENV_CONFIG,
    URI_RE,
    config_from_dict,
    default_device_id,
    load_config,
    resolve_db_url,
)
from edge.config.render import redact_url
from edge.config.sections import (
    DEFAULT_DB_URL,
    SECTIONS,
    CameraConfig,
    Config,
    ConfigError,
    DaemonConfig,
    DatabaseConfig,
    ExportConfig,
    ModelConfig,
    OpticsConfig,
    QualityConfig,
    RetentionConfig,
    SamplesConfig,
    WebConfig,
)

__all__ = [
    "DEFAULT_DB_URL",
    "DEVICE_ID_RE",
    "ENV_CONFIG",
    "SECTIONS",
    "URI_RE",
    "CameraConfig",
    "Config",
    "ConfigError",
    "DaemonConfig",
    "DatabaseConfig",
    "ExportConfig",
    "ModelConfig",
    "OpticsConfig",
    "QualityConfig",
    "RetentionConfig",
    "SamplesConfig",
    "WebConfig",
    "config_from_dict",
    "default_device_id",
    "load_config",
    "redact_url",
    "resolve_db_url",
]

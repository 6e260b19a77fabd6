"""What every command module shares: start-up failures as one line with the README's exit code."""

from __future__ import annotations

from typing import Any, Callable, Optional

import click

from edge.daemon import startup


class Failure(click.ClickException):
    """One line on stderr and the daemon's exit codes: 2 config, 3 model, 4 database or inbox."""

    def __init__(self, message: str, code: int = startup.EXIT_FAILURE):
        super().__init__(message)
        self.exit_code = code  # type: ignore[misc]  # click reads it per instance; its stub says ClassVar


def started(fn: Callable[..., Any], *args: Any, **kw: Any) -> Any:
    """``fn(*args, **kw)`` from :mod:`edge.daemon.startup`, its StartupError turned into a :class:`Failure`."""
    try:
        return fn(*args, **kw)
    except startup.StartupError as e:
        raise Failure(str(e), e.code) from None


def config_option_value(given: Optional[str] = None) -> Optional[str]:
    """This command's --config, else the one given to the `edge-screen` group (else None: the environment)."""
    if given:
        return given
    root = click.get_current_context().find_root()
    return (root.obj or {}).get("config") if isinstance(root.obj, dict) else None


def load_cfg(given: Optional[str] = None):
    return started(startup.config, config_option_value(given))

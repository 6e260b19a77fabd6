"""What every command module shares: start-up failures as one line with the README's exit code."""

from __future__ import annotations

import gc
from contextlib import contextmanager
from typing import Any, Callable, Iterator, Optional

import click

from edge.daemon import startup


class Failure(click.ClickException):
    """One line on stderr and the daemon's exit codes: 2 config, 3 model, 4 database or inbox."""

    def __init__(self, message: str, code: int = startup.EXIT_FAILURE):
        super().__init__(message)
        self.exit_code = code  # type: ignore[misc]  # click reads it per instance; its stub says ClassVar


_OWN_PROCESS = False


def own_process() -> None:
    """Called by the console entry point (:func:`edge.cli.main`): this process runs one command and
    nothing else, so :func:`long_lived` may set the garbage collector's objects aside for good."""
    global _OWN_PROCESS
    _OWN_PROCESS = True


@contextmanager
def long_lived() -> Iterator[None]:
    """Imports and a model load: what they make lives as long as the process. In a process of its own
    (:func:`own_process`) the cyclic garbage collector is paused while they run and their objects are then
    moved out of its way for good (``gc.freeze``), instead of being scanned again and again as they pile
    up: 8-9 ms of collections (56 young, 5 middle) in a one-image ``classify`` of ~250 ms, 0.4 ms after.
    Elsewhere (a test or a script calling the commands in its own process) it changes nothing."""
    if not _OWN_PROCESS or not gc.isenabled():
        yield
        return
    gc.disable()
    try:
        yield
    finally:
        gc.freeze()
        gc.enable()


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

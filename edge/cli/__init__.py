"""The command line: click parses and prints; the work is in the library packages.

:func:`main` is the console entry point (setup.cfg, ``python -m edge``); the command tree is built in
:mod:`edge.cli.app` (``edge.cli.app.main``, the click group, is what tests and scripts invoke in-process).
"""

import os
import sys
import threading
from typing import NoReturn, Optional, Sequence, Union

if "numpy" not in sys.modules:
    # numpy's BLAS on one thread for the whole process (why: edge.inference.classifier._one_blas_thread),
    # said before numpy loads it: OpenBLAS reads this once, and the alternative after the fact
    # (threadpoolctl inspecting every loaded library) is ~10 ms of a one-image `classify`.
    os.environ["OPENBLAS_NUM_THREADS"] = "1"


def main(args: Optional[Sequence[str]] = None) -> NoReturn:
    """Run one command in a process of its own, then end it without tearing the interpreter down.

    Once a command has returned, everything it owes is done: its output printed, its store committed
    (SQLite in WAL mode: a commit is on disk before it returns), its files closed. What the interpreter's
    teardown would still do is free the model, OpenCV and every module one object at a time: 23-28 ms of
    a one-image ``classify`` (~10 % of it; README, performance). So the streams are flushed, logging is
    shut down and the process exits at once -- but only when no other thread is left: a thread still
    running (none is, after any command today) is waited for by the ordinary exit, as before."""
    from edge.cli import common

    common.own_process()
    with common.long_lived():
        from edge.cli import app
    try:
        app.main(args=list(args) if args is not None else None, prog_name="edge-screen")
        code: Union[str, int, None] = 0
    except SystemExit as e:  # click's standalone mode always ends this way
        code = e.code
    if any(t is not threading.main_thread() and t.is_alive() for t in threading.enumerate()):
        sys.exit(code)
    _exit_now(code)


def _exit_now(code: Union[str, int, None]) -> NoReturn:
    """``sys.exit(code)``'s status and message, without the interpreter's teardown."""
    import logging

    if code is None or isinstance(code, int):
        status = code or 0
    else:  # sys.exit("message"): the message on stderr, status 1
        print(code, file=sys.stderr)
        status = 1
    try:
        sys.stdout.flush()
    except (BrokenPipeError, ValueError):  # a reader that went away, or stdout closed: nothing to keep
        status = status or 1
    try:
        sys.stderr.flush()
    except (BrokenPipeError, ValueError):
        pass
    logging.shutdown()
    os._exit(status)


__all__ = ["main"]

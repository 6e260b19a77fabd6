"""Helpers for the pipeline, daemon, CLI and camera tests: the model, configs, a real daemon subprocess.

The model is the shipped one when it exists, else the TensorFlow-built stand-in from report_support
(cached under /tmp, never in the repository). Waiting is always polling with a deadline.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable, Dict, List, Optional

import pytest
import report_support

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "datasets" / "all-taleqani"
DEADLINE = 60.0


@pytest.fixture(scope="session")
def model_path() -> Path:
    return report_support.model_path()


def real_images(n: int) -> List[Path]:
    """``n`` real smears spread over the classes, or [] when ../shared is absent."""
    if n <= 0 or not SHARED.is_dir():
        return []
    files = sorted(SHARED.rglob("*.jpg"))
    step = max(1, len(files) // n)
    return files[::step][:n]


def poll(predicate: Callable[[], object], timeout: float = DEADLINE, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(0.02)


def write_config(folder: Path, model: Path, **daemon) -> Path:
    """A config with inbox, database and model in ``folder``; extra [daemon] keys from kwargs."""
    d = {"inbox": str(folder / "inbox"), "device_id": "test-device", **daemon}
    lines = ["[daemon]"] + [f"{k} = {_toml(v)}" for k, v in d.items()]
    lines += [
        "[database]",
        f'url = "sqlite:///{folder / "db.sqlite"}"',
        "[model]",
        f'path = "{model}"',
        "num_threads = 1",
    ]
    p = folder / "edge-screen.toml"
    p.write_text("\n".join(lines) + "\n")
    return p


def _toml(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    return f'"{v}"'


def rows(db: Path, where: str = "1=1") -> List[Dict]:
    if not db.exists():
        return []
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10)
    con.row_factory = sqlite3.Row
    try:
        return [dict(r) for r in con.execute(f"SELECT * FROM images WHERE {where}")]
    except sqlite3.OperationalError as e:  # schema not created yet
        if "no such table" in str(e):
            return []
        raise
    finally:
        con.close()


def runs(db: Path) -> List[Dict]:
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10)
    con.row_factory = sqlite3.Row
    try:
        return [dict(r) for r in con.execute("SELECT * FROM runs ORDER BY started_at")]
    finally:
        con.close()


def cli(
    *args: str, check: bool = True, timeout: float = 120, env: Optional[Dict[str, str]] = None, stdin: str = ""
) -> subprocess.CompletedProcess:
    p = subprocess.run(
        [sys.executable, "-m", "edge", *args],
        input=stdin,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=_env(env),
    )
    if check and p.returncode != 0:
        raise AssertionError(f"edge-screen {' '.join(args)} exited {p.returncode}:\n{p.stderr[-3000:]}")
    return p


def _env(extra: Optional[Dict[str, str]] = None) -> Dict[str, str]:
    env = dict(os.environ, PYTHONPATH=str(ROOT), PYTHONUNBUFFERED="1")
    env.pop("NOTIFY_SOCKET", None)
    env.update(extra or {})
    return env


class DaemonProc:
    """``python -m edge run`` as a real subprocess, with its own sd_notify socket to learn READY=1."""

    def __init__(self, config: Path, watchdog_usec: Optional[int] = None):
        self.config = config
        self._dir = Path(tempfile.mkdtemp(prefix="es-notify-", dir="/tmp"))  # AF_UNIX paths are short
        self.sock_path = self._dir / "notify"
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(self.sock_path))
        self.messages: List[str] = []
        self.log = config.parent / f"daemon-{time.monotonic_ns()}.log"
        env = {"NOTIFY_SOCKET": str(self.sock_path)}
        if watchdog_usec:
            env["WATCHDOG_USEC"] = str(watchdog_usec)
        self._logf = open(self.log, "w")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "edge", "--config", str(config), "run"],
            cwd=ROOT,
            stdout=self._logf,
            stderr=subprocess.STDOUT,
            env=_env(env),
        )

    def _drain(self, timeout: float) -> None:
        self.sock.settimeout(timeout)
        try:
            while True:
                self.messages.extend(self.sock.recv(4096).decode().split("\n"))
                self.sock.settimeout(0)
        except (socket.timeout, BlockingIOError):
            pass

    def wait_message(self, prefix: str, timeout: float = DEADLINE) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            hit = [m for m in self.messages if m.startswith(prefix)]
            if hit:
                return hit[-1]
            if self.proc.poll() is not None:
                self._drain(0.01)
                hit = [m for m in self.messages if m.startswith(prefix)]
                if hit:
                    return hit[-1]
                raise AssertionError(f"daemon exited {self.proc.returncode} before {prefix}:\n{self.output()}")
            self._drain(0.2)
        raise AssertionError(f"no {prefix} from the daemon within {timeout}s:\n{self.output()}")

    def wait_ready(self) -> DaemonProc:
        self.wait_message("READY=1")
        return self

    def output(self) -> str:
        return self.log.read_text()

    def terminate(self, sig: int = signal.SIGTERM, timeout: float = DEADLINE) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            code = self.proc.wait(timeout=timeout)
            self._drain(0.01)  # what it said on the way out (STOPPING=1)
            return code
        finally:
            self.close()

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self._logf.close()
        self.sock.close()
        shutil.rmtree(self._dir, ignore_errors=True)

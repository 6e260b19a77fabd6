"""Identity: what makes two files "the same image" for exactly-once recording and duplicates.

An image's identity is the sha256 of its bytes. Files that cannot be read whole get an identity from what
can be known without reading them, so their row still counts for exactly-once: a file too large to read
(size, modification time, first and last 64 KiB), a symlink out of the inbox (its target text), a special
file (its path), a file that could not be read (the failure itself: a later readable copy is a new file).
"""
from __future__ import annotations

import hashlib
import os
from pathlib import Path


def path_text(path) -> str:
    """A path as the database stores it. Linux file names are bytes; one that is not valid UTF-8 (a
    camera's Latin-1 name) is kept with its odd bytes as backslash escapes, so it can still be written,
    looked up and shown, and the same file always gives the same text."""
    return os.fsencode(path).decode("utf-8", "backslashreplace")


def of_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def of_oversize_file(path: Path, st: os.stat_result, edge: int = 1 << 16) -> str:
    """Never reads the file whole: 12 GB took 82 s, past the systemd watchdog."""
    h = hashlib.sha256(b"oversize:%d:%d:" % (st.st_size, st.st_mtime_ns))
    try:
        with open(path, "rb") as f:
            h.update(f.read(edge))
            f.seek(max(st.st_size - edge, 0))
            h.update(f.read(edge))
    except OSError:
        pass
    return h.hexdigest()

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
from typing import Set


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


def possible(path: Path, max_file_bytes: int) -> Set[str]:
    """Every identity the pipeline could give the file at ``path`` as it is now: its bytes (or, over
    ``max_file_bytes``, the oversize identity), its link text for a symlink, its path for a file in a folder
    that is not a sample or for a special file. What the backlog asks the store about, for a file whose
    path is recorded but whose size or time no longer match: recorded under any of these, the pipeline
    would skip it, so it is not backlog (a file refused before it was read, such as a symlink out of the
    inbox, was otherwise counted as waiting for ever)."""
    text = os.fsencode(str(path))
    out = {of_bytes(b"sample:" + text), of_bytes(b"special:" + text)}
    try:
        out.add(of_bytes(b"symlink:" + os.fsencode(os.readlink(path))))
    except OSError:
        pass  # not a symlink
    try:
        st = path.stat()
        if st.st_size > max_file_bytes:
            out.add(of_oversize_file(path, st))
        elif path.is_file():
            out.add(of_bytes(path.read_bytes()))
    except OSError:
        pass  # dangling, unreadable: the identities above are all it can have
    return out

"""Read a field's image file only as it was recorded: never through a symbolic link, only inside the folders
the daemon records from (inbox, done, rejected), and only if it is still the file that was recorded.

The daemon refuses a symlink that points out of the inbox, but a row keeps the path, and a recorded file
can be swapped for a link (or for other content) afterwards; whoever shows images (the review app's
thumbnails and maps, the HTML report) must not follow it. So each folder below the root is opened with
O_NOFOLLOW relative to its parent (openat), the file itself with O_NOFOLLOW, and the bytes that were read
are checked against the row's size and sha256 (the daemon's identity of the file, edge.pipeline.identity): what is
shown is exactly what was classified, or nothing, with the reason.
"""

from __future__ import annotations

import errno
import hashlib
import os
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Optional, Sequence, Tuple

NOFOLLOW_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
# O_NONBLOCK: opening a FIFO put in place of the file must not hang the server; it is refused after fstat.
NOFOLLOW_FILE = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC


class RecordedFileError(Exception):
    """No file to show; ``status`` is the HTTP status that fits, ``str(err)`` says why in one line."""

    def __init__(self, message: str, status: int):
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class RecordedFile:
    path: Path
    data: bytes
    key: Tuple[int, int, int, int]  # device, inode, size, mtime_ns: changes whenever the file is replaced


def _split(path: Path, roots: Optional[Sequence[Path]]) -> Tuple[Path, Tuple[str, ...]]:
    """(root to start from, the parts below it); the root is the configured folder itself (an
    administrator's choice, followed if it is a link), or "/" when no roots are given."""
    if not path.is_absolute():
        raise RecordedFileError(f"refused: {path} is not an absolute path", 403)
    if roots is None:
        return Path("/"), path.parts[1:]
    for root in roots:
        for r in dict.fromkeys((Path(root), Path(root).resolve())):
            try:
                return r, path.relative_to(r).parts
            except ValueError:
                continue
    raise RecordedFileError(f"refused: {path} is not inside the inbox or the done/rejected folders", 403)


def _open_below(root: Path, parts: Tuple[str, ...]) -> int:
    if not parts or any(p in ("", ".", "..") for p in parts):
        raise RecordedFileError(f"refused: {root.joinpath(*parts)} is not a plain path below {root}", 403)
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        for part in parts[:-1]:
            nxt = os.open(part, NOFOLLOW_DIR, dir_fd=fd)
            os.close(fd)
            fd = nxt
        return os.open(parts[-1], NOFOLLOW_FILE, dir_fd=fd)
    finally:
        os.close(fd)


def open_recorded(
    candidates: Iterable[Optional[str]],
    sha256: Optional[str],
    size: Optional[int],
    roots: Optional[Sequence[Path]] = None,
    known: Optional[Tuple[int, int, int, int]] = None,
) -> RecordedFile:
    """The first of ``candidates`` (moved_to, then the inbox path) that exists, read safely and checked.

    ``known``: a key already verified (a cache hit); when the file's key is the same its bytes are not read
    again (``data`` is then empty). Raises :class:`RecordedFileError`: 404 missing, 403 a link, a special
    file or outside the folders, 409 not the recorded file.
    """
    tried = [c for c in candidates if c]
    for cand in tried:
        path = Path(cand)
        root, parts = _split(path, roots)
        try:
            fd = _open_below(root, parts)
        except FileNotFoundError:
            continue
        except OSError as e:
            if e.errno in (errno.ELOOP, errno.ENOTDIR):  # O_NOFOLLOW met a link (a folder link: ENOTDIR)
                raise RecordedFileError(f"refused: {path} (or a folder on its way) is a symbolic link", 403) from None
            raise RecordedFileError(
                f"cannot read {path}: {e.strerror or e}", 403 if e.errno == errno.EACCES else 500
            ) from None
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                raise RecordedFileError(f"refused: {path} is not a regular file", 403)
            key = (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)
            if size is not None and st.st_size != size:
                raise RecordedFileError(
                    f"refused: {path} is not the recorded file ({st.st_size:,} bytes, recorded {size:,})", 409
                )
            if known == key:
                return RecordedFile(path, b"", key)
            with os.fdopen(fd, "rb", closefd=False) as f:
                data = f.read()
        finally:
            os.close(fd)
        if sha256 is None or hashlib.sha256(data).hexdigest() != sha256:
            raise RecordedFileError(f"refused: {path} is not the recorded file (its content changed)", 409)
        return RecordedFile(path, data, key)
    raise RecordedFileError(f"file missing: {tried[0] if tried else '(no path recorded)'}", 404)


def plain_path(
    candidates: Iterable[Optional[str]], size: Optional[int], roots: Optional[Sequence[Path]] = None
) -> Optional[Path]:
    """The first candidate reachable without a link, a regular file of the recorded size; else None. For
    showing "file missing" and for readers that need a path: cheaper than :func:`open_recorded` (no read,
    no hash), so it cannot tell a same-size content swap; whoever serves bytes uses open_recorded."""
    for cand in (c for c in candidates if c):
        try:
            root, parts = _split(Path(cand), roots)
            fd = _open_below(root, parts)
        except (RecordedFileError, OSError):
            continue
        try:
            st = os.fstat(fd)
        finally:
            os.close(fd)
        if stat.S_ISREG(st.st_mode) and (size is None or st.st_size == size):
            return Path(cand)
    return None


__all__ = ["RecordedFile", "RecordedFileError", "open_recorded", "plain_path"]

"""Files that appear whole or not at all: camera stills dropped into the inbox, FHIR bundles picked up by
an interface engine. Written under a hidden temporary name (which the watcher ignores), fsynced, renamed."""

from __future__ import annotations

import os
from pathlib import Path


def write_atomic(folder: Path, name: str, data: bytes) -> Path:
    """Write ``data`` as ``folder/name`` so that no reader ever sees a partial file."""
    folder.mkdir(parents=True, exist_ok=True)
    final = folder / name
    tmp = folder / f".{name}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o640)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        os.fsync(fd)  # the bytes are on disk before the name that announces them
    finally:
        os.close(fd)
    os.replace(tmp, final)
    dfd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(dfd)  # and so is the rename
    finally:
        os.close(dfd)
    return final

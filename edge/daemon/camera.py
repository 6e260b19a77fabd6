"""Image sources for the inbox: a Raspberry Pi camera via picamera2, or a fake one for tests.

The daemon never imports this module's picamera2 path: a device without a camera (or off a Pi) still
classifies images that arrive by other means. Stills are written atomically (a dot-name in the inbox, fsync,
rename) so the watcher's moved-in event fires only for a complete file.
"""

from __future__ import annotations

import io
import itertools
import logging
import os
import time
from pathlib import Path
from typing import Callable, Iterator, List, Optional, Tuple

from edge.atomic import write_atomic
from edge.imaging import synthetic

log = logging.getLogger("edge.daemon.camera")

PICAMERA2_MISSING = (
    "picamera2 is not installed: on Raspberry Pi OS `sudo apt install python3-picamera2` "
    "and create the venv with --system-site-packages"
)


class CameraUnavailable(RuntimeError):
    """No camera can be used here; ``str(err)`` is one line saying what is missing."""


class ImageSource:
    """Produces encoded still images (JPEG bytes)."""

    suffix = ".jpg"

    def capture(self) -> bytes:
        raise NotImplementedError

    def close(self) -> None:
        pass

    def __enter__(self) -> ImageSource:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class PiCamera2Source(ImageSource):
    def __init__(self, resolution: Tuple[int, int] = (4056, 3040), quality: int = 92):
        try:
            from picamera2 import Picamera2  # only on a Pi, from the apt package
        except ImportError:
            raise CameraUnavailable(PICAMERA2_MISSING) from None
        try:
            self._cam = Picamera2()
            self._cam.configure(self._cam.create_still_configuration(main={"size": tuple(resolution)}))
            self._cam.options["quality"] = quality
            self._cam.start()
        except Exception as e:  # noqa: BLE001 - libcamera raises many types; all mean "no usable camera"
            raise CameraUnavailable(
                f"camera not usable: {str(e).splitlines()[0] if str(e) else type(e).__name__}"
            ) from None

    def capture(self) -> bytes:
        buf = io.BytesIO()
        self._cam.capture_file(buf, format="jpeg")
        return buf.getvalue()

    def close(self) -> None:
        self._cam.close()


class FakeSource(ImageSource):
    """Synthetic smears (seeded, so reproducible), or the files of a folder in a cycle."""

    def __init__(self, folder: Optional[Path] = None, seed: int = 0, size: int | Tuple[int, int] = 224):
        self._files: List[Path] = []
        if folder is not None:
            self._files = sorted(p for p in Path(folder).iterdir() if p.suffix.lower() in (".jpg", ".jpeg"))
            if not self._files:
                raise CameraUnavailable(f"fake camera: no JPEG files in {folder}")
        self._cycle = itertools.cycle(self._files) if self._files else None
        self._seeds = itertools.count(seed)
        self.size = size

    def capture(self) -> bytes:
        if self._cycle is not None:
            return next(self._cycle).read_bytes()
        return synthetic.smear_jpeg(next(self._seeds), self.size)


def capture_loop(
    source: ImageSource,
    inbox: Path,
    interval: float = 0.0,
    count: Optional[int] = 1,
    should_stop: Callable[[], bool] = lambda: False,
    on_file: Callable[[Path], None] = lambda p: None,
) -> List[Path]:
    """Capture ``count`` stills (None: until ``should_stop``), ``interval`` seconds apart, into ``inbox``."""
    written: List[Path] = []
    counter: Iterator[int] = itertools.count() if count is None else iter(range(count))
    next_at = time.monotonic()
    for i in counter:
        if should_stop():
            break
        data = source.capture()
        stamp = time.strftime("%Y%m%d-%H%M%S")
        path = write_atomic(Path(inbox), f"capture-{stamp}-{os.getpid()}-{i:06d}{source.suffix}", data)
        written.append(path)
        on_file(path)
        log.info("captured %s (%d bytes)", path.name, len(data))
        if interval > 0:
            next_at += interval
            # Sleeping here is pacing the camera, not synchronisation.
            while not should_stop() and time.monotonic() < next_at:
                time.sleep(min(0.2, max(0.0, next_at - time.monotonic())))
    return written

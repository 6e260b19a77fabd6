"""Thumbnails and explanation maps for the review pages, made on request and kept in small LRU caches.

Neither is stored: a thumbnail is cheap to make again (one reduced-scale decode), and the cache key holds the
file's inode, size and mtime, so a file replaced under the same name is never shown stale. Every image is
read through :func:`edge.imaging.recorded.open_recorded`: no symbolic link followed, only inside the inbox and the
done/rejected folders, and only when its bytes are the recorded ones (size and sha256). A new image route
must read through :meth:`Media.recorded` too.

Memory is the constraint (`serve` must stay within 80 MB beside the daemon on a 1 GB Pi): a JPEG thumbnail
needs only libjpeg-turbo's scaled decode and numpy (OpenCV, +17 MB, only for the rare PNG/TIFF/BMP field),
and an explanation map is made by a child process (`edge-screen explain`), so the model and its interpreter
(+35 MB) are never loaded into the long-running server.
"""

from __future__ import annotations

import logging
import tempfile
import threading
from collections import OrderedDict
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Hashable, Iterator, List, Optional, Sequence

from edge.imaging.recorded import RecordedFile, RecordedFileError, open_recorded, plain_path

log = logging.getLogger("edge.web")

THUMB_PX = 240


class MediaError(Exception):
    """No image to show; ``status`` is the HTTP status, ``str(err)`` says why in one line."""

    def __init__(self, message: str, status: int):
        super().__init__(message)
        self.status = status


class LRU:
    """A tiny thread-safe LRU (functools.lru_cache cannot key on the file's current mtime): image bytes,
    a field's maps per cell, a verified file's identity."""

    def __init__(self, size: int):
        self.size = size
        self._d: OrderedDict[Hashable, Any] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: Hashable) -> Any:
        with self._lock:
            if key in self._d:
                self._d.move_to_end(key)
                return self._d[key]
        return None

    def put(self, key: Hashable, value: Any) -> None:
        with self._lock:
            self._d[key] = value
            self._d.move_to_end(key)
            while len(self._d) > self.size:
                self._d.popitem(last=False)


def image_file(rec) -> Optional[Path]:
    """Where the field's file is now: ``moved_to`` after ``daemon.after = "move"``, else the inbox path; only
    a regular file of the recorded size reached without any symbolic link (else None, "file missing"). For
    the page's "file missing"; bytes to serve are read by :meth:`Media.recorded`, which checks the content."""
    return plain_path((rec.moved_to, rec.path), rec.bytes)


@dataclass
class Media:
    explain: Callable[..., bytes]  # (path, cell_at=None) -> PNG of the explanation map; raises MediaError
    thumbs: LRU
    maps: LRU
    crops: LRU = field(default_factory=lambda: LRU(64))  # per field: the JPEG of each recorded cell
    roots: Optional[Sequence[Path]] = None  # inbox, done and rejected folders; None: any folder, no links

    def __post_init__(self) -> None:
        self._map_lock = threading.Lock()  # one map at a time: each costs a model's worth of memory
        self._verified: LRU = LRU(4096)  # rec.id -> file key whose bytes matched the row (small tuples)

    def recorded(self, rec, known=None) -> RecordedFile:
        """The field's file as recorded, or MediaError (see :mod:`edge.imaging.recorded`)."""
        try:
            return open_recorded((rec.moved_to, rec.path), rec.sha256, rec.bytes, self.roots, known=known)
        except RecordedFileError as e:
            if e.status in (403, 409):
                log.warning("field %s: %s", rec.id, e)
            raise MediaError(str(e), e.status) from None

    def _checked(self, rec) -> RecordedFile:
        """The file opened without links; read and hashed only when this very file (inode, size, mtime) was
        not verified before (then ``data`` is empty)."""
        f = self.recorded(rec, known=self._verified.get(rec.id))
        self._verified.put(rec.id, f.key)
        return f

    def _cached(self, rec, cache: LRU, make: Callable[[RecordedFile], Any]) -> Any:
        # A cache hit still opens the file (no links, same inode, size, mtime); only a miss reads and hashes it.
        f = self._checked(rec)
        key = (rec.id, *f.key)
        data = cache.get(key)
        if data is None:
            if not f.data:  # verified before, but this output is not cached: read (and check) again
                f = self.recorded(rec)
            data = make(f)
            cache.put(key, data)
        return data

    def thumbnail(self, rec) -> bytes:
        return self._cached(rec, self.thumbs, self._make_thumbnail)

    @staticmethod
    def _make_thumbnail(f: RecordedFile) -> bytes:
        data = f.data
        if data[:3] == b"\xff\xd8\xff":
            try:
                return _jpeg_thumbnail(data)
            except ValueError as e:  # simplejpeg's error for data libjpeg cannot read
                raise MediaError(f"file unreadable: {e}", 422) from None
        import cv2

        from edge.imaging.decode import DecodeError, decode_bytes

        try:
            rgb = decode_bytes(data, target=THUMB_PX).rgb
        except DecodeError as e:
            raise MediaError(f"file unreadable: {e}", 422) from None
        h, w = rgb.shape[:2]
        s = THUMB_PX / max(h, w)
        if s < 1:
            rgb = cv2.resize(rgb, (max(1, round(w * s)), max(1, round(h * s))), interpolation=cv2.INTER_AREA)
        ok, buf = cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 82])
        if not ok:
            raise MediaError("thumbnail encoding failed", 500)
        return buf.tobytes()

    def explanation(self, rec, cell_at: Optional[tuple] = None) -> bytes:
        """The occlusion map (:mod:`edge.inference.explain`) of the field (of its cell at ``cell_at``, a recorded
        working-field position), beside the image as the model saw it."""
        f = self._checked(rec)
        key = (rec.id, *f.key)
        maps = self.maps.get(key)  # per field (this very file): cell -> PNG
        if maps is None:
            maps = {}
            self.maps.put(key, maps)
        if cell_at not in maps:
            f = f if f.data else self.recorded(rec)
            with self._map_lock, _private_copy(f) as path:  # the child reads the checked bytes, not the original
                maps[cell_at] = self.explain(path, cell_at)
        return maps[cell_at]

    def cell_crops(self, rec, boxes, size) -> tuple:
        """The recorded cells of the field cut out of its file (:mod:`.cellmedia`), one JPEG each."""
        from edge.web.cellmedia import file_size, make_crops

        def make(f: RecordedFile) -> tuple:
            try:
                return make_crops(f.data, boxes, size or file_size(f.data))
            except ValueError as e:  # simplejpeg's error for data libjpeg cannot read
                raise MediaError(f"file unreadable: {e}", 422) from None

        return self._cached(rec, self.crops, make)

    def field_image(self, rec) -> tuple:
        """(bytes, mimetype) of the whole field at full resolution; not cached (the browser keeps it)."""
        from edge.web.cellmedia import field_image

        f = self.recorded(rec)
        try:
            return field_image(f.data)
        except ValueError as e:
            raise MediaError(f"file unreadable: {e}", 422) from None


@contextmanager
def _private_copy(f: RecordedFile) -> Iterator[Path]:
    """The checked bytes in a file of a private temporary folder, with the original's name (the explain child
    takes a path; handing it the original would read the file again, unchecked)."""
    with tempfile.TemporaryDirectory(prefix="edge-screen-field-") as tmp:
        path = Path(tmp) / (f.path.name or "field")
        path.write_bytes(f.data)
        yield path


def _jpeg_thumbnail(data: bytes) -> bytes:
    import numpy as np
    import simplejpeg

    # libjpeg scales by 1/2..1/8 while decoding: a 12 MP still costs a 1.5 MP decode, not a 12 MP one.
    rgb = simplejpeg.decode_jpeg(data, colorspace="RGB", min_height=THUMB_PX, min_width=THUMB_PX)
    h, w = rgb.shape[:2]
    step = max(1, max(h, w) // THUMB_PX)
    if step > 1:  # box filter: average step x step blocks (what INTER_AREA does for whole factors)
        h2, w2 = h // step * step, w // step * step
        rgb = rgb[:h2, :w2].reshape(h2 // step, step, w2 // step, step, 3).mean(axis=(1, 3)).astype(np.uint8)
    return simplejpeg.encode_jpeg(np.ascontiguousarray(rgb), quality=82, colorspace="RGB")


def explain_in_process(classifier_factory: Callable[[], object]) -> Callable[[Path], bytes]:
    """Maps from a classifier in this process (tests and library use; `serve` uses a child process)."""
    clf: List[Any] = []

    def run(path: Path, cell_at: Optional[tuple] = None) -> bytes:
        from edge.imaging.decode import DecodeError
        from edge.inference.classifier import ModelLoadError
        from edge.inference.explain import explain_image

        try:
            if not clf:
                clf.append(classifier_factory())
            return explain_image(path, clf[0], cell_at=cell_at).png_bytes()
        except ModelLoadError as err:
            raise MediaError(f"no model for explanation maps: {err}", 503) from None
        except DecodeError as err:
            raise MediaError(f"file unreadable: {err}", 422) from None

    return run


def explain_in_child(config_path: Optional[Path], timeout_s: float = 120.0) -> Callable[[Path], bytes]:
    """Maps from `edge-screen explain` in a child process with the same config: the model's memory is
    returned to the system as soon as the map is made."""
    import subprocess
    import sys
    import tempfile

    def run(path: Path, cell_at: Optional[tuple] = None) -> bytes:
        with tempfile.TemporaryDirectory(prefix="edge-screen-map-") as tmp:
            out = Path(tmp) / "map.png"
            cmd = [sys.executable, "-m", "edge", "explain", str(path), "--out", str(out)]
            if cell_at is not None:
                cmd += ["--cell-at", f"{int(cell_at[0])},{int(cell_at[1])}"]
            if config_path is not None:
                cmd += ["--config", str(config_path)]
            try:
                p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s)
            except subprocess.TimeoutExpired:
                raise MediaError(f"no explanation map: took longer than {timeout_s:.0f} s", 504) from None
            if p.returncode != 0 or not out.is_file():
                why = (p.stderr.strip().splitlines() or ["failed"])[-1].removeprefix("Error: ")
                log.warning("explanation of %s failed: %s", path, why)
                raise MediaError(f"no explanation map: {why}", 503 if "model" in why else 422)
            return out.read_bytes()

    return run

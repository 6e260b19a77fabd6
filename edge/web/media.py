"""Thumbnails and explanation maps for the review pages, made on request and kept in small LRU caches.

Neither is stored: a thumbnail is cheap to make again (one reduced-scale decode), and the cache key holds the
file's size and mtime, so a file replaced under the same name is never shown stale.

Memory is the constraint (`serve` must stay within 80 MB beside the daemon on a 1 GB Pi): a JPEG thumbnail
needs only libjpeg-turbo's scaled decode and numpy (OpenCV, +17 MB, only for the rare PNG/TIFF/BMP field),
and an explanation map is made by a child process (`edge-screen explain`), so the model and its interpreter
(+35 MB) are never loaded into the long-running server.
"""
from __future__ import annotations

import logging
import os
import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Hashable, Optional

log = logging.getLogger("edge.web")

THUMB_PX = 240


class MediaError(Exception):
    """No image to show; ``status`` is the HTTP status, ``str(err)`` says why in one line."""

    def __init__(self, message: str, status: int):
        super().__init__(message)
        self.status = status


class LRU:
    """A tiny thread-safe LRU of bytes (functools.lru_cache cannot key on the file's current mtime)."""

    def __init__(self, size: int):
        self.size = size
        self._d: "OrderedDict[Hashable, bytes]" = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: Hashable) -> Optional[bytes]:
        with self._lock:
            if key in self._d:
                self._d.move_to_end(key)
                return self._d[key]
        return None

    def put(self, key: Hashable, value: bytes) -> None:
        with self._lock:
            self._d[key] = value
            self._d.move_to_end(key)
            while len(self._d) > self.size:
                self._d.popitem(last=False)


def image_file(rec) -> Optional[Path]:
    """Where the field's file is now: ``moved_to`` after ``daemon.after = "move"``, else the inbox path."""
    for p in (rec.moved_to, rec.path):
        if p and os.path.isfile(p):
            return Path(p)
    return None


def _key(rec, path: Path) -> tuple:
    st = path.stat()
    return rec.id, str(path), st.st_size, st.st_mtime_ns


@dataclass
class Media:
    explain: Callable[[Path], bytes]  # PNG of the field's explanation map; raises MediaError
    thumbs: LRU
    maps: LRU

    def __post_init__(self) -> None:
        self._map_lock = threading.Lock()  # one map at a time: each costs a model's worth of memory

    @staticmethod
    def _cached(rec, cache: LRU, make: Callable[[Path], bytes]) -> bytes:
        path = image_file(rec)
        if path is None:
            raise MediaError(f"file missing: {rec.moved_to or rec.path}", 404)
        key = _key(rec, path)
        data = cache.get(key)
        if data is None:
            data = make(path)
            cache.put(key, data)
        return data

    def thumbnail(self, rec) -> bytes:
        return self._cached(rec, self.thumbs, self._make_thumbnail)

    @staticmethod
    def _make_thumbnail(path: Path) -> bytes:
        data = path.read_bytes()
        if data[:3] == b"\xff\xd8\xff":
            try:
                return _jpeg_thumbnail(data)
            except ValueError as e:  # simplejpeg's error for data libjpeg cannot read
                raise MediaError(f"file unreadable: {e}", 422) from None
        import cv2

        from edge.imaging.decode import DecodeError, decode_file

        try:
            rgb = decode_file(path, target=THUMB_PX).rgb
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

    def explanation(self, rec) -> bytes:
        """The occlusion map (:mod:`edge.inference.explain`) of the field, beside the image as the model saw it."""
        def make(path: Path) -> bytes:
            with self._map_lock:
                return self.explain(path)
        return self._cached(rec, self.maps, make)


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
    clf = []

    def run(path: Path) -> bytes:
        from edge.imaging.decode import DecodeError
        from edge.inference.explain import explain_image
        from edge.inference.classifier import ModelLoadError

        try:
            if not clf:
                clf.append(classifier_factory())
            return explain_image(path, clf[0]).png_bytes()
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

    def run(path: Path) -> bytes:
        with tempfile.TemporaryDirectory(prefix="edge-screen-map-") as tmp:
            out = Path(tmp) / "map.png"
            cmd = [sys.executable, "-m", "edge", "explain", str(path), "--out", str(out)]
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

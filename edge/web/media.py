"""Thumbnails and explanation maps for the review pages, made on request and kept in small LRU caches.

Neither is stored: a thumbnail is cheap to make again (one reduced-scale decode), and the cache key holds the
file's size and mtime, so a file replaced under the same name is never shown stale. numpy, OpenCV and the
model load on the first image, not at start, so `serve` starts fast and stays small until someone looks.
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
    classifier_factory: Callable[[], object]
    thumbs: LRU
    maps: LRU

    def __post_init__(self) -> None:
        self._clf = None
        self._clf_lock = threading.Lock()  # one interpreter, not thread-safe: one map at a time

    def thumbnail(self, rec) -> bytes:
        path = image_file(rec)
        if path is None:
            raise MediaError(f"file missing: {rec.moved_to or rec.path}", 404)
        key = _key(rec, path)
        data = self.thumbs.get(key)
        if data is None:
            data = self._make_thumbnail(path)
            self.thumbs.put(key, data)
        return data

    @staticmethod
    def _make_thumbnail(path: Path) -> bytes:
        import cv2

        from ..decode import DecodeError, decode_file

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
        """The occlusion map (:mod:`edge.explain`) of the field, beside the image as the model saw it."""
        path = image_file(rec)
        if path is None:
            raise MediaError(f"file missing: {rec.moved_to or rec.path}", 404)
        key = _key(rec, path)
        data = self.maps.get(key)
        if data is not None:
            return data
        from ..decode import DecodeError
        from ..explain import explain_image
        from ..model import ModelLoadError

        with self._clf_lock:
            try:
                if self._clf is None:
                    self._clf = self.classifier_factory()
                e = explain_image(path, self._clf)
            except ModelLoadError as err:
                raise MediaError(f"no model for explanation maps: {err}", 503) from None
            except DecodeError as err:
                raise MediaError(f"file unreadable: {err}", 422) from None
            except Exception as err:  # noqa: BLE001 - a map that cannot be made must not take the page down
                log.exception("explanation of %s failed", rec.id)
                raise MediaError(f"no explanation map: {str(err).splitlines()[0] if str(err) else type(err).__name__}",
                                 500) from None
        if rec.model_sha256 and rec.model_sha256 != getattr(self._clf, "sha256", rec.model_sha256):
            log.info("explanation of %s by model %s; the call was made by %s", rec.id, self._clf.sha256[:12],
                     rec.model_sha256[:12])
        data = e.png_bytes()
        self.maps.put(key, data)
        return data

"""Strict JPEG decoding through the system's libturbojpeg (ctypes), where simplejpeg has no wheel.

simplejpeg is a thin wrapper of libjpeg-turbo's TurboJPEG API; PyPI has no armv7l wheel of it (Raspberry
Pi OS 32-bit), but Debian and Pi OS ship the same library as ``libturbojpeg0``. Calling it directly with
``TJFLAG_STOPONWARNING`` gives what simplejpeg's ``strict=True`` gives: libjpeg's warnings ("Corrupt JPEG
data: N extraneous bytes", "Premature end of JPEG file") stop the decode and come back as the error, so a
JPEG with damaged scan data is refused rather than read as plausible garbage. The default (accurate,
integer) DCT and fancy upsampling are simplejpeg's defaults too, so both give the same pixels.

Contract: :func:`available` says whether the library loaded; :func:`decode` returns an H x W x 3 uint8
array (BGR, or CMYK with 4 channels) at ``eighths``/8 scale, or raises ``ValueError`` with libjpeg's
message.
"""

from __future__ import annotations

import ctypes
import threading
from typing import Iterator, Optional, Tuple

import numpy as np

_TJPF_BGR = 1
_TJPF_CMYK = 11
_TJFLAG_STOPONWARNING = 8192
_TJERR_WARNING = 0

_lib = None
_lock = threading.Lock()
_loaded = False


def _load() -> Optional[ctypes.CDLL]:
    global _lib, _loaded
    with _lock:
        if _loaded:
            return _lib
        _loaded = True
        for name in _library_names():
            if not name:
                continue
            try:
                lib = ctypes.CDLL(name)
                lib.tjInitDecompress.restype = ctypes.c_void_p
                lib.tjDecompressHeader3.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_ulong] + [  # type: ignore[assignment]
                    ctypes.POINTER(ctypes.c_int)
                ] * 4
                lib.tjDecompress2.argtypes = [
                    ctypes.c_void_p,
                    ctypes.c_char_p,
                    ctypes.c_ulong,
                    ctypes.c_void_p,
                    ctypes.c_int,
                    ctypes.c_int,
                    ctypes.c_int,
                    ctypes.c_int,
                    ctypes.c_int,
                ]
                lib.tjGetErrorStr2.argtypes = [ctypes.c_void_p]
                lib.tjGetErrorStr2.restype = ctypes.c_char_p
                lib.tjGetErrorCode.argtypes = [ctypes.c_void_p]
                lib.tjDestroy.argtypes = [ctypes.c_void_p]
                _lib = lib
                break
            except (OSError, AttributeError):  # absent, or older than TurboJPEG 2.0 (no tjGetErrorCode)
                continue
        return _lib


def _library_names() -> Iterator[Optional[str]]:
    """Debian's soname first; the search by name (``ldconfig -p`` in a subprocess: 3 ms on an x86 VM, more on a Pi)
    only where that is not there."""
    yield "libturbojpeg.so.0"
    import ctypes.util

    yield ctypes.util.find_library("turbojpeg")


def available() -> bool:
    return _load() is not None


def _error(lib, handle) -> str:
    msg = lib.tjGetErrorStr2(handle)
    return msg.decode("utf-8", "replace").strip() if msg else "unknown libjpeg error"


def header(data: bytes) -> Tuple[int, int, int]:
    """(width, height, TurboJPEG colour space: 0 RGB, 1 YCbCr, 2 grey, 3 CMYK, 4 YCCK)."""
    lib = _load()
    assert lib is not None  # callers check available() first
    handle = lib.tjInitDecompress()
    try:
        w, h, sub, cs = (ctypes.c_int() for _ in range(4))
        if (
            lib.tjDecompressHeader3(
                handle, data, len(data), ctypes.byref(w), ctypes.byref(h), ctypes.byref(sub), ctypes.byref(cs)
            )
            != 0
        ):
            raise ValueError(_error(lib, handle))
        return w.value, h.value, cs.value
    finally:
        lib.tjDestroy(handle)


def scaled_size(w: int, h: int, eighths: int) -> Tuple[int, int]:
    """TJSCALED: libjpeg's size at ``eighths``/8 scale, rounded up."""
    return -(-w * eighths // 8), -(-h * eighths // 8)


def decode(data: bytes, eighths: int = 8, cmyk: bool = False) -> np.ndarray:
    """Decode strictly at ``eighths``/8 of the full size (libjpeg's scaled IDCT: 1..8 eighths)."""
    lib = _load()
    assert lib is not None  # callers check available() first
    w, h, _ = header(data)
    sw, sh = scaled_size(w, h, eighths)
    channels = 4 if cmyk else 3
    out = np.empty((sh, sw, channels), np.uint8)
    handle = lib.tjInitDecompress()
    try:
        rc = lib.tjDecompress2(
            handle,
            data,
            len(data),
            out.ctypes.data,
            sw,
            sw * channels,
            sh,
            _TJPF_CMYK if cmyk else _TJPF_BGR,
            _TJFLAG_STOPONWARNING,
        )
        if rc != 0:
            # With STOPONWARNING a warning is as final as an error: the pixels are not to be used.
            raise ValueError(_error(lib, handle))
    finally:
        lib.tjDestroy(handle)
    return out

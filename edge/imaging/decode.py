"""Decode: bytes on disk -> RGB pixels, the first stage after identity.

JPEG goes through libjpeg-turbo via simplejpeg in strict mode, so the decoder's own warnings ("Corrupt JPEG
data", "Premature end of JPEG file") are errors: a JPEG with a valid header and damaged scan data decodes to
plausible-looking garbage that a model calls malignant with confidence, so it must be refused, not read.
Where simplejpeg has no wheel (Raspberry Pi OS 32-bit), the system's libturbojpeg (Debian/Pi OS package
``libturbojpeg0``) is called directly with the same strict flag (:mod:`edge.imaging.turbojpeg`): the same library,
the same pixels, the same refusals. Only with neither does OpenCV decode JPEGs, leniently (a missing end
marker is still refused); the log says so once. Other formats (and JPEG colour spaces simplejpeg does not
convert) go through OpenCV.
"""

from __future__ import annotations

import logging
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Tuple

import cv2
import numpy as np

from edge.imaging import turbojpeg

try:  # a wheel exists for x86-64 and aarch64 (armv7l: piwheels only); without it, libturbojpeg via ctypes
    import simplejpeg as _simplejpeg
except ImportError:  # pragma: no cover - exercised only where the wheel is missing (tests force it)
    _simplejpeg = None

log = logging.getLogger(__name__)
_warned_lenient = False

# A decompression bomb is a small file that declares an enormous raster; refuse it from the header,
# before any pixel buffer is allocated. 100 MP is far above any microscope camera (12 MP for HQ cam).
MAX_PIXELS = 100_000_000

SUPPORTED_FORMATS = ("jpeg", "png", "tiff", "bmp")


class DecodeError(ValueError):
    """The bytes are not an image this device can read. ``str(err)`` is a one-line reason."""


@dataclass
class DecodedImage:
    rgb: np.ndarray  # HxWx3 uint8
    format: str
    width: int  # of the file, before any reduced decode
    height: int
    reduced_by: int = 1

    @property
    def scale(self) -> float:
        """Decoded pixels per file pixel (libjpeg's scaled decode is m/8, not always 1/reduced_by)."""
        return self.rgb.shape[1] / max(self.width, 1)


def sniff_format(data: bytes) -> str | None:
    if data[:3] == b"\xff\xd8\xff":
        return "jpeg"
    if data[:8] == b"\x89PNG\r\n\x1a\n":
        return "png"
    if data[:4] in (b"II*\x00", b"MM\x00*"):
        return "tiff"
    if data[:2] == b"BM":
        return "bmp"
    return None


# Recognised but not supported: naming them beats "not an image" for a technician.
OTHER_FORMATS = (
    (b"GIF87a", "GIF"),
    (b"GIF89a", "GIF"),
    (b"RIFF", "WebP"),
    (b"%PDF", "PDF"),
    (b"\x00\x00\x00", "HEIF/HEIC or MP4"),
)


def unsupported_format(data: bytes) -> str | None:
    """The name of a known image/document format this device does not read, else None."""
    if not data or sniff_format(data) is not None:
        return None
    for magic, name in OTHER_FORMATS:
        if data.startswith(magic) and (name != "WebP" or data[8:12] == b"WEBP"):
            return name
    return None


def _jpeg_size(data: bytes) -> Tuple[int, int] | None:
    i = 2
    n = len(data)
    while i + 9 < n:
        if data[i] != 0xFF:
            i += 1
            continue
        marker = data[i + 1]
        if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7 or marker == 0xFF:
            i += 1 if marker == 0xFF else 2
            continue
        seg_len = struct.unpack(">H", data[i + 2 : i + 4])[0]
        # SOF0..SOF15 except DHT (C4), JPG (C8), DAC (CC) carry the frame size.
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
            h, w = struct.unpack(">HH", data[i + 5 : i + 9])
            return w, h
        i += 2 + seg_len
    return None


def image_size(data: bytes, fmt: str) -> Tuple[int, int] | None:
    """Width and height from the header alone, where the format makes that cheap."""
    try:
        if fmt == "jpeg":
            return _jpeg_size(data)
        if fmt == "png" and len(data) >= 24:
            return struct.unpack(">II", data[16:24])
        if fmt == "bmp" and len(data) >= 26:
            w, h = struct.unpack("<ii", data[18:26])
            return abs(w), abs(h)
        if fmt == "tiff":
            return _tiff_size(data)
    except struct.error:
        return None
    return None


def _tiff_size(data: bytes) -> Tuple[int, int] | None:
    """ImageWidth and ImageLength of the first IFD: a 389-byte TIFF can declare 20000 x 20000."""
    end = "<" if data[:2] == b"II" else ">"
    off = struct.unpack(end + "I", data[4:8])[0]
    n = struct.unpack(end + "H", data[off : off + 2])[0]
    dims = {}
    for k in range(n):
        e = off + 2 + 12 * k
        tag, typ = struct.unpack(end + "HH", data[e : e + 4])
        if tag in (256, 257):  # SHORT (3) or LONG (4), stored in the value field
            dims[tag] = struct.unpack(end + ("H" if typ == 3 else "I"), data[e + 8 : e + (10 if typ == 3 else 12)])[0]
    return (dims[256], dims[257]) if len(dims) == 2 else None


def _to_rgb8(img: np.ndarray) -> np.ndarray:
    """Grayscale, alpha and 16-bit rasters become plain 8-bit RGB."""
    if img.dtype == np.uint16:
        img = (img >> 8).astype(np.uint8)
    elif img.dtype in (np.float32, np.float64):
        img = np.clip(img * 255.0, 0, 255).astype(np.uint8)
    elif img.dtype != np.uint8:
        raise DecodeError(f"unsupported pixel type {img.dtype}")
    if img.ndim == 2:
        return cv2.cvtColor(img, cv2.COLOR_GRAY2RGB)
    if img.ndim == 3 and img.shape[2] == 1:
        return cv2.cvtColor(img[:, :, 0], cv2.COLOR_GRAY2RGB)
    if img.ndim == 3 and img.shape[2] == 3:
        return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)
    if img.ndim == 3 and img.shape[2] == 4:
        # Composite onto white: a transparent region of a smear photo is "no sample", i.e. empty glass.
        bgr = img[:, :, :3].astype(np.float32)
        a = img[:, :, 3:4].astype(np.float32) / 255.0
        out = bgr * a + 255.0 * (1.0 - a)
        return cv2.cvtColor(out.astype(np.uint8), cv2.COLOR_BGR2RGB)
    raise DecodeError(f"unsupported channel layout {img.shape}")


def decode_bytes(data: bytes, target: int = 224, max_pixels: int = MAX_PIXELS) -> DecodedImage:
    """Decode image bytes to RGB uint8; large JPEGs are decoded at 1/2, 1/4 or 1/8 scale.

    The reduced decode keeps the short side at least ``target`` (the IDCT scaling already averages each
    8x8 block), so a 12-megapixel frame costs about as much as a small one.
    """
    if not data:
        raise DecodeError("empty file (0 bytes)")
    fmt = sniff_format(data)
    if fmt is None:
        raise DecodeError("not a supported image (expected JPEG, PNG, TIFF or BMP)")
    size = image_size(data, fmt)
    if size is not None:
        w, h = size
        if w <= 0 or h <= 0:
            raise DecodeError(f"invalid {fmt} header (size {w}x{h})")
        if w * h > max_pixels:
            raise DecodeError(f"image too large: {w}x{h} pixels exceeds the {max_pixels:,} pixel limit")
    reduced = 1
    backend = jpeg_decoder() if fmt == "jpeg" else "opencv"
    if backend == "simplejpeg":
        img, reduced = _decode_jpeg_strict(data, size, target)
    elif backend == "turbojpeg":
        img, reduced = _decode_turbojpeg(data, size, target)
    else:
        img, reduced = _decode_cv2(data, fmt, size, target)
    rgb = _to_rgb8(img)
    if size is None:
        size = (rgb.shape[1] * reduced, rgb.shape[0] * reduced)
        if size[0] * size[1] > max_pixels:
            raise DecodeError(f"image too large: {size[0]}x{size[1]} pixels exceeds the {max_pixels:,} pixel limit")
    return DecodedImage(
        rgb=np.ascontiguousarray(rgb), format=fmt, width=int(size[0]), height=int(size[1]), reduced_by=reduced
    )


def jpeg_decoder() -> str:
    """Which JPEG decoder this device uses: "simplejpeg", "turbojpeg" (both strict) or "opencv" (lenient)."""
    global _warned_lenient
    if _simplejpeg is not None:
        return "simplejpeg"
    if turbojpeg.available():
        return "turbojpeg"
    if not _warned_lenient:
        _warned_lenient = True
        log.warning(
            "neither simplejpeg nor libturbojpeg is installed: JPEGs are decoded by OpenCV, which "
            "cannot refuse corrupt scan data (apt install libturbojpeg0, or pip install simplejpeg)"
        )
    return "opencv"


def _reduction(w: int, h: int, target: int) -> int:
    for f in (8, 4, 2):
        if min(w, h) // f >= target:
            return f
    return 1


def _decode_turbojpeg(data: bytes, size, target: int):
    """libturbojpeg with warnings as errors (what simplejpeg's strict mode is); BGR and the reduction."""
    try:
        w, h, colorspace = turbojpeg.header(data)
    except ValueError as e:
        raise DecodeError(f"corrupt JPEG header: {_first_line(e)}") from None
    cmyk = colorspace in (3, 4)
    eighths = 8 if cmyk else _eighths(w, h, target)
    try:
        img = turbojpeg.decode(data, eighths, cmyk=cmyk)
    except ValueError as e:
        msg = _first_line(e)
        if "premature end of jpeg file" in msg.lower():
            raise DecodeError(f"truncated JPEG: {msg}") from None
        raise DecodeError(f"corrupt JPEG data: {msg}") from None
    if cmyk:  # checked strictly above; OpenCV converts CMYK/YCCK to BGR
        return _decode_cv2(data, "jpeg", size, target)
    return img, max(1, int(round(w / max(img.shape[1], 1))))


def _eighths(w: int, h: int, target: int) -> int:
    """The scale simplejpeg picks for :func:`_decode_jpeg_strict`'s request (at least 1/factor smaller,
    each side at least min(side/factor, target)): the smallest m/8 that satisfies it, so that both
    decoders give the same pixels."""
    factor = _reduction(w, h, target)
    min_w, min_h = min(w // factor, target), min(h // factor, target)
    allowed = [m for m in range(1, 9) if m * factor <= 8]
    for m in allowed:
        sw, sh = turbojpeg.scaled_size(w, h, m)
        if sw >= min_w and sh >= min_h:
            return m
    return allowed[-1]


def _decode_cv2(data: bytes, fmt: str, size, target: int):
    buf = np.frombuffer(data, dtype=np.uint8)
    reduced = 1
    if fmt == "jpeg":
        w, h = size if size else (0, 0)
        short = min(w, h)
        for factor, flag in (
            (8, cv2.IMREAD_REDUCED_COLOR_8),
            (4, cv2.IMREAD_REDUCED_COLOR_4),
            (2, cv2.IMREAD_REDUCED_COLOR_2),
        ):
            if short and short // factor >= target:
                reduced = factor
                img = cv2.imdecode(buf, flag)
                break
        else:
            img = cv2.imdecode(buf, cv2.IMREAD_COLOR)
    else:
        img = cv2.imdecode(buf, cv2.IMREAD_UNCHANGED)
    if img is None or img.size == 0:
        raise DecodeError(f"cannot decode {fmt} data (truncated or corrupt file)")
    if fmt == "jpeg" and _looks_truncated_jpeg(data):
        raise DecodeError("truncated JPEG (no end-of-image marker)")
    return img, reduced


def _decode_jpeg_strict(data: bytes, size, target: int):
    """libjpeg-turbo with its warnings as errors; returns BGR (as OpenCV would) and the reduction factor."""
    try:
        h, w, colorspace, _ = _simplejpeg.decode_jpeg_header(data)
    except ValueError as e:
        raise DecodeError(f"corrupt JPEG header: {_first_line(e)}") from None
    if colorspace in ("CMYK", "YCCK"):
        # simplejpeg does not convert these to RGB: check the scan strictly, then let OpenCV convert.
        try:
            _simplejpeg.decode_jpeg(data, colorspace="CMYK", min_height=1, min_width=1, min_factor=8, strict=True)
        except ValueError as e:
            raise DecodeError(f"corrupt JPEG data: {_first_line(e)}") from None
        return _decode_cv2(data, "jpeg", size, target)
    factor = _reduction(w, h, target)
    try:
        # min_factor only takes effect together with a minimum size.
        bgr = _simplejpeg.decode_jpeg(
            data,
            colorspace="BGR",
            min_height=min(h // factor, target),
            min_width=min(w // factor, target),
            min_factor=factor,
            strict=True,
        )
    except ValueError as e:
        msg = _first_line(e)
        if "premature end of jpeg file" in msg.lower():
            raise DecodeError(f"truncated JPEG: {msg}") from None
        raise DecodeError(f"corrupt JPEG data: {msg}") from None
    return bgr, max(1, int(round(w / max(bgr.shape[1], 1))))


def _first_line(e: Exception) -> str:
    return (str(e).splitlines() or [type(e).__name__])[0].strip()


def _looks_truncated_jpeg(data: bytes) -> bool:
    # libjpeg pads a truncated stream with grey and returns "success"; the missing EOI is the tell.
    # Some cameras append a few padding bytes after EOI, so look near the end rather than at it.
    return b"\xff\xd9" not in data[-64:]


def decode_file(path: str | Path, target: int = 224, max_pixels: int = MAX_PIXELS) -> DecodedImage:
    try:
        data = Path(path).read_bytes()
    except OSError as e:
        raise DecodeError(f"cannot read file: {e.strerror or e}") from e
    return decode_bytes(data, target=target, max_pixels=max_pixels)

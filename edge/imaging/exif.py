"""Capture time from a JPEG's Exif block. OpenCV does not expose Exif tags and only DateTimeOriginal (or
DateTime) is needed, so a small hand parser beats another imaging dependency on the device."""

from __future__ import annotations

import struct
from datetime import datetime
from typing import Dict, Optional


def exif_datetime(data: bytes) -> Optional[datetime]:
    """DateTimeOriginal from a JPEG's Exif block, reading only the first 64 KiB; None when absent."""
    if data[:2] != b"\xff\xd8":
        return None
    i, head = 2, data[:65536]
    while i + 4 <= len(head) and head[i] == 0xFF:
        marker, seg_len = head[i + 1], struct.unpack(">H", head[i + 2 : i + 4])[0]
        if marker == 0xE1 and head[i + 4 : i + 10] == b"Exif\x00\x00":
            return _tiff_datetime(head[i + 10 : i + 2 + seg_len])
        if marker == 0xDA:  # start of scan: no Exif before the pixels
            return None
        i += 2 + seg_len
    return None


def _tiff_datetime(t: bytes) -> Optional[datetime]:
    try:
        end = {b"II": "<", b"MM": ">"}[t[:2]]

        def ifd(off: int) -> Dict[int, tuple]:
            n = struct.unpack(end + "H", t[off : off + 2])[0]
            out = {}
            for k in range(n):
                e = off + 2 + 12 * k
                tag, typ, cnt, val = struct.unpack(end + "HHII", t[e : e + 12])
                out[tag] = (typ, cnt, val, e + 8)
            return out

        ifd0 = ifd(struct.unpack(end + "I", t[4:8])[0])
        tags = ifd(ifd0[0x8769][2]) if 0x8769 in ifd0 else {}
        for tag, where in ((0x9003, tags), (0x0132, ifd0)):  # DateTimeOriginal, else DateTime
            if tag in where:
                _, cnt, val, _ = where[tag]
                raw = t[val : val + cnt].split(b"\x00")[0].decode("ascii")
                when = datetime.strptime(raw, "%Y:%m:%d %H:%M:%S")
                # A camera whose clock was never set writes 0001:01:01 or 1970: no capture time at all.
                return when if when.year > 1970 else None
    except (KeyError, struct.error, ValueError, UnicodeDecodeError):
        return None
    return None

"""Cell crops and the full field for the review pages, cut from the recorded file by the recorded boxes.

No preprocessing runs here and OpenCV is not loaded for a JPEG (the server's memory budget, see
:mod:`.media`): libjpeg decodes the file, at a reduced scale when the cells would still be at least
``CROP_MIN`` pixels across, and numpy cuts the boxes out. A crop is the cell as the slide shows it, not the
stain-normalised model input (that one is in the cell's explanation map).
"""

from __future__ import annotations

from typing import List, Sequence, Tuple

CROP_MIN = 128  # pixels a crop keeps at least (when the file has them); the page shows it at 120 CSS px
CROP_MAX = 256  # larger crops are reduced by a whole factor
JPEG = b"\xff\xd8\xff"


def _decode(data: bytes, min_side: Tuple[int, int]):
    """RGB of the file's bytes and its scale (decoded pixels per file pixel)."""
    if data[:3] == JPEG:
        import simplejpeg

        w, h = _jpeg_size(data)
        rgb = simplejpeg.decode_jpeg(
            data, colorspace="RGB", min_width=min(w, min_side[0]), min_height=min(h, min_side[1])
        )
        return rgb, rgb.shape[1] / max(w, 1)
    from edge.imaging.decode import decode_bytes

    img = decode_bytes(data, target=max(min_side))
    return img.rgb, img.scale


def _jpeg_size(data: bytes) -> Tuple[int, int]:
    import simplejpeg

    h, w = simplejpeg.decode_jpeg_header(data)[:2]
    return w, h


def _cut(rgb, box: Sequence[float]):
    """The box out of ``rgb``, grey where it reaches past the edge (a cell at the border stays centred)."""
    import numpy as np

    x, y, w, h = (int(round(v)) for v in box)
    w, h = max(w, 1), max(h, 1)
    out = np.full((h, w, 3), 200, np.uint8)
    H, W = rgb.shape[:2]
    x0, y0, x1, y1 = max(x, 0), max(y, 0), min(x + w, W), min(y + h, H)
    if x1 > x0 and y1 > y0:
        out[y0 - y : y1 - y, x0 - x : x1 - x] = rgb[y0:y1, x0:x1]
    step = max(1, max(w, h) // CROP_MAX)
    if step > 1:  # box filter by a whole factor, as the thumbnails
        h2, w2 = h // step * step, w // step * step
        out = out[:h2, :w2].reshape(h2 // step, step, w2 // step, step, 3).mean(axis=(1, 3)).astype(np.uint8)
    return np.ascontiguousarray(out)


def make_crops(data: bytes, boxes: Sequence[Sequence[int]], file_size: Tuple[int, int]) -> Tuple[bytes, ...]:
    """One JPEG per box (file pixels), in the order given, from the file's bytes (as checked by
    :meth:`edge.web.media.Media.recorded`: this module never opens a path)."""
    import simplejpeg

    if not boxes:
        return ()
    smallest = min(min(b[2], b[3]) for b in boxes)
    # The least decode that still leaves the smallest cell CROP_MIN pixels across.
    need = min(1.0, CROP_MIN / max(smallest, 1))
    fw, fh = file_size
    rgb, scale = _decode(data, (max(1, int(fw * need)), max(1, int(fh * need))))
    out: List[bytes] = []
    for b in boxes:
        crop = _cut(rgb, [v * scale for v in b])
        out.append(simplejpeg.encode_jpeg(crop, quality=90, colorspace="RGB"))
    return tuple(out)


def file_size(data: bytes) -> Tuple[int, int]:
    """(width, height) of the file's picture, read from its header (JPEG) or by decoding it."""
    if data[:3] == JPEG:
        return _jpeg_size(data)
    from edge.imaging.decode import decode_bytes

    img = decode_bytes(data)
    return img.width, img.height


def field_image(data: bytes) -> Tuple[bytes, str]:
    """The whole field at full resolution for the browser: a JPEG or PNG file as it is, anything else
    (TIFF, BMP) converted to PNG."""
    if data[:3] == JPEG:
        return data, "image/jpeg"
    if data[:8] == b"\x89PNG\r\n\x1a\n":
        return data, "image/png"
    import cv2

    from edge.imaging.decode import decode_bytes

    ok, buf = cv2.imencode(".png", cv2.cvtColor(decode_bytes(data).rgb, cv2.COLOR_RGB2BGR))
    if not ok:
        raise ValueError("PNG encoding failed")
    return buf.tobytes(), "image/png"


__all__ = ["CROP_MIN", "field_image", "file_size", "make_crops"]

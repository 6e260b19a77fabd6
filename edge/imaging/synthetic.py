"""Deterministic synthetic blood-smear images, for tests and benchmarks where ../shared is absent.

They are not meant to fool the model, only to exercise every stage the way a real smear does: a pale
background, pink red-cell discs with a paler centre, and a few purple nucleated cells that the LAB/KMeans
segmentation picks up. The same seed always gives the same bytes (for a given OpenCV encoder).
"""

from __future__ import annotations

from typing import Iterator

import cv2
import numpy as np

BAD_KINDS = ("blurred", "black", "white", "uniform", "gray-noise")


def smear(
    seed: int = 0, size: int | tuple[int, int] = 224, n_rbc: int | None = None, n_wbc: int | None = None
) -> np.ndarray:
    """An RGB uint8 smear of ``size`` (an int for a square, or (width, height))."""
    w, h = (size, size) if isinstance(size, int) else size
    rng = np.random.default_rng(seed)
    scale = min(w, h) / 224.0
    bg = np.array([247, 240, 246], dtype=np.float32) + rng.uniform(-6, 4, 3)
    img: np.ndarray = np.empty((h, w, 3), dtype=np.float32)
    img[:] = bg
    # The same density of red cells at any frame size (their radius grows with `scale`).
    n_rbc = int(rng.integers(25, 45) * (w * h) / (224 * 224) / scale**2) if n_rbc is None else n_rbc
    for _ in range(n_rbc):
        c = (int(rng.uniform(0, w)), int(rng.uniform(0, h)))
        r = max(2, int(rng.uniform(8, 12) * scale))
        pink = np.array([228, 202, 212], dtype=np.float32) + rng.uniform(-8, 8, 3)
        cv2.circle(img, c, r, pink.tolist(), -1, lineType=cv2.LINE_AA)
        # The central pallor of a red cell: paler middle, darker rim.
        cv2.circle(img, c, max(1, int(r * 0.45)), ((pink + bg) / 2).tolist(), -1, lineType=cv2.LINE_AA)
    n_wbc = int(rng.integers(1, 4)) if n_wbc is None else n_wbc
    for _ in range(n_wbc):
        # Inside the centre square the device keeps of a wide frame, clear of the scale-bar corner.
        side = min(w, h)
        c = (int(w / 2 + rng.uniform(-0.35, 0.35) * side), int(h / 2 + rng.uniform(-0.35, 0.3) * side))
        r = max(3, int(rng.uniform(16, 24) * scale))
        cyto = np.array([200, 170, 225], dtype=np.float32) + rng.uniform(-10, 10, 3)
        cv2.circle(img, c, r, cyto.tolist(), -1, lineType=cv2.LINE_AA)
        nucleus = np.array([105, 45, 150], dtype=np.float32) + rng.uniform(-15, 15, 3)
        axes = (max(2, int(r * rng.uniform(0.6, 0.85))), max(2, int(r * rng.uniform(0.5, 0.8))))
        cv2.ellipse(img, c, axes, float(rng.uniform(0, 180)), 0, 360, nucleus.tolist(), -1, lineType=cv2.LINE_AA)
    img = cv2.GaussianBlur(img, (0, 0), 0.7 * max(scale, 1.0))
    img = img + rng.normal(0, 2.5, img.shape).astype(np.float32)
    return np.clip(img, 0, 255).astype(np.uint8)


def bad_image(kind: str, seed: int = 0, size: int = 224) -> np.ndarray:
    """Images a quality gate must refuse: out of focus, black, white, a flat field, or sensor noise."""
    rng = np.random.default_rng(seed)
    if kind == "blurred":
        return cv2.GaussianBlur(smear(seed, size), (0, 0), 6.0 * size / 224)
    if kind == "black":
        return np.clip(rng.normal(3, 1.5, (size, size, 3)), 0, 255).astype(np.uint8)
    if kind == "white":
        return np.full((size, size, 3), 255, dtype=np.uint8)
    if kind == "uniform":
        return np.full((size, size, 3), rng.integers(90, 200, 3), dtype=np.uint8)
    if kind == "gray-noise":
        g = rng.normal(128, 40, (size, size)).clip(0, 255).astype(np.uint8)
        return np.repeat(g[:, :, None], 3, axis=2)
    raise ValueError(f"unknown bad image kind {kind!r}; one of {', '.join(BAD_KINDS)}")


def encode(rgb: np.ndarray, fmt: str = "jpeg", quality: int = 92) -> bytes:
    ext = {"jpeg": ".jpg", "png": ".png", "bmp": ".bmp", "tiff": ".tiff"}[fmt]
    params = [cv2.IMWRITE_JPEG_QUALITY, quality] if fmt == "jpeg" else []
    ok, buf = cv2.imencode(ext, cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), params)
    if not ok:
        raise RuntimeError(f"OpenCV could not encode {fmt}")
    return buf.tobytes()


def smear_jpeg(seed: int = 0, size: int | tuple[int, int] = 224, quality: int = 92) -> bytes:
    return encode(smear(seed, size), "jpeg", quality)


def smears(n: int, start_seed: int = 0, size: int | tuple[int, int] = 224) -> Iterator[bytes]:
    for i in range(n):
        yield smear_jpeg(start_seed + i, size)

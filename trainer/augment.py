"""Capture augmentation of whole fields, applied before the shared preprocessing.

Blur, exposure, JPEG re-encoding, sensor noise and a stain change happen at the microscope, before the
device segments and crops anything, so they are applied to the field and the degraded field then goes
through :func:`edge.imaging.preprocess.preprocess` exactly as the device would run it. Augmented copies are made
once, up front, and feed every training phase (the head on cached features as well as fine-tuning).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import cv2
import numpy as np


@dataclass(frozen=True)
class CaptureAugment:
    p_blur: float = 0.5
    max_blur_sigma: float = 2.0
    p_exposure: float = 0.7
    exposure: tuple = (0.7, 1.45)  # multiplicative gain: a lamp or shutter change scales every pixel
    p_jpeg: float = 0.5
    jpeg_quality: tuple = (35, 95)
    p_noise: float = 0.3
    max_noise_sd: float = 6.0
    p_stain: float = 0.5
    stain_shift: float = 6.0  # LAB units on A and B
    stain_gain: tuple = (0.8, 1.25)
    # Slide context (trainer/cellset.py applies these, they need other fields): the cells pasted onto
    # another training field's painted-out background, and the whole field moved onto another field's
    # colour statistics, so neither the slide around a cell nor its overall stain can tell the class.
    p_other_slide: float = 0.5
    p_reinhard: float = 0.3
    # Another lab's optics and stain (version 3 preprocessing undoes scale and glass, so these teach the
    # model what is left after normalisation): the field resampled (log-uniform), HED stain jitter.
    p_rescale: float = 0.4
    rescale: tuple = (0.7, 3.0)
    p_hed: float = 0.6
    hed_sigma: float = 0.08
    hed_bias: float = 0.04
    # How much stain the slide took up (staining time, smear thickness): every optical density scaled by
    # one factor (log-uniform), so the cells come out darker or paler while the glass stays white. The
    # device keeps a cell's lightness (a hematogone's darker chromatin is a real cue) and the model reads a
    # darker stain as benign. Off in the shipped recipe: at 0.5 it cost 8 points of specificity and did not
    # make recoloured fields flip less (README, "What reaches a clinic without review").
    p_stain_amount: float = 0.0
    stain_amount: tuple = (0.65, 1.6)

    def __call__(self, rgb: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        x = rgb
        if rng.random() < self.p_hed:
            x = hed_jitter(x, rng, self.hed_sigma, self.hed_bias)
        if rng.random() < self.p_stain:
            x = stain_change(x, rng, self.stain_shift, self.stain_gain)
        if self.p_stain_amount and rng.random() < self.p_stain_amount:  # no draw when off: the recipe's stream
            lo, hi = self.stain_amount
            x = stain_amount(x, float(np.exp(rng.uniform(np.log(lo), np.log(hi)))))
        if rng.random() < self.p_blur:
            x = cv2.GaussianBlur(x, (0, 0), rng.uniform(0.3, self.max_blur_sigma))
        if rng.random() < self.p_exposure:
            x = np.clip(x.astype(np.float32) * rng.uniform(*self.exposure), 0, 255).astype(np.uint8)
        if rng.random() < self.p_noise:
            x = np.clip(x + rng.normal(0, rng.uniform(1, self.max_noise_sd), x.shape), 0, 255).astype(np.uint8)
        if rng.random() < self.p_jpeg:
            x = jpeg_roundtrip(x, int(rng.integers(*self.jpeg_quality)))
        return x


def stain_change(rgb: np.ndarray, rng: np.random.Generator, shift: float, gain: tuple) -> np.ndarray:
    """A different stain batch: the A and B channels shifted and stretched, differently for the stained
    (dark) and the pale part of the field, so it is not just the affine change normalisation undoes."""
    lab = cv2.cvtColor(rgb.astype(np.float32) / 255.0, cv2.COLOR_RGB2LAB)
    dark = np.clip((85.0 - lab[..., 0]) / 30.0, 0, 1)[..., None]  # ~1 on stained cells, 0 on glass
    for_bg = rng.uniform(-shift, shift, 2) * 0.5
    for_cells = rng.uniform(-shift, shift, 2)
    g = rng.uniform(*gain, 2)
    ab = lab[..., 1:]
    lab[..., 1:] = ab * (1 + (g - 1) * dark) + for_bg * (1 - dark) + for_cells * dark
    out = cv2.cvtColor(lab, cv2.COLOR_LAB2RGB)
    return np.clip(out * 255.0 + 0.5, 0, 255).astype(np.uint8)


# Ruifrok & Johnston's haematoxylin, eosin and DAB optical densities (rows), as in scikit-image's rgb2hed:
# a Romanowsky stain's azure/methylene blue and eosin act like the first two.
_HED = np.array([[0.65, 0.70, 0.29], [0.07, 0.99, 0.11], [0.27, 0.57, 0.78]], np.float32)
_HED /= np.linalg.norm(_HED, axis=1, keepdims=True)
_HED_INV = np.linalg.inv(_HED).astype(np.float32)


def hed_jitter(rgb: np.ndarray, rng: np.random.Generator, sigma: float, bias: float) -> np.ndarray:
    """Stain amounts perturbed in optical-density space (Tellez et al. 2018): each stain's concentration
    scaled by 1 +- sigma and shifted by +- bias, so the blue and the pink parts of a stain change
    independently, as between two laboratories' staining batches."""
    od = -np.log(np.maximum(rgb.astype(np.float32), 1.0) / 255.0)
    conc = od.reshape(-1, 3) @ _HED_INV
    conc = conc * rng.uniform(1 - sigma, 1 + sigma, 3).astype(np.float32) + rng.uniform(-bias, bias, 3).astype(
        np.float32
    )
    out = np.exp(-(conc @ _HED)).reshape(rgb.shape) * 255.0
    return np.clip(out + 0.5, 0, 255).astype(np.uint8)


def stain_amount(rgb: np.ndarray, k: float) -> np.ndarray:
    """The slide with ``k`` times the stain (Beer-Lambert: every pixel's optical density scaled by ``k``)."""
    od = -np.log(np.maximum(rgb.astype(np.float32), 1.0) / 255.0)
    return np.clip(np.exp(-k * od) * 255.0 + 0.5, 0, 255).astype(np.uint8)


def rescale(rgb: np.ndarray, rng: np.random.Generator, lo: float, hi: float) -> np.ndarray:
    """Another microscope's magnification: the field resampled by a log-uniform factor."""
    f = float(np.exp(rng.uniform(np.log(lo), np.log(hi))))
    interp = cv2.INTER_AREA if f < 1 else cv2.INTER_LINEAR
    h, w = rgb.shape[:2]
    return cv2.resize(rgb, (max(8, int(round(w * f))), max(8, int(round(h * f)))), interpolation=interp)


def paint_out(resized: np.ndarray, cells: np.ndarray, grow: int = 3) -> np.ndarray:
    """The field with its white cells inpainted from the surrounding glass and red cells."""
    m = cv2.dilate(cells.astype(np.uint8), np.ones((2 * grow + 1,) * 2, np.uint8))
    return cv2.inpaint(resized, m, 5, cv2.INPAINT_TELEA)


def onto_other_slide(resized: np.ndarray, cells: np.ndarray, other: np.ndarray, other_cells: np.ndarray) -> np.ndarray:
    """This field's white cells, at their own places, on another field whose own cells were painted out."""
    out = paint_out(other, other_cells)
    m = cv2.dilate(cells.astype(np.uint8), np.ones((3, 3), np.uint8)).astype(bool)
    out[m] = resized[m]
    return out


def white_cell_regions(mask: np.ndarray, centres: list) -> np.ndarray:
    """The components of a stained mask that hold a found white cell (``centres``: their (y, x)). Another
    laboratory's red cells may stain into the mask (BCCD: ~40 % of a field); they are the slide, not a cell."""
    if not centres:
        return np.zeros(mask.shape, bool)
    _, lbl = cv2.connectedComponents(mask.astype(np.uint8), connectivity=8)
    return np.isin(lbl, [lbl[y, x] for y, x in centres]) & mask


def cells_onto_slide(
    field: np.ndarray,
    cells: np.ndarray,
    other: np.ndarray,
    other_cells: np.ndarray,
    rng: np.random.Generator,
    keep_out: Optional[np.ndarray] = None,
    max_cells: int = 3,
    margin: int = 4,
) -> Optional[np.ndarray]:
    """``field``'s white cells (``cells``: their regions; the largest ``max_cells``) on ``other``'s slide,
    its own white cells painted out, at random places of it: fields of two laboratories differ in size, so
    a cell cannot stay where it was. Both fields at the training scale, so a cell keeps its size beside the
    other slide's red cells. A cell is placed whole, ``margin`` pixels inside the border (the device scores
    no cell cut by it), off ``keep_out`` (the scale-bar box, where it looks for none) and off the cells placed
    before it; None when not one fits."""
    out = paint_out(other, other_cells)
    taken = np.zeros(out.shape[:2], bool) if keep_out is None else keep_out.copy()
    n, lbl, stats, _ = cv2.connectedComponentsWithStats(
        cv2.dilate(cells.astype(np.uint8), np.ones((3, 3), np.uint8)), connectivity=8
    )
    placed = 0
    for k in sorted(range(1, n), key=lambda k: -stats[k, cv2.CC_STAT_AREA])[:max_cells]:
        x, y, w, h = (int(v) for v in stats[k, :4])
        room_y, room_x = out.shape[0] - h - 2 * margin, out.shape[1] - w - 2 * margin
        if room_y < 0 or room_x < 0:
            continue
        m = lbl[y : y + h, x : x + w] == k
        for _ in range(8):
            ty, tx = margin + int(rng.integers(room_y + 1)), margin + int(rng.integers(room_x + 1))
            if not taken[ty : ty + h, tx : tx + w][m].any():
                out[ty : ty + h, tx : tx + w][m] = field[y : y + h, x : x + w][m]
                taken[ty : ty + h, tx : tx + w] |= cv2.dilate(m.astype(np.uint8), np.ones((9, 9), np.uint8)) > 0
                placed += 1
                break
    return out if placed else None


def lab_stats(rgb: np.ndarray) -> np.ndarray:
    """Whole-image LAB means then spreads (float LAB)."""
    lab = cv2.cvtColor(rgb.astype(np.float32) / 255.0, cv2.COLOR_RGB2LAB).reshape(-1, 3)
    return np.concatenate([lab.mean(0), lab.std(0)])


def reinhard_to(rgb: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Classic whole-image Reinhard transfer onto ``target`` (L, A, B means then spreads)."""
    lab = cv2.cvtColor(rgb.astype(np.float32) / 255.0, cv2.COLOR_RGB2LAB)
    src = lab_stats(rgb)
    lab = (lab - src[:3]) / np.maximum(src[3:], 1e-3) * target[3:] + target[:3]
    lab[..., 0] = np.clip(lab[..., 0], 0, 100)
    return np.clip(cv2.cvtColor(lab, cv2.COLOR_LAB2RGB) * 255 + 0.5, 0, 255).astype(np.uint8)


def jpeg_roundtrip(rgb: np.ndarray, quality: int) -> np.ndarray:
    ok, buf = cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, quality])
    return cv2.cvtColor(cv2.imdecode(buf, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)

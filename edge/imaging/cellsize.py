"""A field's scale guessed from its white cell where no red cell can be measured (:mod:`edge.imaging.optics`).

Two kinds of picture have no red cells to measure: a cell already cut out onto black (some analysers and
datasets), whose whole blob is the cell; and a single-cell image at another laboratory's magnification
(a crop a few red cells wide, most of them cut by its border). The red cell's 7.8 um is the only ruler
the pipeline trusts; a white cell's size varies by type (a lymphocyte 1.0-1.5 red cells across, a blast
1.5-2.5), so a scale from it is a guess, used only where it beats assuming the training scale and always
sent to review ("magnification not measured ... guessed from the white cell's size").
"""

from __future__ import annotations

from typing import Optional

import cv2
import numpy as np

from edge.imaging import pixels
from edge.imaging.segmentation import to_lab


def largest_blob_diameter(mask: np.ndarray) -> Optional[float]:
    """Diameter of the disc with the area of ``mask``'s largest 8-connected region; None without one."""
    n, _, st, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8), connectivity=8)
    if n <= 1:
        return None
    area = float(st[1:, cv2.CC_STAT_AREA].max())
    return float(np.sqrt(4.0 * area / np.pi))


def white_cell_diameter(rgb: np.ndarray, cells: np.ndarray) -> Optional[float]:
    """Diameter (pixels of ``rgb``) of the field's largest white cell, or None.

    Among the stained pixels ``cells`` (darker than the glass), a white cell is the purple part: LAB a - b
    high (magenta and blue), where a red cell is magenta and yellow. The stained pixels are split by their
    own Otsu threshold on a - b, a closing joins a nucleus's lobes and its cytoplasm's rim, and the largest
    region is taken. Measured where the red cells could not be: 81 validation fields magnified x4 and cut
    to 257 px around their largest cell, guess / 4 at 0.76-1.41 (10th-90th percentile; blasts' medians
    0.95-1.06); 18 held-out PBC lymphocytes and monocytes cut to 160 px, guess / the whole image's measured
    scale 0.68-1.04 (median 0.79: a lymphocyte is smaller than the 1.6 red cells a blast is taken to be).
    """
    if cells.sum() < 50:
        return None
    lab = to_lab(np.ascontiguousarray(rgb)).astype(np.int16)
    purple = lab[..., 1] - lab[..., 2]
    shifted = np.clip(purple + 128, 0, 255).astype(np.uint8)
    split = pixels.otsu_threshold(shifted[cells][None, :]) - 128
    k = max(3, min(rgb.shape[:2]) // 40) | 1
    closed = cv2.morphologyEx(
        (cells & (purple > split)).astype(np.uint8),
        cv2.MORPH_CLOSE,
        cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (k, k)),
    )
    return largest_blob_diameter(closed.astype(bool))

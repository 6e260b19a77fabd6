"""Hand-drawn fields for tests that need a particular arrangement of cells (no dataset needed)."""

import cv2
import numpy as np


def merged_field(nucleus: bool = True) -> np.ndarray:
    """Glass with reddish red cells (as magenta in A as a nucleus, like BCCD's) and, optionally, a purple white
    cell at the centre touching eight of them: one stained region in the A-channel mask."""
    img = np.full((224, 224, 3), (238, 236, 240), np.uint8)
    ring = ((0, 30), (0, -30), (30, 0), (-30, 0), (24, 24), (-24, -24), (24, -24), (-24, 24))
    scattered = np.random.default_rng(0).integers(20, 204, (14, 2))
    for y, x in [(112 + dy, 112 + dx) for dy, dx in ring] + [(int(y), int(x)) for y, x in scattered]:
        cv2.circle(img, (x, y), 11, (214, 140, 150), -1, lineType=cv2.LINE_AA)
    if nucleus:
        cv2.circle(img, (112, 112), 20, (200, 150, 200), -1, lineType=cv2.LINE_AA)
        cv2.circle(img, (112, 112), 15, (110, 60, 160), -1, lineType=cv2.LINE_AA)
    return img


def pale_field(nucleus: bool = True, red_cell=(212, 208, 210), colour=(208, 186, 228)) -> np.ndarray:
    """Glass with grey red cells and, optionally, a pale purple white cell at the centre: its A excess over
    the glass (about 10) under the cell test's 11, as a washed-out or squeezed stain leaves a real nucleus,
    but several times the red cells' (about 1)."""
    img = np.full((224, 224, 3), (238, 236, 240), np.uint8)
    for y, x in np.random.default_rng(1).integers(14, 210, (40, 2)):
        if nucleus and (y - 112) ** 2 + (x - 112) ** 2 < 40**2:
            continue
        cv2.circle(img, (int(x), int(y)), 9, red_cell, -1, lineType=cv2.LINE_AA)
    if nucleus:
        cv2.circle(img, (112, 112), 20, colour, -1, lineType=cv2.LINE_AA)
    return img


def touching_red_cells_field() -> np.ndarray:
    """A purple white cell with two reddish red cells touching it (one stained region whose mean colour is
    the white cell's) and loose red cells of a paler pink elsewhere, as BCCD's fields show them."""
    img = np.full((224, 224, 3), (238, 236, 240), np.uint8)
    for y, x in np.random.default_rng(2).integers(20, 204, (14, 2)):
        if (y - 112) ** 2 + (x - 112) ** 2 > 70**2:
            cv2.circle(img, (int(x), int(y)), 11, (214, 170, 170), -1, lineType=cv2.LINE_AA)
    cv2.circle(img, (112, 112), 24, (200, 150, 200), -1, lineType=cv2.LINE_AA)
    cv2.circle(img, (112, 112), 19, (110, 60, 160), -1, lineType=cv2.LINE_AA)
    for dy, dx in ((0, 36), (36, 0)):
        cv2.circle(img, (112 + dx, 112 + dy), 13, (214, 140, 150), -1, lineType=cv2.LINE_AA)
    return img

"""The white cells a field was scored on, in the file's own pixels, for a person to look at.

Recording (the device): the pipeline finds cells in its working field (the file decoded, maybe at a
reduced scale, then brought to the training scale) and the model scores a window around each. Those
windows are stored as boxes in the recorded file's pixels (``segmentation.cell_boxes``: x, y, width,
height), so the review app can cut exactly those cells out of the file without running the preprocessing
or loading OpenCV; the model's class per counted cell is stored beside its score (``cell_labels``).

Reading (the review app): :func:`field_cells` pairs each box with its score and class, most malignant
first, numbered in that order (the number a cell has in the gallery is the one drawn on the field).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import List, Optional, Sequence, Tuple


@dataclass(frozen=True)
class FieldCell:
    number: int  # 1 = the most malignant; the label drawn on the field
    index: int  # position in the recorded cell lists (the device's order)
    x: int  # box in the recorded file's pixels
    y: int
    w: int
    h: int
    score: Optional[float]  # malignant score of this cell; None: not counted
    label: Optional[str]  # the model's class for this cell (None on records made before cell labels)
    counted: bool  # False: the cell's embedding was too far from the training cells (not scored)
    centre: Tuple[int, int]  # (y, x) in the device's working field (what `explain --cell-at` takes)


def cell_boxes(
    cells,
    work_shape: Sequence[int],
    decoded_shape: Sequence[int],
    file_size: Tuple[int, int],
    window: int,
    field_scale: str,
    crop: str,
) -> List[List[int]]:
    """Each cell's model window (``window`` working pixels around its centre) as [x, y, w, h] in the file.

    ``work_shape``/``decoded_shape``: (height, width) of the working field and of the decoded image;
    ``file_size``: (width, height) of the file. "optical": the working field is the whole decoded image
    resampled; "fixed": its centre square (``crop == "center-square"``) resized.
    """
    fw, fh = file_size
    dh, dw = decoded_shape[:2]
    wh, ww = work_shape[:2]
    ox = oy = 0.0
    sx, sy = dw / ww, dh / wh  # decoded pixels per working pixel
    if field_scale != "optical" and crop == "center-square" and dh != dw:
        side = min(dh, dw)
        ox, oy = (dw - side) // 2, (dh - side) // 2
        sx = sy = side / ww
    fx, fy = fw / dw, fh / dh  # file pixels per decoded pixel
    out = []
    for c in cells:
        half = window / 2.0
        x0, y0 = (ox + (c.x - half) * sx) * fx, (oy + (c.y - half) * sy) * fy
        out.append(
            [int(round(x0)), int(round(y0)), max(1, int(round(window * sx * fx))), max(1, int(round(window * sy * fy)))]
        )
    return out


def _counted(distances: Sequence[float], n_ignored: int) -> List[bool]:
    # The model leaves out the cells farthest from the training cells (distance above the card's limit,
    # which the record does not keep): they are the n_ignored largest distances.
    if n_ignored <= 0:
        return [True] * len(distances)
    dropped = set(sorted(range(len(distances)), key=lambda i: -distances[i])[:n_ignored])
    return [i not in dropped for i in range(len(distances))]


def field_cells(segmentation: Optional[dict]) -> List[FieldCell]:
    """The recorded cells of a field, most malignant first (not counted ones last); [] when the record has
    no cell boxes (a whole-field model, or a record made before they were kept)."""
    seg = segmentation or {}
    boxes, positions = seg.get("cell_boxes") or [], seg.get("cell_positions") or []
    if not boxes or len(boxes) != len(positions):
        return []
    distances = seg.get("ood_distances") or [0.0] * len(boxes)
    if len(distances) != len(boxes):
        distances = [0.0] * len(boxes)
    scores, labels = list(seg.get("cell_scores") or []), list(seg.get("cell_labels") or [])
    counted = _counted(distances, int(seg.get("cells_ignored") or 0))
    if sum(counted) != len(scores):  # a refused field ("not a blood smear") scored none
        counted = [False] * len(boxes)
    out, k = [], 0
    for i, (box, pos) in enumerate(zip(boxes, positions)):
        score = label = None
        if counted[i]:
            score = scores[k]
            label = labels[k] if k < len(labels) else None
            k += 1
        out.append((i, box, pos, score, label, counted[i]))
    out.sort(key=lambda t: (not t[5], -(t[3] if t[3] is not None else -1.0), t[0]))
    return [
        FieldCell(
            number=n + 1,
            index=i,
            x=b[0],
            y=b[1],
            w=b[2],
            h=b[3],
            score=s,
            label=lab,
            counted=c,
            centre=(int(p["y"]), int(p["x"])),
        )
        for n, (i, b, p, s, lab, c) in enumerate(out)
    ]


__all__ = ["FieldCell", "cell_boxes", "field_cells"]

"""Occlusion-sensitivity maps: which region of an image drove the model's call.

The image is preprocessed exactly as for classification. A ``grid`` x ``grid`` set of patches is then
occluded one at a time on the model input (painted with the preprocessing background colour, i.e. what
a segmented input already shows where there are no cells; for a raw-input model, the image's own empty
glass: see :func:`occluder_colour`) and each occluded input is a full run of the same int8 model that
made the call. A patch's value in the map is the drop in the target score when it is
hidden: positive where the region supports the call, negative where it argued against it.

A confident call that several cells support saturates: hiding any one leaves the int8 output at its top
step and the map blank. ``method="auto"`` then computes the complementary keep map (each region shown
alone on empty glass) and says so in :meth:`Explanation.describe`.

The method needs nothing but forward passes, so it works on the quantized TFLite model on the device,
with no gradients and no TensorFlow. Its cost is ``grid**2 + 1`` model runs per image; reuse one
:class:`~edge.inference.classifier.Classifier` for a batch so the interpreter is loaded once.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator, Optional, Tuple

import cv2
import numpy as np

from edge.imaging.decode import DecodeError, decode_file
from edge.imaging.preprocess import Preprocessed, PreprocessParams, decode_target, preprocess_image
from edge.inference.classifier import Classifier, Prediction
from edge.vocabulary import NO_CELL

TARGETS = ("predicted", "malignant")
METHODS = ("auto", "occlude", "keep")
# A uint8 softmax output moves in steps of 1/256; a map whose largest change is one step is quantization
# noise stretched to full colour, not an explanation.
FLAT = 1.5 / 256
# Score change drawn at full colour at the least (5 percentage points of probability).
FULL_SCALE = 0.05


@dataclass
class Explanation:
    prediction: Prediction  # the call on the unoccluded image
    target: str  # "predicted": P(predicted label); "malignant": the malignant score
    base_score: float  # target score on the unoccluded image
    grid: int
    map: np.ndarray  # grid x grid float32: support of each patch for the target (see ``method``)
    resized: np.ndarray  # size x size x 3 uint8 RGB, the image as the model saw it before masking
    overlay: np.ndarray  # size x size x 3 uint8 RGB, heat map over ``resized``
    seconds: float  # wall time of the occlusion runs
    path: Optional[Path] = None
    method: str = "occlude"  # "occlude": score drop when the patch is hidden; "keep": see keep_map

    def describe(self) -> str:
        """One line for a reviewer: what the coloured regions mean."""
        what = f"P({self.prediction.label})" if self.target == "predicted" else "the malignant score"
        peak = f"largest effect {100 * float(np.clip(self.map, 0, None).max()):.1f} points"
        if self.method == "keep":
            return (
                f"{self.grid}×{self.grid} map: hiding any single patch leaves {what} unchanged (several "
                f"regions support the call); shown instead: {what} with only each region visible ({peak})"
            )
        return f"{self.grid}×{self.grid} occlusion map: drop in {what} when each patch is hidden ({peak})"

    def png_bytes(self, side_by_side: bool = True) -> bytes:
        return encode_png(panel(self) if side_by_side else self.overlay)


def _patch_edges(size: int, grid: int) -> np.ndarray:
    # Integer edges that tile the whole input even when size is not a multiple of grid.
    return np.linspace(0, size, grid + 1).round().astype(int)


def _target_score(classifier: Classifier, probs: np.ndarray, target: str, index: int) -> float:
    if target == "malignant":
        return 1.0 - float(probs[classifier.labels.index("Benign")])
    return float(probs[index])


def _setup(classifier: Classifier, model_input: np.ndarray, grid: int, target: str):
    if grid < 1:
        raise ValueError(f"grid must be at least 1, got {grid}")
    if target not in TARGETS:
        raise ValueError(f"target {target!r} is not one of {', '.join(TARGETS)}")
    base_probs = classifier.probabilities(model_input)
    prediction = classifier.decide(base_probs)
    index = classifier.labels.index(prediction.label)
    return prediction, index, _target_score(classifier, base_probs, target, index)


def occlusion_map(
    classifier: Classifier,
    model_input: np.ndarray,
    grid: int = 7,
    target: str = "predicted",
    fill: Optional[Tuple[int, int, int]] = None,
) -> Tuple[np.ndarray, float, Prediction]:
    """Score drop per occluded patch of ``model_input``; returns (map, base score, prediction)."""
    prediction, index, base = _setup(classifier, model_input, grid, target)
    fill = fill if fill is not None else classifier.preprocessing.background
    h, w = model_input.shape[:2]
    ys, xs = _patch_edges(h, grid), _patch_edges(w, grid)
    fill_px = np.array(fill, dtype=model_input.dtype)
    work = model_input.copy()
    out = np.zeros((grid, grid), dtype=np.float32)
    for i in range(grid):
        for j in range(grid):
            sl = (slice(ys[i], ys[i + 1]), slice(xs[j], xs[j + 1]))
            saved = work[sl].copy()
            work[sl] = fill_px
            out[i, j] = base - _target_score(classifier, classifier.probabilities(work), target, index)
            work[sl] = saved
    return out, base, prediction


def keep_map(
    classifier: Classifier,
    model_input: np.ndarray,
    grid: int = 7,
    target: str = "predicted",
    fill: Optional[Tuple[int, int, int]] = None,
    window: int = 3,
) -> Tuple[np.ndarray, float, Prediction]:
    """Score with only a ``window`` x ``window``-patch region around each patch visible, minus the score
    of an image with nothing visible; returns (map, base score, prediction).

    The complement of occlusion for a saturated call: when several cells each carry the evidence, hiding
    one changes nothing (an int8 output at 255/256 stays there), but showing one alone does.
    """
    prediction, index, base = _setup(classifier, model_input, grid, target)
    fill = fill if fill is not None else classifier.preprocessing.background
    h, w = model_input.shape[:2]
    ys, xs = _patch_edges(h, grid), _patch_edges(w, grid)
    blank = np.empty_like(model_input)
    blank[:] = np.array(fill, dtype=model_input.dtype)
    empty = _target_score(classifier, classifier.probabilities(blank), target, index)
    r = window // 2
    out = np.zeros((grid, grid), dtype=np.float32)
    for i in range(grid):
        for j in range(grid):
            y0, y1 = ys[max(0, i - r)], ys[min(grid, i + r + 1)]
            x0, x1 = xs[max(0, j - r)], xs[min(grid, j + r + 1)]
            work = blank.copy()
            work[y0:y1, x0:x1] = model_input[y0:y1, x0:x1]
            out[i, j] = _target_score(classifier, classifier.probabilities(work), target, index) - empty
    return out, base, prediction


def heat_overlay(
    rgb: np.ndarray, sensitivity: np.ndarray, alpha: float = 0.6, full_scale: float = FULL_SCALE
) -> np.ndarray:
    """Upsample the map to the image and blend a colour ramp in where the map is positive.

    Only regions that supported the call are coloured, scaled to the strongest patch but never to less
    than ``full_scale``: a map whose largest effect is a few int8 steps stays faint instead of being
    stretched into a confident-looking hot spot.
    """
    h, w = rgb.shape[:2]
    pos = np.clip(sensitivity.astype(np.float32), 0.0, None)
    peak = max(float(pos.max()), full_scale)
    norm = pos / peak
    up = cv2.resize(norm, (w, h), interpolation=cv2.INTER_CUBIC)
    up = np.clip(up, 0.0, 1.0)
    colour = cv2.applyColorMap((up * 255).astype(np.uint8), cv2.COLORMAP_JET)
    colour = cv2.cvtColor(colour, cv2.COLOR_BGR2RGB).astype(np.float32)
    a = (alpha * up)[..., None]
    return np.clip(rgb.astype(np.float32) * (1 - a) + colour * a, 0, 255).astype(np.uint8)


def occluder_colour(pre: Preprocessed, params: PreprocessParams) -> Tuple[int, int, int]:
    """What "nothing here" looks like to the model.

    A segmented input already shows the preprocessing background colour wherever there is no cell, so
    that colour hides a patch exactly. A raw input shows the slide itself: a flat grey square on pink
    glass is a new object the model reacts to wherever it is put, which would paint the whole map. The
    image's own empty glass (median colour outside the cell mask) hides a patch without adding one.
    """
    bg = params.background
    if params.input_mode in ("segmented", "cell") or pre.model_input is None:
        return int(bg[0]), int(bg[1]), int(bg[2])
    # From the model input, not the resized image: in "balanced" mode the two differ by the colour gain.
    glass = pre.model_input[~pre.mask]
    if glass.size == 0:
        return int(bg[0]), int(bg[1]), int(bg[2])
    r, g, b = (int(v) for v in np.median(glass.reshape(-1, 3), axis=0))
    return r, g, b


def explain_rgb(
    rgb: np.ndarray,
    classifier: Classifier,
    grid: int = 7,
    target: str = "predicted",
    path: Optional[Path] = None,
    method: str = "auto",
    cell_at: Optional[Tuple[int, int]] = None,
) -> Explanation:
    """``method``: "occlude", "keep", or "auto" (occlusion, and the keep map when no single hidden
    patch moves the score by more than one int8 output step, i.e. the occlusion map would be blank).
    ``cell_at``: (y, x) in the working field (a recorded ``cell_positions`` entry): explain the cell found
    nearest to it instead of the most malignant one ("cell" mode)."""
    if method not in METHODS:
        raise ValueError(f"method {method!r} is not one of {', '.join(METHODS)}")
    t0 = time.perf_counter()
    params = classifier.preprocessing
    pre = preprocess_image(rgb, params)  # v3: the field at the training scale and glass first
    shown, x = pre.resized, pre.model_input
    if params.input_mode == "cell":
        if not pre.model_inputs:
            raise DecodeError(f"{NO_CELL}: nothing for the model to explain")
        if cell_at is not None:
            near = [(c.y - cell_at[0]) ** 2 + (c.x - cell_at[1]) ** 2 for c in pre.cells]
            x = shown = pre.model_inputs[int(np.argmin(near))]
        else:
            # The field's answer is its most malignant cell's: explain that crop, on that crop.
            scores = [
                1.0 - float(classifier.probabilities(c)[classifier.labels.index("Benign")]) for c in pre.model_inputs
            ]
            x = shown = pre.model_inputs[int(np.argmax(scores))]
    if x is None:
        raise DecodeError("nothing for the model to explain")
    fill = occluder_colour(pre, params)
    used = "keep" if method == "keep" else "occlude"
    fn = keep_map if used == "keep" else occlusion_map
    smap, base, prediction = fn(classifier, x, grid=grid, target=target, fill=fill)
    if method == "auto" and float(np.abs(smap).max()) < FLAT:
        used = "keep"
        smap, base, prediction = keep_map(classifier, x, grid=grid, target=target, fill=fill)
    return Explanation(
        prediction=prediction,
        target=target,
        base_score=base,
        grid=grid,
        map=smap,
        resized=shown,
        overlay=heat_overlay(shown, smap),
        seconds=time.perf_counter() - t0,
        path=path,
        method=used,
    )


def explain_image(
    path: str | Path,
    classifier: Classifier,
    grid: int = 7,
    target: str = "predicted",
    method: str = "auto",
    cell_at: Optional[Tuple[int, int]] = None,
) -> Explanation:
    """Decode, preprocess and explain one image file. Raises ``DecodeError`` for unreadable files."""
    path = Path(path)
    rgb = decode_file(path, target=decode_target(classifier.preprocessing)).rgb
    return explain_rgb(rgb, classifier, grid=grid, target=target, path=path, method=method, cell_at=cell_at)


def explain_many(
    paths: Iterable[str | Path], classifier: Classifier, grid: int = 7, target: str = "predicted"
) -> Iterator[Tuple[Path, Optional[Explanation], Optional[str]]]:
    """(path, explanation, None) or (path, None, one-line reason) per path, one interpreter for all."""
    for p in paths:
        p = Path(p)
        try:
            yield p, explain_image(p, classifier, grid=grid, target=target), None
        except DecodeError as e:
            yield p, None, str(e)


# A panel side shorter than this is enlarged (a 112-pixel cell crop is too small to read on a screen).
MIN_PANEL_SIDE = 224


def panel(expl: Explanation) -> np.ndarray:
    """The image and its heat map side by side, with a thin separator."""
    shown, over = expl.resized, expl.overlay
    h = shown.shape[0]
    if h < MIN_PANEL_SIDE:
        k = -(-MIN_PANEL_SIDE // h)  # whole factor: every model pixel stays a crisp square
        shown, over = (cv2.resize(a, None, fx=k, fy=k, interpolation=cv2.INTER_NEAREST) for a in (shown, over))
        h = shown.shape[0]
    gap = np.full((h, 4, 3), 255, dtype=np.uint8)
    return np.concatenate([shown, gap, over], axis=1)


def encode_png(rgb: np.ndarray) -> bytes:
    ok, buf = cv2.imencode(".png", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    if not ok:
        raise RuntimeError("PNG encoding failed")
    return buf.tobytes()


def save_png(expl: Explanation, path: str | Path, side_by_side: bool = True) -> Path:
    """Write the overlay (by default next to the plain image) as a PNG file."""
    path = Path(path)
    if path.parent and not path.parent.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(expl.png_bytes(side_by_side=side_by_side))
    return path

"""The report's gallery: a thumbnail and (with a classifier) an explanation map per flagged image, as
``data:`` URIs, and its HTML. A file is read only as :mod:`edge.imaging.recorded` allows; a missing or
unreadable one is stated in its place, never raised. The page is :mod:`edge.report.html`.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass
from html import escape
from pathlib import Path
from typing import List, Optional, Sequence

import cv2
import numpy as np
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from edge.imaging.decode import DecodeError, decode_bytes
from edge.imaging.recorded import RecordedFileError, open_recorded
from edge.inference.classifier import Classifier
from edge.inference.explain import explain_rgb
from edge.report.data import FlaggedImage


@dataclass
class GalleryItem:
    image: FlaggedImage
    thumb_uri: Optional[str]  # None: see ``note``
    map_uri: Optional[str]
    note: Optional[str]  # why there is no thumbnail (file missing, unreadable)
    map_note: Optional[str]  # what the map shows, or why there is none


def data_uri(rgb: np.ndarray, quality: int = 82) -> str:
    ok, buf = cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise RuntimeError("JPEG encoding failed")
    return "data:image/jpeg;base64," + base64.b64encode(buf.tobytes()).decode("ascii")


def thumbnail(rgb: np.ndarray, px: int) -> np.ndarray:
    h, w = rgb.shape[:2]
    s = px / max(h, w)
    return cv2.resize(rgb, (max(1, round(w * s)), max(1, round(h * s))), interpolation=cv2.INTER_AREA) if s < 1 else rgb


def gallery_item(
    img: FlaggedImage,
    classifier: Optional[Classifier],
    grid: int = 7,
    thumb_px: int = 200,
    roots: Optional[Sequence[Path]] = None,
) -> GalleryItem:
    """Thumbnail and (with a classifier) explanation map for one flagged image; never raises for a bad file.
    The file is read as :mod:`edge.imaging.recorded` allows (no links, inside ``roots``, the recorded bytes)."""
    try:
        f = open_recorded((img.moved_to, img.path), img.sha256, img.size, roots)
        p, rgb = f.path, decode_bytes(f.data).rgb
    except RecordedFileError as e:
        return GalleryItem(img, None, None, str(e), None)
    except DecodeError as e:
        return GalleryItem(img, None, None, f"file unreadable: {e}", None)
    thumb = data_uri(thumbnail(rgb, thumb_px))
    if classifier is None:
        return GalleryItem(img, thumb, None, None, None)
    ex = explain_rgb(rgb, classifier, grid=grid, path=p)
    note = ex.describe()
    if img.model_sha256 and img.model_sha256 != classifier.sha256:
        # A reviewer must know when the map explains a different model than the one that made the call.
        note += (
            f"; map from model {classifier.name} ({classifier.sha256[:12]}), the call was made by "
            f"{img.model_name or '?'} ({img.model_sha256[:12]})"
        )
    return GalleryItem(img, thumb, data_uri(ex.overlay, 88), None, note)


def build_gallery(
    flagged: Sequence[FlaggedImage],
    classifier: Optional[Classifier] = None,
    grid: int = 7,
    thumb_px: int = 200,
    progress: bool = True,
    console: Optional[Console] = None,
    roots: Optional[Sequence[Path]] = None,
) -> List[GalleryItem]:
    console = console or Console(stderr=True)
    what = "thumbnails and maps" if classifier else "thumbnails"
    items: List[GalleryItem] = []
    with Progress(
        TextColumn(f"[bold]{what}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=console,
        transient=True,
        disable=not progress or not flagged,
    ) as prog:
        task = prog.add_task(what, total=len(flagged))
        for img in flagged:
            items.append(gallery_item(img, classifier, grid=grid, thumb_px=thumb_px, roots=roots))
            prog.advance(task)
    return items


def gallery_html(items: Sequence[GalleryItem], total: int) -> str:
    out = []
    if total > len(items):
        out.append(
            f'<p class="note">The {len(items)} most urgent of {total} flagged images are shown; '
            "all are in the table above.</p>"
        )
    out.append('<div class="gallery">')
    for it in items:
        f = it.image
        cls = "malignant" if f.verdict == "malignant" else "review"
        tag = "MALIGNANT" if f.verdict == "malignant" else "needs review"
        if f.verdict == "malignant" and f.needs_review:
            tag += " · needs review"
        thumb = (
            f'<img class="thumb" alt="thumbnail" src="{it.thumb_uri}">'
            if it.thumb_uri
            else f'<span class="missing">{escape(it.note or "")}</span>'
        )
        emap = f'<img class="map" alt="explanation map" src="{it.map_uri}">' if it.map_uri else ""
        score = "-" if f.malignant_score is None else f"{f.malignant_score:.3f}"
        out.append(
            f'<div class="item" id="img-{escape(f.image_id)}"><div>{thumb}{emap}</div>'
            f'<div><span class="{cls}">{tag}</span> {escape(f.label or "-")} · score {score}</div>'
            f'<div class="note">{escape(f.time)} · {escape(f.device_id)} · model {escape(f.model_name or "-")}</div>'
            f'<div class="path">{escape(f.path)}</div>'
            + (f'<div class="note">{escape(it.map_note)}</div>' if it.map_note else "")
            + "</div>"
        )
    out.append("</div>")
    return "\n".join(out)


def thumb_html(f, roots: Optional[Sequence[Path]], thumb_px: int = 120) -> str:
    try:
        rgb = decode_bytes(open_recorded((f.moved_to, f.path), f.sha256, f.size, roots).data).rgb
        return f'<img class="thumb small" alt="thumbnail" src="{data_uri(thumbnail(rgb, thumb_px))}">'
    except RecordedFileError as e:
        return f'<span class="missing small">{"file missing" if e.status == 404 else escape(str(e))}</span>'
    except DecodeError:
        return '<span class="missing small">file unreadable</span>'

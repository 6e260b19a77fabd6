"""Classify files given now (`edge-screen classify`, `bench`): the daemon's pipeline over a list of paths.

Folders are expanded to the image files in them; each file goes through :class:`edge.pipeline.stages.Pipeline`
exactly as the daemon would take it from the inbox.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Iterable, List, Optional, Union

from edge.config import Config
from edge.imaging.segmentation import start_lab_tables
from edge.inference.classifier import Classifier, classifier_from_config
from edge.pipeline.settings import PipelineSettings
from edge.pipeline.stages import Pipeline
from edge.store.records import ImageRecord

# A command that classifies now has a model to load before its first image: OpenCV's one-time LAB tables
# (~0.1 s) are built meanwhile, on the other core.
start_lab_tables()

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".tif", ".tiff", ".bmp")


def expand_paths(paths: Iterable[Union[str, Path]]) -> List[Path]:
    """Files as given, and the image files inside folders (recursively, sorted)."""
    out: List[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            out.extend(
                sorted(
                    f
                    for f in p.rglob("*")
                    if f.is_file() and not f.name.startswith(".") and f.suffix.lower() in IMAGE_SUFFIXES
                )
            )
        else:
            out.append(p)
    return out


def classify_paths(
    paths: Iterable[Union[str, Path]],
    cfg: Config,
    classifier: Optional[Classifier] = None,
    store=None,
    progress: Optional[Callable[[ImageRecord], None]] = None,
) -> List[ImageRecord]:
    """The daemon's pipeline for files or folders given now. ``store=None`` records nothing."""
    clf = classifier or classifier_from_config(cfg)
    pipe = Pipeline(PipelineSettings.of(cfg, clf.card), clf, store=store)
    results = []
    for res in pipe.run_paths(expand_paths(paths)):
        results.append(res)
        if progress is not None:
            progress(res)
    return results

"""Stage 1 of the pipeline, :meth:`Preparer.run`: from a file in the inbox to the model's inputs, in steps.

Each step takes the file's :class:`~edge.pipeline.results.Prepared` and returns True to go on to the next,
or False when the file's result is settled: its status and one-line reason are set (``rejected`` until a
step says otherwise) and nothing after it runs. Each step's docstring says what it needs and leaves. The
steps, in order (:attr:`Preparer.steps`):

=========  ==============================================================================================
intake     the file as found: its sample, symlinks, a regular file within ``max_file_bytes``
identity   its bytes and their sha256 (what makes recording exactly-once), the EXIF capture time
decode     a supported format, decoded in full (strict JPEG); a truncated file still arriving is deferred
optics     the working field (v3 cards: the training scale, the glass at the reference) and its optics
gate       the quality gate on exposure and focus
cells      preprocessing, the stain-content gate, the white cells and their windows: the model's inputs
=========  ==============================================================================================
"""

from __future__ import annotations

import os
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Optional, Tuple

from edge.imaging.decode import DecodeError, decode_bytes, unsupported_format
from edge.imaging.exif import exif_datetime
from edge.imaging.fieldcells import cell_boxes
from edge.imaging.optics import SUPPORTED_MAGNIFICATION, ScaleMemory
from edge.imaging.preprocess import OpticsSettings, PreprocessParams, decode_target, preprocess, working_field
from edge.pipeline import identity, quality
from edge.pipeline.results import CLASSIFIED, UNREADABLE, Prepared
from edge.store.records import ImageRecord
from edge.store.samplerule import SampleError, sample_of


def within(path: Path, folder: Path) -> bool:
    """Whether ``path`` is ``folder`` or below it (as written: no symlink is resolved)."""
    try:
        path.relative_to(folder)
        return True
    except ValueError:
        return False


def lap(res: ImageRecord, stage: str, t0: float, add: bool = False) -> float:
    """Time since ``t0`` into ``res.timings.<stage>`` (added to it with ``add``); returns now."""
    now = time.monotonic()
    res.timings.add(stage, (now - t0) * 1000, accumulate=add)
    return now


def _cannot_read(res: ImageRecord, e: OSError) -> bool:
    res.reason = f"cannot read file: {e.strerror or e}"
    # Nothing was read, so the identity is the failure itself: a later, readable copy is a new file.
    res.sha256 = identity.of_bytes(b"unreadable:" + res.reason.encode())
    return False


def _with_optics(quality_dict: dict, optics) -> dict:
    """The quality record with the field's optics in it (v3 cards), whichever step stopped the field."""
    if optics is not None:
        quality_dict["optics"] = optics.to_dict()
    return quality_dict


class Preparer:
    """Stage 1 for one model and one inbox. Runs in one worker thread at a time (see
    :meth:`edge.pipeline.stages.Pipeline.stream`), so its scale memory needs no lock."""

    def __init__(
        self,
        params: PreprocessParams,
        thresholds: quality.Thresholds,
        optics: OpticsSettings,
        max_file_bytes: int,
        inbox: Optional[Path] = None,
        defer_incomplete_s: float = 0.0,
    ):
        self.params = params
        self.thresholds = thresholds  # the config's quality thresholds, tightened by the model card's
        self.optics_settings = optics
        self.max_file_bytes = max_file_bytes
        self.inbox = inbox  # None (`classify`): no samples, and symlinks are followed
        # Polling only (inotify reports the writer's close): a file that reads as truncated and was written
        # to less than this long ago is probably still arriving, so it is watched again, not recorded.
        self.defer_incomplete_s = defer_incomplete_s
        self.scales = ScaleMemory()  # a sample's optical scale, measured on its first fields
        self.steps: Tuple[Callable[[Prepared], bool], ...] = (
            self.intake,
            self.identity,
            self.decode,
            self.optics,
            self.gate,
            self.cells,
        )

    def run(self, prep: Prepared) -> None:
        """The steps in order, until one settles the result; the decode and later steps' times go into
        ``prep.result.timings``. What the steps handed along is dropped at the end (only the model's
        inputs and the domain monitor's optics go on to stage 2)."""
        prep.clock = time.monotonic()
        try:
            for step in self.steps:
                if not step(prep):
                    return
        finally:
            prep.stat = prep.data = prep.image = prep.field = prep.report = None

    # ------------------------------------------------------------------------------------ the steps
    def intake(self, prep: Prepared) -> bool:
        """Needs the job's path. Leaves ``prep.stat`` of a regular file within ``max_file_bytes``, the
        result's sample (the inbox subfolder, or the day's), size, and the file time as capture time.
        Rejects a bad sample folder name, a symlink that dangles, loops or leads out of the inbox, a file
        that cannot be read, a special file and one too large (each with an identity of what was seen)."""
        path, res = prep.job.path, prep.result
        if self.inbox is not None and within(path, self.inbox):
            try:
                res.sample_id = sample_of(path, self.inbox, datetime.now(timezone.utc))
            except SampleError as e:
                res.reason = str(e)
                res.sha256 = identity.of_bytes(b"sample:" + os.fsencode(str(path)))
                return False
        if self.inbox is not None and path.is_symlink():
            try:
                target = path.resolve(strict=True)
            except (OSError, RuntimeError):  # a loop (RuntimeError before Python 3.13) or a dangling link
                res.reason = "symlink loop or dangling symlink"
                res.sha256 = identity.of_bytes(b"symlink:" + os.fsencode(os.readlink(path)))
                return False
            if not within(target, self.inbox):
                res.reason = f"symlink points outside the inbox (to {target})"
                # Not followed, so not read: its identity is the link itself.
                res.sha256 = identity.of_bytes(b"symlink:" + os.fsencode(os.readlink(path)))
                return False
        try:
            st = path.stat()
        except OSError as e:
            return _cannot_read(res, e)
        res.bytes = st.st_size
        res.capture_time, res.capture_source = datetime.fromtimestamp(st.st_mtime, timezone.utc), "mtime"
        if not path.is_file():
            res.reason = "not a regular file"
            res.sha256 = identity.of_bytes(b"special:" + os.fsencode(str(path)))
            return False
        if st.st_size > self.max_file_bytes:
            res.sha256 = identity.of_oversize_file(path, st)
            res.reason = f"file too large: {st.st_size:,} bytes > the {self.max_file_bytes:,} byte limit"
            return False
        prep.stat = st
        return True

    def identity(self, prep: Prepared) -> bool:
        """Needs ``prep.stat``. Leaves ``prep.data`` (the bytes), the result's sha256 and, when the file
        has one this platform can represent, the EXIF capture time. Rejects a file that cannot be read."""
        res = prep.result
        try:
            data = prep.job.path.read_bytes()
        except OSError as e:
            return _cannot_read(res, e)
        res.sha256 = identity.of_bytes(data)
        exif = exif_datetime(data)
        if exif is not None:
            # Exif times are the camera's local wall clock, without a zone: read them as this device's.
            try:
                res.capture_time, res.capture_source = exif.astimezone(timezone.utc), "exif"
            except (OverflowError, ValueError, OSError):  # outside what this platform's clock can represent
                pass
        prep.data = data
        return True

    def decode(self, prep: Prepared) -> bool:
        """Needs ``prep.data`` and ``prep.stat``. Leaves ``prep.image`` (the bytes are dropped), the
        result's size and format; its decode time counts from the start of stage 1. Rejects an unsupported
        format and undecodable, corrupt or truncated data; defers (``result.deferred``) a truncated file
        written to within ``defer_incomplete_s``."""
        res, data = prep.result, prep.data
        assert data is not None and prep.stat is not None  # left by intake and identity
        other = unsupported_format(data)
        if other:
            res.reason = f"unsupported format {other} (expected JPEG, PNG, TIFF or BMP)"
            return False
        try:
            img = decode_bytes(data, target=decode_target(self.params))
        except DecodeError as e:
            res.reason = str(e)
            lap(res, "decode", prep.clock)
            if (
                self.defer_incomplete_s
                and "truncated" in res.reason
                and time.time() - prep.stat.st_mtime < self.defer_incomplete_s
            ):
                res.deferred = True
            return False
        prep.data = None
        res.width, res.height, res.format = img.width, img.height, img.format
        prep.clock = lap(res, "decode", prep.clock)
        prep.image = img
        return True

    def optics(self, prep: Prepared) -> bool:
        """Needs ``prep.image``. Leaves ``prep.field``, the working field the gate and preprocessing share
        (v1/v2 cards: the centre square at 224 px; v3: the whole field at the training scale, the glass at
        the reference, edge/imaging/optics.py) and, v3, ``prep.optics`` and the result's scale and
        magnification. Unreadable: a magnification outside the supported range."""
        res, img = prep.result, prep.image
        assert img is not None  # left by decode
        key = (res.sample_id, img.width, img.height) if res.sample_id else None
        rgb, optics = working_field(img.rgb, self.params, self.optics_settings, img.scale, self.scales.known(key))
        prep.clock = lap(res, "preprocess", prep.clock)
        prep.field = rgb
        if optics is None:
            return True
        self.scales.add(key, optics)
        prep.optics = optics
        res.px_per_um, res.magnification = round(optics.px_per_um, 3), round(optics.magnification, 3)
        if optics.supported:
            return True
        lo, hi = SUPPORTED_MAGNIFICATION
        how = (
            f"measured from {optics.rbc_count} red cells"
            if optics.scale_source == "measured"
            else f"{optics.scale_source} scale"
        )
        res.status = UNREADABLE
        res.reason = (
            f"magnification {optics.resample_magnification:.1f}x the training scale ({how}) is outside the "
            f"supported {lo:g}-{hi:g}x"
        )
        res.quality = _with_optics({}, optics)
        return False

    def gate(self, prep: Prepared) -> bool:
        """Needs ``prep.field``. Leaves ``prep.report``, the field's exposure and focus report. Unreadable:
        a field out of focus, too dark or overexposed (the card's tightened thresholds)."""
        res, rgb = prep.result, prep.field
        assert rgb is not None  # left by optics
        q = quality.check_exposure_focus(quality.measure(rgb, self.params, prep.optics), self.thresholds)
        prep.clock = lap(res, "quality", prep.clock)
        if not q.passed:
            res.status, res.quality = UNREADABLE, _with_optics(q.to_dict(), prep.optics)
            res.reason = quality.gate_reason(q, prep.optics)
            return False
        prep.report = q
        return True

    def cells(self, prep: Prepared) -> bool:
        """Needs ``prep.field``, ``prep.report`` and ``prep.image``. Leaves the result's quality and
        segmentation records (each cell's position and window in the file's own pixels) and, for a
        classified field, ``prep.model_inputs``. Unreadable: too little stain, or no plausible white cell."""
        res, rgb, q, img = prep.result, prep.field, prep.report, prep.image
        assert rgb is not None and q is not None and img is not None  # left by the steps before
        pre = preprocess(rgb, self.params)
        t = lap(res, "preprocess", prep.clock, add=True)
        q = quality.check_content(q, pre.stats, self.thresholds)
        res.quality, res.segmentation = _with_optics(q.to_dict(), prep.optics), pre.stats.to_dict()
        if prep.optics is not None:
            prep.cell_lab = pre.cell_lab
            res.segmentation["cell_lab"] = list(pre.cell_lab) if pre.cell_lab else None
        prep.clock = lap(res, "quality", t, add=True)
        if not q.passed:
            res.status, res.reason = UNREADABLE, q.reason
            return False
        prep.flags = quality.review_flags(pre.cells, self.params, prep.optics)
        if pre.cells:
            # "cells" (their number) comes with the model's answer; this is where each one is, and the
            # window the model saw in the file's own pixels (the review app cuts those out).
            res.segmentation["cell_positions"] = [c.to_dict() for c in pre.cells]
            res.segmentation["cell_boxes"] = cell_boxes(
                pre.cells,
                rgb.shape,
                img.rgb.shape,
                (img.width, img.height),
                self.params.cell_window,
                self.params.field_scale,
                self.params.crop,
            )
            res.segmentation["file_px"] = [img.width, img.height]
        if not pre.model_inputs:
            # Cell mode with no plausible leukocyte: a smear without the cell to judge gets no class.
            res.status, res.reason = UNREADABLE, quality.no_cell_reason(prep.optics)
            return False
        res.status = CLASSIFIED
        prep.model_inputs = pre.model_inputs
        return True


__all__ = ["Preparer", "lap", "within"]

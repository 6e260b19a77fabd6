"""Per-image processing: identity, decode, quality gate, preprocess, inference, one committed record.

Two stages so that the two cores overlap: :meth:`Pipeline.prepare` (read, hash, decode, quality,
preprocess; OpenCV releases the GIL) runs in a worker thread for the next image while stage 2 (duplicate
check, inference, which also releases the GIL, and the commit) runs for the current one. Stage 2 is only
ever run from one thread, in order, so the duplicate and exactly-once checks see every earlier commit
(an image whose content is in the uncommitted group first commits the group). In a burst, stage 2
commits up to GROUP_MAX images in one transaction: one fsync instead of one per image.

Every failure of one file becomes a recorded status with a one-line reason; nothing here raises for a bad
image, so one bad file never stops the others.
"""

from __future__ import annotations

import logging
import os
import shutil
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Iterable, Iterator, List, Optional, Union, cast

from edge.config import Config
from edge.imaging.decode import DecodeError, decode_bytes, unsupported_format
from edge.imaging.exif import exif_datetime
from edge.imaging.fieldcells import cell_boxes
from edge.imaging.optics import SUPPORTED_MAGNIFICATION, ScaleMemory
from edge.imaging.preprocess import OpticsSettings, decode_target, preprocess, working_field
from edge.inference.classifier import Classifier
from edge.pipeline import identity, quality
from edge.pipeline.domain import ValidatedRange
from edge.pipeline.results import CLASSIFIED, DUPLICATE, REJECTED, UNREADABLE, ImageResult, Job, Prepared
from edge.store.records import DatabaseGone, ImageRecord
from edge.store.samplerule import SampleError, SampleRule, sample_of

log = logging.getLogger("edge.pipeline.stages")


def _cannot_read(res: ImageResult, e: OSError) -> None:
    res.reason = f"cannot read file: {e.strerror or e}"
    # Nothing was read, so the identity is the failure itself: a later, readable copy is a new file.
    res.sha256 = identity.of_bytes(b"unreadable:" + res.reason.encode())


def _with_optics(quality_dict: dict, optics) -> dict:
    """The quality record with the field's optics in it (v3 cards), whichever stage stopped the field."""
    if optics is not None:
        quality_dict["optics"] = optics.to_dict()
    return quality_dict


def _within(path: Path, folder: Path) -> bool:
    try:
        path.relative_to(folder)
        return True
    except ValueError:
        return False


class Pipeline:
    """Processes images with one classifier into one store (or none, for ``classify --no-db``)."""

    def __init__(
        self,
        cfg: Config,
        classifier: Classifier,
        store=None,
        inbox: Optional[Path] = None,
        move_after: bool = False,
        defer_incomplete_s: float = 0.0,
    ):
        self.cfg = cfg
        self.clf = classifier
        self.store = store
        self.inbox = Path(inbox).resolve() if inbox else None
        self.move_after = move_after
        self.params = classifier.preprocessing
        self.gate = quality.stricter(cfg.quality, classifier.card.extra.get("quality_gate", {}))
        self.sample_rule = SampleRule.from_card(classifier.card.extra, classifier.card.threshold)
        self.optics = OpticsSettings(px_per_um=cfg.optics.px_per_um or None, scale_source=cfg.optics.scale_source)
        self.validated = ValidatedRange.from_card(classifier.card.extra)
        # prepare() runs in one worker thread at a time (see stream()), so this needs no lock.
        self.scales = ScaleMemory()
        # Polling only (inotify reports the writer's close): a file that reads as truncated and was written
        # to less than this long ago is probably still arriving, so it is watched again, not recorded.
        self.defer_incomplete_s = defer_incomplete_s
        self.model_id: Optional[str] = None
        if store is not None:
            self.model_id = store.ensure_model(classifier.name, classifier.sha256, classifier.card.to_dict())
        self.run_id: Optional[str] = None

    # ------------------------------------------------------------------------------------ stage 1
    def prepare(self, job: Job) -> Prepared:
        started = time.monotonic()
        res = ImageResult(path=identity.path_text(job.path), status=REJECTED)
        res.timings["queue"] = round((started - job.discovered) * 1000, 3)
        prep = Prepared(job=job, result=res, started=started)
        try:
            self._prepare(job.path, prep)
        except Exception as e:  # noqa: BLE001 - a bug on one file must not stop the others
            log.exception("unexpected error on %s", job.path)
            res.status, res.reason = REJECTED, f"processing error: {type(e).__name__}: {e}".splitlines()[0]
            prep.model_inputs = None
        return prep

    def _prepare(self, path: Path, prep: Prepared) -> None:
        res, t = prep.result, time.monotonic()
        if self.inbox is not None and _within(path, self.inbox):
            try:
                res.sample_id = sample_of(path, self.inbox, datetime.now(timezone.utc))
            except SampleError as e:
                res.reason = str(e)
                res.sha256 = identity.of_bytes(b"sample:" + os.fsencode(str(path)))
                return
        if self.inbox is not None and path.is_symlink():
            try:
                target = path.resolve(strict=True)
            except (OSError, RuntimeError):  # a loop (RuntimeError before Python 3.13) or a dangling link
                res.reason = "symlink loop or dangling symlink"
                res.sha256 = identity.of_bytes(b"symlink:" + os.fsencode(os.readlink(path)))
                return
            if not _within(target, self.inbox):
                res.reason = f"symlink points outside the inbox (to {target})"
                # Not followed, so not read: its identity is the link itself.
                res.sha256 = identity.of_bytes(b"symlink:" + os.fsencode(os.readlink(path)))
                return
        try:
            st = path.stat()
        except OSError as e:
            return _cannot_read(res, e)
        res.size_bytes = st.st_size
        res.capture_time, res.capture_source = datetime.fromtimestamp(st.st_mtime, timezone.utc), "mtime"
        if not path.is_file():
            res.reason = "not a regular file"
            res.sha256 = identity.of_bytes(b"special:" + os.fsencode(str(path)))
            return
        if st.st_size > self.cfg.daemon.max_file_bytes:
            res.sha256 = identity.of_oversize_file(path, st)
            res.reason = f"file too large: {st.st_size:,} bytes > the {self.cfg.daemon.max_file_bytes:,} byte limit"
            return
        try:
            data = path.read_bytes()
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
        other = unsupported_format(data)
        if other:
            res.reason = f"unsupported format {other} (expected JPEG, PNG, TIFF or BMP)"
            return
        try:
            img = decode_bytes(data, target=decode_target(self.params))
        except DecodeError as e:
            res.reason = str(e)
            self._lap(res, "decode", t)
            if (
                self.defer_incomplete_s
                and "truncated" in res.reason
                and time.time() - st.st_mtime < self.defer_incomplete_s
            ):
                res.deferred = True
            return
        del data
        res.width, res.height, res.format = img.width, img.height, img.format
        t = self._lap(res, "decode", t)
        # Once, for the quality gate and preprocessing alike: v1/v2 the centre square at 224 px; v3 the
        # whole field at the training scale with the glass at the reference (edge/imaging/optics.py).
        key = (res.sample_id, img.width, img.height) if res.sample_id else None
        rgb, optics = working_field(img.rgb, self.params, self.optics, img.scale, self.scales.known(key))
        t = self._lap(res, "preprocess", t)
        if optics is not None:
            self.scales.add(key, optics)
            prep.optics = optics
            res.px_per_um, res.magnification = round(optics.px_per_um, 3), round(optics.magnification, 3)
            if not optics.supported:
                lo, hi = SUPPORTED_MAGNIFICATION
                how = (
                    f"measured from {optics.rbc_count} red cells"
                    if optics.scale_source == "measured"
                    else f"{optics.scale_source} scale"
                )
                res.status, res.reason = (
                    UNREADABLE,
                    (
                        f"magnification {optics.resample_magnification:.1f}x the "
                        f"training scale ({how}) is outside the supported "
                        f"{lo:g}-{hi:g}x"
                    ),
                )
                res.quality = _with_optics({}, optics)
                return
        q = quality.check_exposure_focus(quality.measure(rgb, self.params, optics), self.gate)
        t = self._lap(res, "quality", t)
        if not q.passed:
            res.status, res.reason, res.quality = UNREADABLE, q.reason, _with_optics(q.to_dict(), optics)
            return
        pre = preprocess(rgb, self.params)
        t = self._lap(res, "preprocess", t, add=True)
        q = quality.check_content(q, pre.stats, self.gate)
        res.quality, res.segmentation = _with_optics(q.to_dict(), optics), pre.stats.to_dict()
        if optics is not None:
            prep.cell_lab = pre.cell_lab
            res.segmentation["cell_lab"] = list(pre.cell_lab) if pre.cell_lab else None
        self._lap(res, "quality", t, add=True)
        if not q.passed:
            res.status, res.reason = UNREADABLE, q.reason
            return
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
            res.status, res.reason = UNREADABLE, quality.no_cell_reason(optics)
            return
        res.status = CLASSIFIED
        prep.model_inputs = pre.model_inputs

    @staticmethod
    def _lap(res: ImageResult, stage: str, t0: float, add: bool = False) -> float:
        now = time.monotonic()
        res.timings[stage] = round((res.timings.get(stage, 0.0) if add else 0.0) + (now - t0) * 1000, 3)
        return now

    # ------------------------------------------------------------------------------------ stage 2
    def finish(self, prep: Prepared) -> ImageResult:
        if self._infer(prep):
            self._commit([prep])
        return prep.result

    def _infer(self, prep: Prepared) -> bool:
        """Duplicate check and inference. False: the file is already recorded and was dealt with here."""
        res = prep.result
        t = time.monotonic()
        try:
            if self.store is not None and res.sha256:
                recorded, first = self.store.lookup(res.path, res.sha256)
                if recorded:
                    # A file the backlog scan and the watcher both queued, or one recorded before a crash:
                    # report the recorded answer, record nothing.
                    res.already_recorded = True
                    if first is not None and res.status == CLASSIFIED:
                        for k in ("status", "label", "probabilities", "malignant_score", "verdict", "needs_review"):
                            setattr(res, k, getattr(first, k))
                    self._move(res, prep.job.path)
                    return False
                if first is not None and res.status == CLASSIFIED:
                    res.status, res.duplicate_of = DUPLICATE, str(first.id)
                    res.reason = f"same content as {first.path}"
                    for k in ("label", "probabilities", "malignant_score", "verdict", "needs_review"):
                        setattr(res, k, getattr(first, k, None))
                    prep.model_inputs = None
                # The lookup is store work: counted as inference it made inference look twice the bare invoke.
                t = self._lap(res, "store", t)
            if prep.model_inputs is not None:
                field = self.clf.predict_field(prep.model_inputs)
                t = self._lap(res, "inference", t)
                if res.segmentation is not None:
                    res.segmentation.update(field.to_dict())
                if field.prediction is None:
                    res.status, res.reason = UNREADABLE, field.refusal
                    prep.model_inputs = None
                    prep.inferred = t
                    return True
                pred = field.prediction
                res.label, res.probabilities = pred.label, pred.probabilities
                res.malignant_score, res.verdict, res.needs_review = (
                    pred.malignant_score,
                    pred.verdict,
                    pred.needs_review,
                )
                if self.validated is not None:
                    outside = self.validated.check(prep.optics, prep.cell_lab, field.distances)
                    if outside:
                        # Outside what the model was validated on: a person decides, whatever the score.
                        res.domain, res.needs_review = "; ".join(outside), True
        except Exception as e:  # noqa: BLE001
            log.exception("unexpected error on %s", prep.job.path)
            res.status, res.reason = REJECTED, f"processing error: {type(e).__name__}: {e}".splitlines()[0]
        prep.model_inputs = None
        prep.inferred = t
        return True

    def _commit(self, group: List[Prepared]) -> None:
        """Record a group of inferred images in one transaction, then move their files (never before)."""
        if self.store is not None and group:
            now = time.monotonic()
            for prep in group:  # "total before storing"; the store adds its own time
                prep.result.timings["total"] = round((now - prep.started) * 1000, 3)
            try:
                ids = self.store.record_many([self.to_record(p.result) for p in group], self.sample_rule)
            except DatabaseGone:
                raise  # nothing can be recorded any more: stop, move nothing (see edge/daemon/service.py)
            except Exception as e:  # noqa: BLE001
                if len(group) > 1:
                    # One bad row must not cost the others their record: retry them one at a time.
                    log.warning(
                        "group commit of %d images failed (%s); recording one by one",
                        len(group),
                        str(e).splitlines()[0],
                    )
                    for prep in group:
                        self._commit([prep])
                    return
                ids = [None]
                res = group[0].result
                log.error("could not record %s: %s", res.path, str(e).splitlines()[0])
                res.reason = res.reason or f"not recorded: {e}".splitlines()[0]
            for prep, rid in zip(group, ids):
                prep.result.record_id, prep.result.recorded = rid, rid is not None
                # Plus the time from the end of inference to the durable commit, waiting in the group included.
                self._lap(prep.result, "store", prep.inferred, add=True)
        for prep in group:
            prep.result.timings["total"] = round((time.monotonic() - prep.started) * 1000, 3)
            self._move(prep.result, prep.job.path)

    def to_record(self, res: ImageResult) -> ImageRecord:
        tm = res.timings
        return ImageRecord(
            path=res.path,
            sha256=res.sha256,
            status=res.status,
            reason=res.reason or None,
            bytes=res.size_bytes,
            capture_time=res.capture_time,
            label=res.label,
            probabilities=res.probabilities,
            malignant_score=res.malignant_score,
            verdict=res.verdict,
            needs_review=bool(res.needs_review),
            duplicate_of=res.duplicate_of,
            quality=res.quality,
            segmentation=res.segmentation,
            t_queue_ms=tm.get("queue"),
            t_decode_ms=tm.get("decode"),
            t_quality_ms=tm.get("quality"),
            t_preprocess_ms=tm.get("preprocess"),
            t_inference_ms=tm.get("inference"),
            t_total_ms=tm.get("total"),
            model_id=self.model_id if res.status in (CLASSIFIED, DUPLICATE) else None,
            model_name=self.clf.name,
            model_sha256=self.clf.sha256,
            run_id=self.run_id,
            sample_id=res.sample_id,
            px_per_um=res.px_per_um,
            magnification=res.magnification,
            domain=res.domain,
        )

    def _move(self, res: ImageResult, src: Path) -> None:
        if not (self.move_after and self.inbox is not None and res.sha256 and (res.recorded or res.already_recorded)):
            return
        if not src.exists() and not src.is_symlink():
            return
        ok = res.status in (CLASSIFIED, DUPLICATE)
        dest_dir = self.cfg.daemon.done_dir if ok else self.cfg.daemon.rejected_dir
        if src.parent != self.inbox and _within(src, self.inbox):
            dest_dir = dest_dir / src.parent.name  # keep the sample's fields together
        try:
            dest_dir.mkdir(parents=True, exist_ok=True)
            dest = dest_dir / src.name
            n = 1
            while dest.exists():
                dest, n = dest_dir / f"{src.stem}.{n}{src.suffix}", n + 1
            shutil.move(str(src), str(dest))
            res.moved_to = identity.path_text(dest)
        except OSError as e:
            log.warning("could not move %s to %s: %s", src, dest_dir, e)
            return
        if self.store is not None and res.record_id:
            try:
                self.store.set_moved_to(res.record_id, res.moved_to)
            except Exception as e:  # noqa: BLE001 - the file is safe in done/; only the pointer is missing
                log.warning("moved %s to %s but could not record where: %s", src, dest, str(e).splitlines()[0])

    # ------------------------------------------------------------------------------------ driving
    def process(self, path: Union[str, Path]) -> ImageResult:
        return self.finish(self.prepare(Job(Path(path))))

    def stream(self, next_job: Callable[[bool], object]) -> Iterator[ImageResult]:
        """Overlapped processing: while image i is inferred and committed, image i+1 is prepared.

        ``next_job(block)`` returns the next :class:`Job`, None when there is none yet (waiting a little
        first when ``block``), or :data:`STOP`; the images in hand are always finished before stopping.
        While more images are waiting, results are committed in groups (see GROUP_MAX); an image with
        nothing behind it is committed at once, so an idle daemon's latency does not change.
        """
        group: List[Prepared] = []
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="prepare") as ex:
            pending = None
            try:
                while True:
                    job = next_job(pending is None)
                    if job is STOP:
                        break
                    fut = ex.submit(self.prepare, cast(Job, job)) if job is not None else None
                    if pending is not None:
                        yield from self._step(pending.result(), group, more=fut is not None)
                    pending = fut
                if pending is not None:
                    yield from self._step(pending.result(), group, more=False)
            finally:  # non-empty only when the consumer stopped early: record what is already inferred
                self._commit(group)

    def _step(self, prep: Prepared, group: List[Prepared], more: bool) -> Iterator[ImageResult]:
        if any(g.result.sha256 == prep.result.sha256 for g in group):
            # Same content as an uncommitted image: its duplicate and exactly-once checks must see that
            # image's row, so commit the group first.
            yield from self._flush(group)
        if prep.result.deferred:
            yield prep.result
        elif not self._infer(prep):
            yield prep.result
        else:
            group.append(prep)
        if group and (not more or len(group) >= GROUP_MAX or time.monotonic() - group[0].inferred >= GROUP_WAIT_S):
            yield from self._flush(group)

    def _flush(self, group: List[Prepared]) -> Iterator[ImageResult]:
        done, group[:] = group[:], []
        self._commit(done)
        for prep in done:
            yield prep.result

    def run_paths(self, paths: Iterable[Path]) -> Iterator[ImageResult]:
        queue = deque(Job(Path(p)) for p in paths)
        return self.stream(lambda block: queue.popleft() if queue else STOP)


STOP = object()
# Group commit bounds for a burst: one fsync per up to 32 images, and no result waits more than ~50 ms
# for its commit (a kill -9 inside that window only means those files are processed again at restart).
GROUP_MAX = 32
GROUP_WAIT_S = 0.05

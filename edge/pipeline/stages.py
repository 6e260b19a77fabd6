"""Per-image processing: identity, decode, quality gate, preprocess, inference, one committed record.

Two stages so that the cores overlap: :meth:`Pipeline.prepare` (read, hash, decode, quality, preprocess,
in the steps of :mod:`edge.pipeline.prepare`; OpenCV releases the GIL) runs in worker threads for the next
images (PREPARE_WORKERS of them at once) while stage 2 (duplicate check, inference, which also releases
the GIL, and the commit) runs for the current one. Stage 2 is only ever run from one thread, in arrival
order, so the duplicate and exactly-once checks see every earlier commit (an image whose content is in the
uncommitted group first commits the group). In a burst, stage 2 commits up to GROUP_MAX images in one
transaction: one fsync instead of one per image.

Every failure of one file becomes a recorded status with a one-line reason; nothing here raises for a bad
image, so one bad file never stops the others.
"""

from __future__ import annotations

import logging
import shutil
import time
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Callable, Deque, Iterable, Iterator, List, Optional, Union, cast

from edge.imaging.optics import run_opencv_single_threaded
from edge.inference.classifier import Classifier
from edge.pipeline import identity
from edge.pipeline.prepare import Preparer, lap, within
from edge.pipeline.results import CLASSIFIED, DUPLICATE, REJECTED, UNREADABLE, Job, Prepared
from edge.pipeline.settings import PipelineSettings
from edge.store.records import DatabaseGone, ImageRecord

log = logging.getLogger("edge.pipeline.stages")


class Pipeline:
    """Processes images with one classifier into one store (or none, for ``classify --no-db``)."""

    def __init__(self, settings: PipelineSettings, classifier: Classifier, store=None):
        """``settings`` for ``classifier``'s card (:meth:`PipelineSettings.of`)."""
        self.settings = settings
        self.clf = classifier
        self.store = store
        self.preparer = Preparer(
            params=classifier.preprocessing,
            thresholds=settings.gate,
            optics=settings.optics,
            max_file_bytes=settings.max_file_bytes,
            inbox=settings.inbox,
            defer_incomplete_s=settings.defer_incomplete_s,
        )
        self.model_id: Optional[str] = None
        if store is not None:
            self.model_id = store.ensure_model(classifier.name, classifier.sha256, classifier.card.to_dict())
        self.run_id: Optional[str] = None

    # ------------------------------------------------------------------------------------ stage 1
    def prepare(self, job: Job) -> Prepared:
        """Stage 1 (:class:`edge.pipeline.prepare.Preparer`): the file's result, settled or waiting for the
        model with its inputs. Never raises: an unexpected error is the file's ``rejected`` reason."""
        started = time.monotonic()
        res = ImageRecord(
            path=identity.path_text(job.path),
            status=REJECTED,
            reason="",
            bytes=0,
            model_name=self.clf.name,
            model_sha256=self.clf.sha256,
            run_id=self.run_id,
        )
        res.timings.add("queue", (started - job.discovered) * 1000)
        prep = Prepared(job=job, result=res, started=started)
        try:
            self.preparer.run(prep)
        except Exception as e:  # noqa: BLE001 - a bug on one file must not stop the others
            log.exception("unexpected error on %s", job.path)
            res.status, res.reason = REJECTED, f"processing error: {type(e).__name__}: {e}".splitlines()[0]
            prep.model_inputs = None
        return prep

    _lap = staticmethod(lap)  # stage 2 times its work as stage 1's steps do

    # ------------------------------------------------------------------------------------ stage 2
    def finish(self, prep: Prepared) -> ImageRecord:
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
                        res.status = first.status
                        res.copy_answer(first)
                    self._move(res, prep.job.path)
                    return False
                if first is not None and res.status == CLASSIFIED:
                    res.status, res.duplicate_of = DUPLICATE, str(first.id)
                    res.reason = f"same content as {first.path}"
                    res.copy_answer(first)
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
                outside = []
                if self.settings.validated is not None:
                    outside = self.settings.validated.check(prep.optics, prep.cell_lab, field.distances, field.novelty)
                outside += prep.flags + field.flags
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
            looked_up = [p.result.timings.store for p in group]  # the duplicate lookup's time (stage 2)
            for prep in group:
                res = prep.result
                res.model_id = self.model_id if res.status in (CLASSIFIED, DUPLICATE) else None
                # The row's total is the one before storing and its store time the store's own (the store
                # measures it and adds it to the total); the result's store time is the whole wait, below.
                res.timings.total, res.timings.store = round((now - prep.started) * 1000, 3), None
            try:
                ids = self.store.record_many([p.result for p in group])
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
                    for prep, ms in zip(group, looked_up):
                        prep.result.timings.store = ms
                        self._commit([prep])
                    return
                ids = [None]
                res = group[0].result
                log.error("could not record %s: %s", res.path, str(e).splitlines()[0])
                res.reason = res.reason or f"not recorded: {e}".splitlines()[0]
            for prep, rid, ms in zip(group, ids, looked_up):
                prep.result.id, prep.result.recorded, prep.result.timings.store = rid, rid is not None, ms
                # Plus the time from the end of inference to the durable commit, waiting in the group included.
                self._lap(prep.result, "store", prep.inferred, add=True)
        for prep in group:
            prep.result.timings.total = round((time.monotonic() - prep.started) * 1000, 3)
            self._move(prep.result, prep.job.path)

    def _move(self, res: ImageRecord, src: Path) -> None:
        inbox = self.settings.inbox
        if not (self.settings.move_after and inbox is not None and res.sha256):
            return
        if not (res.recorded or res.already_recorded):
            return
        if not src.exists() and not src.is_symlink():
            return
        ok = res.status in (CLASSIFIED, DUPLICATE)
        dest_dir = self.settings.done_dir if ok else self.settings.rejected_dir
        if src.parent != inbox and within(src, inbox):
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
        if self.store is not None and res.id:
            try:
                self.store.set_moved_to(res.id, res.moved_to)
            except Exception as e:  # noqa: BLE001 - the file is safe in done/; only the pointer is missing
                log.warning("moved %s to %s but could not record where: %s", src, dest, str(e).splitlines()[0])

    # ------------------------------------------------------------------------------------ driving
    def process(self, path: Union[str, Path]) -> ImageRecord:
        return self.finish(self.prepare(Job(Path(path))))

    def stream(self, next_job: Callable[[bool], object]) -> Iterator[ImageRecord]:
        """Overlapped processing: while image i is inferred and committed, image i+1 is prepared.

        ``next_job(block)`` returns the next :class:`Job`, None when there is none yet (waiting a little
        first when ``block``), or :data:`STOP`; the images in hand are always finished before stopping.
        While more images are waiting, results are committed in groups (see GROUP_MAX); an image with
        nothing behind it is committed at once, so an idle daemon's latency does not change.
        """
        group: List[Prepared] = []
        workers = PREPARE_WORKERS
        if workers > 1:
            run_opencv_single_threaded()  # the workers are the parallelism (see optics._one_opencv_thread)
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="prepare") as ex:
            pending: Deque[Future] = deque()  # in the order the jobs came: stage 2 takes them in that order
            stopping = False
            try:
                while pending or not stopping:
                    # Keep up to `workers` images in preparation; wait for a job only with none in hand.
                    while not stopping and len(pending) < workers:
                        job = next_job(not pending)
                        if job is None:
                            break
                        if job is STOP:
                            stopping = True
                        else:
                            pending.append(ex.submit(self.prepare, cast(Job, job)))
                    if pending:
                        yield from self._step(pending.popleft().result(), group, more=bool(pending))
            finally:  # non-empty only when the consumer stopped early: record what is already inferred
                self._commit(group)

    def _step(self, prep: Prepared, group: List[Prepared], more: bool) -> Iterator[ImageRecord]:
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

    def _flush(self, group: List[Prepared]) -> Iterator[ImageRecord]:
        done, group[:] = group[:], []
        self._commit(done)
        for prep in done:
            yield prep.result

    def run_paths(self, paths: Iterable[Path]) -> Iterator[ImageRecord]:
        queue = deque(Job(Path(p)) for p in paths)
        return self.stream(lambda block: queue.popleft() if queue else STOP)


STOP = object()
# Images prepared at once in a stream (stage 1 is nearly all of a field's CPU, most of it the red-cell
# Hough passes; stage 2 runs beside them on the caller's thread). Two: the smallest target has 2 cores.
PREPARE_WORKERS = 2
# Group commit bounds for a burst: one fsync per up to 32 images, and no result waits more than ~50 ms
# for its commit (a kill -9 inside that window only means those files are processed again at restart).
GROUP_MAX = 32
GROUP_WAIT_S = 0.05

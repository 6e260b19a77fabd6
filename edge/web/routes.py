"""The review pages: the queue, one sample with its fields, and the two forms (field review, sign-off).

Views only translate: the reading is :class:`edge.store.samples.Samples`, the writing :mod:`edge.store.reviews`. A
refused form answers with the library's one-line reason and the status that fits it (400 bad input, 404
unknown sample or field, 409 the sample's state); nothing is written before the library says yes.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Dict, List, Optional, Tuple

from flask import Blueprint, Response, abort, current_app, g, redirect, render_template, request, url_for
from sqlalchemy import select

from edge.pipeline.domain import recent as recent_optics
from edge.store.records import ImageRecord
from edge.store.reviews import (Review, ReviewConflict, ReviewError, card_labels, history, latest_field_reviews, review_field,
                       sign_off)
from edge.store.samples import Sample, SampleError, risk_key, validate_sample_id
from edge.store.schema import images, samples
from edge.vocabulary import VERDICTS
from edge.web.media import MediaError, image_file

log = logging.getLogger("edge.web")
bp = Blueprint("pages", __name__)

SIDE_LIST = 20  # collecting and signed samples shown under the queue
NOTICES = {"field": "field review recorded", "signed": "sample signed off"}  # no reflected text in pages


@dataclass
class FieldView:
    rec: ImageRecord
    labels: Tuple[str, ...]  # the labels of the card of the model that made this call
    file_present: bool
    review: Optional[Review]  # the newest field review, if any


def _ctx():
    return current_app.extensions["edge"]


def _device() -> str:
    return _ctx().store.device()


def _samples(status: str, order, limit: Optional[int] = None) -> List[Sample]:
    return _ctx().samples.list(status, device_id=_device(), order=order, limit=limit)


def _sample_or_404(sample_id: str) -> Sample:
    try:
        validate_sample_id(sample_id)
        s = _ctx().samples.get(sample_id)
    except SampleError:
        s = None
    if s is None:
        abort(404, description=f"no sample {sample_id!r} on this device ({_device()})")
    return s


def _field_or_404(image_id: str, sample_id: Optional[str] = None) -> ImageRecord:
    q = select(images).where(images.c.id == image_id, images.c.device_id == _device(), images.c.sample_id.isnot(None))
    if sample_id is not None:
        q = q.where(images.c.sample_id == sample_id)
    with _ctx().store.engine.connect() as conn:
        row = conn.execute(q).first()
    if row is None:
        where = f"sample {sample_id!r}" if sample_id is not None else "a sample"
        abort(404, description=f"no field {image_id!r} in {where} on this device ({_device()})")
    return ImageRecord.from_row(row)


def _refused(e: ReviewError, sample_id: str):
    status = 409 if isinstance(e, ReviewConflict) else 400
    log.warning("refused %s by %s on %s: %s", request.path, g.session.user.name, sample_id, e)
    return render_template("errors.html", code=status, message=str(e),
                           back=url_for("pages.sample", sample_id=sample_id)), status


# ---------------------------------------------------------------------------------------------- pages
@bp.get("/")
def queue():
    ready = sorted(_samples("ready", [samples.c.ready_at]), key=risk_key)
    collecting = _samples("collecting", [samples.c.updated_at.desc()], SIDE_LIST)
    signed = _samples("signed", [samples.c.signed_at.desc()], SIDE_LIST)
    return render_template("queue.html", ready=ready, collecting=collecting, signed=signed,
                           optics=recent_optics(_ctx().store))


@bp.get("/sample/<sample_id>")
def sample(sample_id: str):
    ctx = _ctx()
    s = _sample_or_404(sample_id)
    hist = history(ctx.store, s.sample_id)
    latest = latest_field_reviews(ctx.store, s.sample_id, hist)
    labels: Dict[Optional[str], Tuple[str, ...]] = {}
    fields = []
    for rec in ctx.samples.fields(s):
        if rec.model_id not in labels:
            labels[rec.model_id] = card_labels(ctx.store, rec.model_id)
        fields.append(FieldView(rec, labels[rec.model_id], image_file(rec) is not None, latest.get(rec.id)))
    sample_labels = card_labels(ctx.store, s.model_id)
    return render_template("sample.html", s=s, fields=fields, history=hist, sample_labels=sample_labels,
                           verdicts=VERDICTS, notice=NOTICES.get(request.args.get("done", "")))


# ---------------------------------------------------------------------------------------------- forms
@bp.post("/sample/<sample_id>/field/<image_id>/review")
def review(sample_id: str, image_id: str):
    s = _sample_or_404(sample_id)
    rec = _field_or_404(image_id, s.sample_id)
    user = g.session.user.name
    try:
        review_field(_ctx().store, user, rec.id, request.form.get("label", ""), request.form.get("comment"))
    except ReviewError as e:
        return _refused(e, s.sample_id)
    log.info("field review by %s: sample %s field %s %s -> %s", user, s.sample_id, rec.filename, rec.label,
             request.form.get("label"))
    return redirect(url_for("pages.sample", sample_id=s.sample_id, done="field", _anchor=f"f-{rec.id}"), 303)


@bp.post("/sample/<sample_id>/signoff")
def signoff(sample_id: str):
    s = _sample_or_404(sample_id)
    user = g.session.user.name
    f = request.form
    try:
        sign_off(_ctx().store, user, s.sample_id, f.get("verdict", ""), f.get("label") or None, f.get("comment"))
    except ReviewError as e:
        return _refused(e, s.sample_id)
    log.info("sign-off by %s: sample %s %s (model said %s)", user, s.sample_id, f.get("verdict"), s.verdict)
    return redirect(url_for("pages.sample", sample_id=s.sample_id, done="signed"), 303)


# ---------------------------------------------------------------------------------------------- images
def _image(make, image_id: str, mimetype: str):
    rec = _field_or_404(image_id)
    try:
        data = make(rec)
    except MediaError as e:
        return Response(str(e) + "\n", status=e.status, mimetype="text/plain")
    resp = Response(data, mimetype=mimetype)
    resp.headers["Cache-Control"] = "private, max-age=300"  # patient images: never in a shared cache
    return resp


@bp.get("/field/<image_id>/thumb.jpg")
def thumbnail(image_id: str):
    return _image(_ctx().media.thumbnail, image_id, "image/jpeg")


@bp.get("/field/<image_id>/explain.png")
def explanation(image_id: str):
    return _image(_ctx().media.explanation, image_id, "image/png")

"""The review pages: the queue, one sample with its fields and cells, one field at full resolution, and the
forms (field review, confirm all, sign-off with its confirmation).

Views only translate: the reading is :class:`edge.store.samples.Samples` (shaped for the pages by :mod:`.views`),
the writing :mod:`edge.store.reviews`. A refused form answers with the library's one-line reason and the status
that fits it (400 bad input, 404 unknown sample or field, 409 the sample's state); nothing is written before
the library says yes. Every form works without JavaScript; ``static/review.js`` only saves round trips.
"""

from __future__ import annotations

import logging
from typing import List, Optional

from flask import Blueprint, Response, abort, current_app, g, redirect, render_template, request, url_for
from sqlalchemy import select

from edge.imaging.fieldcells import field_cells
from edge.pipeline.domain import recent as recent_optics
from edge.store.records import ImageRecord
from edge.store.reviews import ReviewConflict, ReviewError, check_sign_off, confirm_fields, review_field, sign_off
from edge.store.rows import image_record
from edge.store.samples import Sample, SampleError, validate_sample_id
from edge.store.schema import images, samples
from edge.vocabulary import VERDICTS, SampleStatus
from edge.web import views
from edge.web.media import MediaError

log = logging.getLogger("edge.web")
bp = Blueprint("pages", __name__)

SIDE_LIST = 20  # collecting and signed samples shown under the queue
NOTICES = {
    "field": "field review recorded",
    "signed": "sample signed off",  # no reflected text in pages (a notice key, not SampleStatus)
    "confirmed": "fields confirmed as shown",
}


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
    return image_record(row)


def _refused(e: ReviewError, sample_id: str):
    status = 409 if isinstance(e, ReviewConflict) else 400
    log.warning("refused %s by %s on %s: %s", request.path, g.session.user.name, sample_id, e)
    return render_template(
        "errors.html", code=status, message=str(e), back=url_for("pages.sample", sample_id=sample_id)
    ), status


def _view(s: Sample) -> views.SampleView:
    ctx = _ctx()
    return views.sample_view(ctx.store, ctx.samples, s, _device())


# ---------------------------------------------------------------------------------------------- pages
@bp.get("/")
def queue():
    lib = _ctx().samples
    ready = views.ready_in_order(lib, _device())
    collecting = _samples(SampleStatus.COLLECTING, [samples.c.updated_at.desc()], SIDE_LIST)
    signed = _samples(SampleStatus.SIGNED, [samples.c.signed_at.desc()], SIDE_LIST)
    return render_template(
        "queue.html",
        rows=views.queue_rows(lib, ready),
        collecting=collecting,
        signed=signed,
        late=views.late_signed(lib, _device()),
        optics=recent_optics(_ctx().store),
    )


@bp.get("/sample/<sample_id>")
def sample(sample_id: str):
    s = _sample_or_404(sample_id)
    return render_template(
        "sample.html", v=_view(s), s=s, verdicts=VERDICTS, notice=NOTICES.get(request.args.get("done", ""))
    )


@bp.get("/sample/<sample_id>/field/<image_id>")
def field(sample_id: str, image_id: str):
    """One field at full resolution, its scored cells outlined and numbered, each cell's explanation map."""
    s = _sample_or_404(sample_id)
    rec = _field_or_404(image_id, s.sample_id)
    v = _view(s)
    ids = [f.rec.id for f in v.fields]
    i = ids.index(rec.id)
    size = (rec.segmentation or {}).get("file_px")
    return render_template(
        "field.html",
        v=v,
        s=s,
        f=v.fields[i],
        size=size,
        prev_id=ids[i - 1] if i > 0 else None,
        next_id=ids[i + 1] if i + 1 < len(ids) else None,
        notice=NOTICES.get(request.args.get("done", "")),
    )


# ---------------------------------------------------------------------------------------------- forms
@bp.post("/sample/<sample_id>/field/<image_id>/review")
def review(sample_id: str, image_id: str):
    s = _sample_or_404(sample_id)
    rec = _field_or_404(image_id, s.sample_id)
    user = g.session.user.name
    try:
        review_field(_ctx().store, user, rec.id or "", request.form.get("label", ""), request.form.get("comment"))
    except ReviewError as e:
        return _refused(e, s.sample_id)
    log.info(
        "field review by %s: sample %s field %s %s -> %s",
        user,
        s.sample_id,
        rec.filename,
        rec.label,
        request.form.get("label"),
    )
    if request.form.get("back") == "field":
        return redirect(url_for("pages.field", sample_id=s.sample_id, image_id=rec.id, done="field"), 303)
    return redirect(url_for("pages.sample", sample_id=s.sample_id, done="field", _anchor=f"f-{rec.id}"), 303)


@bp.post("/sample/<sample_id>/confirm")
def confirm_all(sample_id: str):
    """ "Confirm all as shown": the fields the page listed as not yet reviewed, each with the model's label."""
    s = _sample_or_404(sample_id)
    user = g.session.user.name
    try:
        done = confirm_fields(_ctx().store, user, s.sample_id, request.form.getlist("field"))
    except ReviewError as e:
        return _refused(e, s.sample_id)
    log.info("confirm all by %s: sample %s, %d field(s)", user, s.sample_id, len(done))
    return redirect(url_for("pages.sample", sample_id=s.sample_id, done="confirmed"), 303)


@bp.post("/sample/<sample_id>/signoff")
def signoff(sample_id: str):
    """Two steps: the form posts here and gets a summary to confirm (nothing written); the summary's own
    form posts again with ``confirmed`` and the sample version it was made on."""
    s = _sample_or_404(sample_id)
    user = g.session.user.name
    f = request.form
    verdict, label, comment, version = (
        f.get("verdict", ""),
        f.get("label") or None,
        f.get("comment"),
        f.get("version", ""),
    )
    try:
        if f.get("confirmed") != "yes":
            seen = check_sign_off(_ctx().store, user, s.sample_id, verdict, label, comment, version)
            v = _view(seen)
            return render_template(
                "confirm.html",
                v=v,
                s=seen,
                verdict=verdict,
                label=label,
                comment=(comment or "").strip(),
                summary=views.signoff_summary(v, verdict, label, (comment or "").strip()),
            )
        sign_off(_ctx().store, user, s.sample_id, verdict, label, comment, version)
    except ReviewError as e:
        return _refused(e, s.sample_id)
    log.info("sign-off by %s: sample %s %s (model said %s)", user, s.sample_id, verdict, s.verdict)
    return redirect(url_for("pages.sample", sample_id=s.sample_id, done="signed"), 303)  # the NOTICES key


# ---------------------------------------------------------------------------------------------- images
def _send(data: bytes, mimetype: str) -> Response:
    resp = Response(data, mimetype=mimetype)
    resp.headers["Cache-Control"] = "private, max-age=300"  # patient images: never in a shared cache
    return resp


def _image(make, image_id: str, mimetype: str):
    rec = _field_or_404(image_id)
    try:
        data = make(rec)
    except MediaError as e:
        return Response(str(e) + "\n", status=e.status, mimetype="text/plain")
    return _send(data, mimetype)


def _cell(rec: ImageRecord, number: int):
    for c in field_cells(rec.segmentation):
        if c.number == number:
            return c
    abort(404, description=f"no cell {number} in field {rec.id}")


@bp.get("/field/<image_id>/thumb.jpg")
def thumbnail(image_id: str):
    return _image(_ctx().media.thumbnail, image_id, "image/jpeg")


@bp.get("/field/<image_id>/explain.png")
def explanation(image_id: str):
    return _image(_ctx().media.explanation, image_id, "image/png")


@bp.get("/field/<image_id>/cell/<int:number>.jpg")
def cell_crop(image_id: str, number: int):
    """Cell ``number`` (1 = most malignant) of the field, cut from its file by the recorded box."""
    rec = _field_or_404(image_id)
    c = _cell(rec, number)
    cells = sorted(field_cells(rec.segmentation), key=lambda x: x.index)
    size = (rec.segmentation or {}).get("file_px")
    try:
        crops = _ctx().media.cell_crops(rec, [[x.x, x.y, x.w, x.h] for x in cells], tuple(size) if size else None)
    except MediaError as e:
        return Response(str(e) + "\n", status=e.status, mimetype="text/plain")
    return _send(crops[c.index], "image/jpeg")


@bp.get("/field/<image_id>/cell/<int:number>/explain.png")
def cell_explanation(image_id: str, number: int):
    rec = _field_or_404(image_id)
    c = _cell(rec, number)
    return _image(lambda r: _ctx().media.explanation(r, c.centre), image_id, "image/png")


@bp.get("/field/<image_id>/image")
def field_image(image_id: str):
    rec = _field_or_404(image_id)
    try:
        data, mimetype = _ctx().media.field_image(rec)
    except MediaError as e:
        return Response(str(e) + "\n", status=e.status, mimetype="text/plain")
    return _send(data, mimetype)

"""The review web app behind `edge-screen serve`: a reviewer confirms or corrects each field's call and signs
off a ready sample; a viewer only looks.

Flask for routing and templates, waitress to serve it (see the README for why on a Pi). Everything needs a
login (:mod:`.auth`); the pages are :mod:`.routes`, images :mod:`.media`. The app holds no state of its
own beyond two small caches: the database is the only truth, so the daemon, `serve` and the CLI agree.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path

from flask import Flask, g, render_template, request
from werkzeug.exceptions import HTTPException

from edge.config import Config
from edge.store.samples import Samples
from edge.vocabulary import SampleStatus, Status
from edge.web import auth, routes
from edge.web.bind import allowed_hosts
from edge.web.faults import DatabaseWatch
from edge.web.media import LRU, Media, explain_in_child, explain_in_process

log = logging.getLogger("edge.web")
HERE = Path(__file__).resolve().parent

# No inline script or style, nothing from elsewhere: a page cannot be made to load or run anything but the
# app's own static/review.js (keyboard and in-place form posts; every form works without it).
CSP = (
    "default-src 'none'; img-src 'self'; style-src 'self'; script-src 'self'; connect-src 'self'; "
    "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)


@dataclass
class WebContext:
    cfg: Config
    store: object  # edge.store.database.Store
    samples: Samples
    media: Media


def create_app(cfg: Config, store, classifier=None, thumb_cache: int = 256, map_cache: int = 16) -> Flask:
    """The app on an open store. Explanation maps come from ``classifier`` when one is given, else from the
    configured model in a child process (the server never holds a model)."""
    app = Flask(__name__, template_folder=str(HERE / "templates"), static_folder=str(HERE / "static"))
    app.config.update(
        MAX_CONTENT_LENGTH=64 * 1024, TEMPLATES_AUTO_RELOAD=False, TRUSTED_HOSTS=list(allowed_hosts(cfg.web))
    )
    if cfg.web.trusted_proxies:
        app.wsgi_app = auth.TrustedProxies(app.wsgi_app, cfg.web.trusted_proxies)  # type: ignore[method-assign]
    explain = explain_in_process(lambda: classifier) if classifier is not None else explain_in_child(cfg.source)
    app.extensions["edge"] = WebContext(
        cfg=cfg,
        store=store,
        samples=store.samples,
        media=Media(
            explain,
            LRU(thumb_cache),
            LRU(map_cache),
            roots=(cfg.daemon.inbox, cfg.daemon.done_dir, cfg.daemon.rejected_dir),
        ),
    )
    app.register_blueprint(auth.bp)
    app.register_blueprint(routes.bp)
    # First of the request hooks: a deleted or read-only database is answered before a session is looked up.
    app.extensions["edge_database_watch"] = DatabaseWatch(store)
    app.extensions["edge_database_watch"].install(app)
    app.before_request(_start_clock)
    app.before_request(auth.check_host)
    app.before_request(auth.check_request)
    app.after_request(_headers)
    app.register_error_handler(HTTPException, _error)
    # Status, SampleStatus: the templates compare a field's or a sample's status with the vocabulary's members,
    # never a spelled-out word.
    app.jinja_env.globals.update(device_id=store.device(), Status=Status, SampleStatus=SampleStatus)
    app.jinja_env.filters["when"] = lambda t: t.strftime("%Y-%m-%d %H:%M UTC") if t else ""
    return app


def _start_clock() -> None:
    g.t0 = time.perf_counter()


def _headers(resp):
    # Server-Timing: how long the server took, readable by scripts/bench_web.py and the browser's dev tools.
    if hasattr(g, "t0"):
        resp.headers["Server-Timing"] = f"app;dur={(time.perf_counter() - g.t0) * 1000:.2f}"
    resp.headers.setdefault("Content-Security-Policy", CSP)
    resp.headers["X-Content-Type-Options"] = "nosniff"
    resp.headers["Referrer-Policy"] = "same-origin"
    if resp.mimetype == "text/html":
        resp.headers["Cache-Control"] = "no-store"  # patient data: not in the browser's disk cache
    return resp


def _error(e: HTTPException):
    if request.endpoint in auth.MEDIA or request.path.startswith("/static/"):
        return (e.description or "") + "\n", e.code, {"Content-Type": "text/plain; charset=utf-8"}
    return render_template("errors.html", code=e.code, message=e.description, back=None), e.code


__all__ = ["WebContext", "create_app"]

"""Log-in, server-side sessions and the checks every request passes before a view runs.

The cookie holds a random token and the database only its sha256, so a copied database (the SD card) opens
no session. Each session has its own CSRF token, put in every form and checked on every POST; a POST whose
Origin (or, without one, Referer) names another site is refused as well, and the cookie is SameSite=Strict,
so a page on another site can neither read the app nor act in it. A session lasts ``web.session_minutes``
from log-in (one shift), then the next request goes back to the login page with a message.
"""
from __future__ import annotations

import hashlib
import hmac
import logging
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Optional, Tuple
from urllib.parse import urlsplit

from flask import Blueprint, abort, current_app, g, redirect, render_template, request, url_for
from sqlalchemy import delete, select

from edge.store.reviews import User, verify_user
from edge.store.schema import users, utcnow, web_sessions

log = logging.getLogger("edge.web")
bp = Blueprint("auth", __name__)

COOKIE = "edge_screen_session"
EXPIRED = "your session expired, log in again"
PUBLIC = {"auth.login", "static"}
KEEP_EXPIRED = timedelta(days=1)
# Image endpoints answer 401 rather than a redirect: an <img> cannot follow a login page.
MEDIA = {"pages.thumbnail", "pages.explanation"}


@dataclass(frozen=True)
class WebSession:
    user: User
    csrf: str
    expires_at: datetime


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def start_session(store, user: User, minutes: int) -> Tuple[str, WebSession]:
    """A new session for ``user``; returns (cookie token, session). Sessions expired for over a day are
    cleared here; younger ones stay so that their next request can still say "expired" (every request of
    the page, thumbnails included, must see the same answer)."""
    token, now = secrets.token_urlsafe(32), utcnow()
    sess = WebSession(user=user, csrf=secrets.token_urlsafe(32), expires_at=now + timedelta(minutes=minutes))
    with store.write() as conn:
        conn.execute(delete(web_sessions).where(web_sessions.c.expires_at < now - KEEP_EXPIRED))
        conn.execute(web_sessions.insert().values(token_sha256=_digest(token), user_name=user.name, csrf=sess.csrf,
                                                  created_at=now, expires_at=sess.expires_at))
    return token, sess


def find_session(store, token: str) -> Tuple[Optional[WebSession], bool]:
    """(session, expired): (None, False) for an unknown token or a disabled user."""
    q = (select(web_sessions.c.csrf, web_sessions.c.expires_at, users.c.name, users.c.role, users.c.created_at,
                users.c.disabled)
         .join(users, users.c.name == web_sessions.c.user_name).where(web_sessions.c.token_sha256 == _digest(token)))
    with store.engine.connect() as conn:
        row = conn.execute(q).first()
    if row is None or row.disabled:
        return None, False
    if row.expires_at <= utcnow():
        return None, True
    return WebSession(User(row.name, row.role, row.created_at, False), row.csrf, row.expires_at), False


def end_session(store, token: str) -> None:
    with store.write() as conn:
        conn.execute(delete(web_sessions).where(web_sessions.c.token_sha256 == _digest(token)))


# ---------------------------------------------------------------------------------- request checks
def _same_site() -> bool:
    """Does the POST come from a page of this app? Host only: behind a TLS-terminating proxy the scheme
    the browser saw differs from ours, but another site never has our host."""
    origin = request.headers.get("Origin")
    if origin is None:
        origin = request.headers.get("Referer")
        if origin is None:  # not a browser (browsers send Origin on every POST): the CSRF token decides
            return True
    try:
        return urlsplit(origin).netloc.lower() == request.host.lower()
    except ValueError:
        return False


def _safe_next(target: Optional[str]) -> str:
    # Only a path of this app: "//evil.example" or "https://..." would make the login form an open redirect.
    if target and target.startswith("/") and not target.startswith("//") and "\\" not in target:
        return target
    return url_for("pages.queue")


def _forbidden(message: str):
    log.warning("refused %s %s from %s: %s", request.method, request.path, request.remote_addr, message)
    abort(403, description=message)


def check_request():
    """Before every view: find the session, send the unauthenticated to log in, refuse foreign or
    token-less POSTs and POSTs by viewers."""
    ctx = current_app.extensions["edge"]
    token = request.cookies.get(COOKIE)
    g.session, expired = find_session(ctx.store, token) if token else (None, False)
    if request.method == "POST" and not _same_site():
        _forbidden("refused: this form was sent from another site")
    if request.endpoint in PUBLIC:
        return None
    if g.session is None:
        if request.endpoint in MEDIA:
            abort(401, description=EXPIRED if expired else "log in first")
        if expired:
            return redirect(url_for("auth.login", expired=1), 303)
        nxt = request.full_path.rstrip("?") if request.method == "GET" else None
        return redirect(url_for("auth.login", next=nxt), 303)
    if request.method == "POST":
        sent = request.form.get("csrf_token", "")
        if not sent or not hmac.compare_digest(sent, g.session.csrf):
            _forbidden("refused: the form's security token is missing or wrong; reload the page and try again")
        if request.endpoint != "auth.logout" and not g.session.user.can_review:
            _forbidden(f"refused: {g.session.user.name} is a {g.session.user.role} and can only look, "
                       "not review or sign off")
    return None


# ---------------------------------------------------------------------------------------- views
@bp.route("/login", methods=["GET", "POST"])
def login():
    ctx = current_app.extensions["edge"]
    message, status = (EXPIRED if request.args.get("expired") else None), 200
    if request.method == "POST":
        name, password = request.form.get("name", ""), request.form.get("password", "")
        user = verify_user(ctx.store, name.strip(), password)
        if user is not None:
            token, _ = start_session(ctx.store, user, ctx.cfg.web.session_minutes)
            log.info("login %s (%s) from %s", user.name, user.role, request.remote_addr)
            resp = redirect(_safe_next(request.form.get("next")), 303)
            resp.set_cookie(COOKIE, token, max_age=ctx.cfg.web.session_minutes * 60, httponly=True,
                            samesite="Strict", secure=request.is_secure, path="/")
            return resp
        log.warning("failed login for %r from %s", name[:64], request.remote_addr)
        message, status = "wrong user name or password", 401
    elif g.session is not None:
        return redirect(_safe_next(request.args.get("next")), 303)
    return render_template("login.html", message=message, next=request.values.get("next", "")), status


@bp.post("/logout")
def logout():
    ctx = current_app.extensions["edge"]
    end_session(ctx.store, request.cookies.get(COOKIE, ""))
    log.info("logout %s", g.session.user.name)
    resp = redirect(url_for("auth.login"), 303)
    resp.delete_cookie(COOKIE, path="/", httponly=True, samesite="Strict")
    return resp

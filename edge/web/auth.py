"""Log-in, server-side sessions and the checks every request passes before a view runs.

The cookie holds a random token and the database only its sha256, so a copied database (the SD card) opens
no session. Each session has its own CSRF token, put in every form and checked on every POST; a POST whose
Origin (or, without one, Referer) names another site is refused as well, and the cookie is SameSite=Strict,
so a page on another site can neither read the app nor act in it. A session lasts ``web.session_minutes``
from log-in (one shift), then the next request goes back to the login page with a message. Failed log-ins
slow down and then lock the name and the client (:mod:`edge.store.throttle`); a Host header that is not this
server's name is a 400; behind a configured proxy that says HTTPS, the cookie is Secure.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import logging
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Iterable, Optional, Tuple
from urllib.parse import quote, urlsplit

from flask import Blueprint, Response, abort, current_app, g, redirect, render_template, request, url_for
from sqlalchemy import delete, select
from werkzeug.exceptions import SecurityError

from edge.store import throttle
from edge.store.accounts import User, verify_user
from edge.store.schema import users, utcnow, web_sessions

log = logging.getLogger("edge.web")
bp = Blueprint("auth", __name__)

COOKIE = "edge_screen_session"
EXPIRED = "your session expired, log in again"
PUBLIC = {"auth.login", "static"}
KEEP_EXPIRED = timedelta(days=1)
# Image endpoints answer 401 rather than a redirect: an <img> cannot follow a login page.
MEDIA = {"pages.thumbnail", "pages.explanation", "pages.cell_crop", "pages.cell_explanation", "pages.field_image"}


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
        conn.execute(
            web_sessions.insert().values(
                token_sha256=_digest(token),
                user_name=user.name,
                csrf=sess.csrf,
                created_at=now,
                expires_at=sess.expires_at,
            )
        )
    return token, sess


def find_session(store, token: str) -> Tuple[Optional[WebSession], bool]:
    """(session, expired): (None, False) for an unknown token or a disabled user."""
    q = (
        select(
            web_sessions.c.csrf,
            web_sessions.c.expires_at,
            users.c.name,
            users.c.role,
            users.c.created_at,
            users.c.disabled,
        )
        .join(users, users.c.name == web_sessions.c.user_name)
        .where(web_sessions.c.token_sha256 == _digest(token))
    )
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
class TrustedProxies:
    """WSGI middleware: werkzeug's ProxyFix (X-Forwarded-For and -Proto, one proxy) for requests that come
    from a configured proxy address, and only for those: anyone else could send the same headers to pass
    for another client (a fresh log-in throttle) or for HTTPS."""

    def __init__(self, app, addresses: Iterable[str]):
        from werkzeug.middleware.proxy_fix import ProxyFix

        self.plain, self.fixed = app, ProxyFix(app, x_for=1, x_proto=1)
        self.addresses = frozenset(ipaddress.ip_address(a) for a in addresses)

    def __call__(self, environ, start_response):
        try:
            peer = ipaddress.ip_address(environ.get("REMOTE_ADDR", ""))
        except ValueError:
            peer = None
        return (self.fixed if peer in self.addresses else self.plain)(environ, start_response)


def check_host() -> Optional[Response]:
    """Before everything: the Host header must be one of web.server_names (or a loopback name), so a page on
    another name that resolves to this device (DNS rebinding) reads nothing. Flask's TRUSTED_HOSTS does the
    matching when request.host is first read."""
    try:
        _ = request.host  # read for its check
    except SecurityError:
        log.warning(
            "refused %s %s from %s: Host %r is not one of web.server_names",
            request.method,
            request.path,
            request.remote_addr,
            request.headers.get("Host", "")[:100],
        )
        # Plain text: without a trusted host Flask has no URL adapter, so no page with links can be made.
        return Response(
            "refused: this server does not answer to that host name (web.server_names)\n", 400, mimetype="text/plain"
        )
    return None


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
    """Where to go after log-in: only a path of this app, else the queue. "//evil.example", "https://...",
    "/\\evil" would make the login form an open redirect; so would "/\t/evil.example", because browsers
    drop tabs and newlines from a URL (it becomes "//evil.example"). A control character is refused (400):
    no link of this app has one, and in a Location header it would be a 500."""
    if not target:
        return url_for("pages.queue")
    if any(c < " " or c == "\x7f" for c in target):
        abort(400, description="refused: the address to return to after log-in has a control character")
    parts = urlsplit(target)
    if not target.startswith("/") or target.startswith("//") or "\\" in target or parts.scheme or parts.netloc:
        return url_for("pages.queue")
    return target


def _here() -> str:
    """This request's path and query, percent-encoded (request.full_path is decoded: %0A is a newline)."""
    qs = request.query_string.decode("ascii", "replace")
    return quote(request.path, safe="/:@!$&'()*+,;=-._~") + (f"?{qs}" if qs else "")


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
        nxt = _here() if request.method == "GET" else None
        return redirect(url_for("auth.login", next=nxt), 303)
    if request.method == "POST":
        sent = request.form.get("csrf_token", "")
        if not sent or not hmac.compare_digest(sent, g.session.csrf):
            _forbidden("refused: the form's security token is missing or wrong; reload the page and try again")
        if request.endpoint != "auth.logout" and not g.session.user.can_review:
            _forbidden(
                f"refused: {g.session.user.name} is a {g.session.user.role} and can only look, not review or sign off"
            )
    return None


# ---------------------------------------------------------------------------------------- views
@bp.route("/login", methods=["GET", "POST"])
def login():
    ctx = current_app.extensions["edge"]
    raw_next = request.values.get("next", "")
    target = _safe_next(raw_next)  # checked first: a refused address must not cost a log-in
    message, status, headers = (EXPIRED if request.args.get("expired") else None), 200, {}
    if request.method == "POST":
        name, password = request.form.get("name", "").strip(), request.form.get("password", "")
        policy, addr = login_policy(ctx.cfg), request.remote_addr
        refusal = throttle.check(ctx.store, name, addr, policy)
        user = None if refusal else verify_user(ctx.store, name, password)
        if user is not None:
            throttle.succeeded(ctx.store, name)
            token, _ = start_session(ctx.store, user, ctx.cfg.web.session_minutes)
            log.info("login %s (%s) from %s", user.name, user.role, addr)
            resp = redirect(target, 303)
            resp.set_cookie(
                COOKIE,
                token,
                max_age=ctx.cfg.web.session_minutes * 60,
                httponly=True,
                samesite="Strict",
                secure=request.is_secure,
                path="/",
            )
            return resp
        if refusal is not None:  # not checked, not counted: the password was not even looked at
            log.warning("log-in refused for %r from %s: %s", name[:64], addr, refusal.message)
            message, status = refusal.message, 429
            headers["Retry-After"] = str(refusal.retry_after_s())
        else:
            log.warning("failed login for %r from %s", name[:64], addr)
            throttle.failed(ctx.store, name, addr, policy)
            message, status = "wrong user name or password", 401
    elif g.session is not None:
        return redirect(target, 303)
    shown_next = raw_next if target == raw_next else ""
    return render_template("login.html", message=message, next=shown_next), status, headers


def login_policy(cfg) -> throttle.Policy:
    w = cfg.web
    return throttle.Policy(
        slowdown_after=w.login_slowdown_after,
        lock_after=w.login_lock_after,
        client_lock_after=w.login_client_lock_after,
        lock_minutes=w.login_lock_minutes,
    )


@bp.post("/logout")
def logout():
    ctx = current_app.extensions["edge"]
    end_session(ctx.store, request.cookies.get(COOKIE, ""))
    log.info("logout %s", g.session.user.name)
    resp = redirect(url_for("auth.login"), 303)
    resp.delete_cookie(COOKIE, path="/", httponly=True, samesite="Strict")
    return resp

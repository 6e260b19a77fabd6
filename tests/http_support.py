"""A raw HTTP client for the review app's security tests: http.client, so that the exact Host and
X-Forwarded-* headers are sent and redirects are not followed."""

from __future__ import annotations

import http.client
import urllib.parse
from typing import Dict, Optional

import web_support as ws


class Reply:
    def __init__(self, r: http.client.HTTPResponse):
        self.status, self.text = r.status, r.read().decode("utf-8", "replace")
        self.headers = {k.lower(): v for k, v in r.getheaders() if k.lower() != "set-cookie"}
        self.cookies = r.headers.get_all("Set-Cookie") or []


def request(
    url: str,
    method: str,
    path: str,
    form: Optional[Dict[str, str]] = None,
    headers: Optional[Dict[str, str]] = None,
    client: Optional[str] = None,
) -> Reply:
    """One raw request; ``path`` is sent as given (control characters percent-encoded by the caller)."""
    u = urllib.parse.urlsplit(url)
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=120)
    h = dict(headers or {})
    if client:
        h["X-Forwarded-For"] = client
    body = None
    if form is not None:
        body = urllib.parse.urlencode(form)
        h["Content-Type"] = "application/x-www-form-urlencoded"
    try:
        conn.request(method, path, body=body, headers=h)
        return Reply(conn.getresponse())
    finally:
        conn.close()


def login(
    url: str,
    name: str,
    password: str = ws.PASSWORD,
    client: Optional[str] = None,
    headers: Optional[Dict[str, str]] = None,
    **form,
) -> Reply:
    return request(
        url, "POST", "/login", form={"name": name, "password": password, **form}, client=client, headers=headers
    )


def session_cookie_line(r: Reply) -> str:
    """The whole Set-Cookie line of the session cookie (its attributes included)."""
    return next(c for c in r.cookies if c.startswith("edge_screen_session="))


def session_cookie(r: Reply) -> str:
    """The session cookie as a Cookie header sends it back."""
    return session_cookie_line(r).split(";")[0]

"""``edge-screen serve`` and ``edge-screen user``: option parsing only; the work is in :mod:`edge.web` and
:mod:`edge.store.reviews`. Flask, waitress and bcrypt are imported inside the commands so `edge-screen --help`
does not pay for them."""
from __future__ import annotations

import logging
import signal
import sys
from typing import Optional

import click

from edge.cli.common import Failure, load_cfg, started
from edge.vocabulary import ROLES


def _open_store(cfg):
    # The daemon's own database, with the configured device id: serve shows this device's samples.
    from edge.daemon import startup

    return started(startup.store, cfg)


@click.command("serve")
@click.option("--host", default=None, help="address to bind (default: web.host of the config, 127.0.0.1)")
@click.option("--port", default=None, type=click.IntRange(0, 65535),
              help="port (default: web.port of the config, 8080; 0 picks a free one)")
def serve(host: Optional[str], port: Optional[int]) -> None:
    """The review web app: the queue of ready samples, each sample's fields, field reviews and sign-off."""
    from edge.daemon.startup import setup_logging

    cfg = load_cfg()
    setup_logging(cfg.daemon.log_level)  # the daemon's format: journald stamps the time itself
    log = logging.getLogger("edge.web")
    from waitress import create_server

    from edge.web import create_app

    store = _open_store(cfg)
    host = host if host is not None else cfg.web.host
    port = port if port is not None else cfg.web.port
    try:
        server = create_server(create_app(cfg, store), host=host, port=port, threads=4, ident="edge-screen")
    except OSError as e:
        store.close()
        raise Failure(f"cannot listen on {host}:{port}: {e.strerror or e}") from None
    shown = f"[{server.effective_host}]" if ":" in str(server.effective_host) else server.effective_host
    log.info("review app on http://%s:%s/ (device %s)", shown, server.effective_port, cfg.daemon.device_id)
    if not _has_users(store):
        log.warning("no user accounts yet: add one with `edge-screen user add NAME --role reviewer`")
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))  # systemd stop: leave through the finally below
    try:
        server.run()
    except KeyboardInterrupt:
        pass
    finally:
        server.close()
        store.close()
        log.info("review app stopped")


def _has_users(store) -> bool:
    from edge.store.reviews import list_users

    return bool(list_users(store))


@click.group("user")
def user() -> None:
    """Accounts of the review web app (device-local, never exported)."""


@user.command("add")
@click.argument("name")
@click.option("--role", type=click.Choice(ROLES), default="reviewer", show_default=True)
def user_add(name: str, role: str) -> None:
    """Add an account; the password is read from stdin (one line, never echoed or printed)."""
    from edge.store.reviews import ReviewError, add_user

    if sys.stdin.isatty():
        import getpass

        password = getpass.getpass(f"password for {name}: ")
        if getpass.getpass("again: ") != password:
            raise Failure("the two passwords differ")
    else:
        password = sys.stdin.readline().rstrip("\r\n")
    store = _open_store(load_cfg())
    try:
        u = add_user(store, name, password, role)
    except ReviewError as e:
        raise Failure(str(e)) from None
    finally:
        store.close()
    click.echo(f"added {u.role} {u.name}")


@user.command("list")
def user_list() -> None:
    """Names, roles and creation times (never the password hashes)."""
    from edge.store.reviews import list_users

    store = _open_store(load_cfg())
    try:
        for u in list_users(store):
            click.echo(f"{u.name}\t{u.role}\t{u.created_at:%Y-%m-%d %H:%M} UTC" + ("\tdisabled" if u.disabled else ""))
    finally:
        store.close()


COMMANDS = [serve, user]

"""``edge-screen serve`` and ``edge-screen user``: option parsing only; the work is in :mod:`edge.web` and
:mod:`edge.store.reviews`. Flask, waitress and bcrypt are imported inside the commands so `edge-screen --help`
does not pay for them."""

from __future__ import annotations

import logging
import os
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
@click.option(
    "--port",
    default=None,
    type=click.IntRange(0, 65535),
    help="port (default: web.port of the config, 8080; 0 picks a free one)",
)
@click.option(
    "--allow-remote",
    is_flag=True,
    help="bind an address other machines can reach (not loopback); needs web.server_names for 0.0.0.0",
)
def serve(host: Optional[str], port: Optional[int], allow_remote: bool) -> None:
    """The review web app: the queue of ready samples, each sample's fields, field reviews and sign-off."""
    import dataclasses

    from edge.daemon.startup import EXIT_CONFIG, setup_logging
    from edge.web.bind import WILDCARDS, is_loopback

    cfg = load_cfg()
    host = host if host is not None else cfg.web.host
    port = port if port is not None else cfg.web.port
    # Checked before anything is opened: the README promises loopback unless someone chose otherwise.
    if not is_loopback(host) and not allow_remote:
        raise Failure(
            f"refusing to listen on {host}: not a loopback address, so other machines could reach the "
            "review app; give --allow-remote to mean it (better: an SSH tunnel or a TLS reverse proxy "
            "on this device)",
            EXIT_CONFIG,
        )
    if host in WILDCARDS and not cfg.web.server_names:
        raise Failure(
            f"--host {host or '(all)'} needs web.server_names: the names clients will use to reach this "
            "device (the Host header is checked against them)",
            EXIT_CONFIG,
        )
    cfg = dataclasses.replace(cfg, web=dataclasses.replace(cfg.web, host=host, port=port))
    setup_logging(cfg.daemon.log_level)  # the daemon's format: journald stamps the time itself
    log = logging.getLogger("edge.web")
    from waitress import create_server

    from edge.daemon import startup
    from edge.web import create_app

    store = started(startup.review_store, cfg)  # exists and is writable, or exit 4 with one line
    if not is_loopback(host):
        log.warning("listening on %s, reachable from other machines (--allow-remote)", host)
    app = create_app(cfg, store)
    try:
        # waitress drops X-Forwarded-* headers by default; with web.trusted_proxies the app's own check
        # (edge.web.auth.TrustedProxies, any number of proxy addresses) decides whose to believe.
        server = create_server(
            app,
            host=host,
            port=port,
            threads=4,
            ident="edge-screen",
            clear_untrusted_proxy_headers=not cfg.web.trusted_proxies,
        )
    except OSError as e:
        store.close()
        raise Failure(f"cannot listen on {host}:{port}: {e.strerror or e}") from None
    shown = f"[{server.effective_host}]" if ":" in str(server.effective_host) else server.effective_host
    log.info("review app on http://%s:%s/ (device %s)", shown, server.effective_port, cfg.daemon.device_id)
    if not _has_users(store):
        log.warning("no user accounts yet: add one with `edge-screen user add NAME --role reviewer`")
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))  # systemd stop: leave through the finally below
    # A deleted or replaced database stops the server as a SIGTERM would, then exits 4 (below).
    watch = app.extensions["edge_database_watch"]
    watch.on_fatal = lambda: os.kill(os.getpid(), signal.SIGTERM)
    watch.start()
    try:
        server.run()
    except KeyboardInterrupt:
        pass
    finally:
        watch.stop()
        server.close()
        store.close()
        log.info("review app stopped")
    if watch.fatal:
        raise Failure(watch.fatal, watch.code)


def _has_users(store) -> bool:
    from edge.store.reviews import list_users

    return bool(list_users(store))


@click.group("user")
def user() -> None:
    """Accounts of the review web app (device-local, never exported)."""


def _read_password(prompt: str) -> str:
    if sys.stdin.isatty():
        import getpass

        password = getpass.getpass(prompt)
        if getpass.getpass("again: ") != password:
            raise Failure("the two passwords differ")
        return password
    return sys.stdin.readline().rstrip("\r\n")


def _account(fn, *args):
    """``fn(store, *args)`` from :mod:`edge.store.accounts` on the configured database, its refusal as one line."""
    from edge.store.accounts import ReviewError

    store = _open_store(load_cfg())
    try:
        return fn(store, *args)
    except ReviewError as e:
        raise Failure(str(e)) from None
    finally:
        store.close()


@user.command("add")
@click.argument("name")
@click.option("--role", type=click.Choice(ROLES), default="reviewer", show_default=True)
def user_add(name: str, role: str) -> None:
    """Add an account; the password is read from stdin (one line, never echoed or printed). Names are
    unique without regard to case; a common password (or one containing the name) is refused."""
    from edge.store.accounts import add_user

    u = _account(add_user, name, _read_password(f"password for {name}: "), role)
    click.echo(f"added {u.role} {u.name}")


@user.command("passwd")
@click.argument("name")
def user_passwd(name: str) -> None:
    """Set a new password (read like `user add`); the user's open sessions end and a log-in lock is lifted."""
    from edge.store.accounts import set_password

    click.echo(_account(set_password, name, _read_password(f"new password for {name}: ")))


@user.command("disable")
@click.argument("name")
def user_disable(name: str) -> None:
    """Stop an account from logging in; its open sessions end at once. Its reviews stay."""
    from edge.store.accounts import set_disabled

    click.echo(_account(set_disabled, name, True))


@user.command("enable")
@click.argument("name")
def user_enable(name: str) -> None:
    """Let a disabled account log in again; also lifts a lock from too many failed log-ins."""
    from edge.store.accounts import set_disabled

    click.echo(_account(set_disabled, name, False))


@user.command("list")
def user_list() -> None:
    """Names, roles and creation times (never the password hashes)."""
    from edge.store.accounts import list_users

    for u in _account(list_users):
        click.echo(f"{u.name}\t{u.role}\t{u.created_at:%Y-%m-%d %H:%M} UTC" + ("\tdisabled" if u.disabled else ""))


@user.command("log")
@click.argument("name", required=False)
def user_log(name: Optional[str]) -> None:
    """The audit of account changes (added, disabled, enabled, password changed), oldest first."""
    from edge.store.accounts import events

    for e in _account(events, name):
        click.echo(
            f"{e.created_at:%Y-%m-%d %H:%M:%S} UTC\t{e.user_name}\t{e.action}\t{e.actor}"
            + (f"\t{e.detail}" if e.detail else "")
        )


COMMANDS = [serve, user]

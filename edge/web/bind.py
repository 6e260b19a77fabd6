"""Where `edge-screen serve` may listen and which host names it answers to (no Flask here: `config check`
uses it too and must stay cheap)."""

from __future__ import annotations

import ipaddress
from typing import Tuple

WILDCARDS = ("0.0.0.0", "::", "")


def is_loopback(host: str) -> bool:
    """Only this machine can connect: localhost or a loopback address (a name that is not "localhost" is
    not trusted to resolve to one)."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def warnings(web) -> Tuple[str, ...]:
    """What `config check` warns about in a WebConfig: settings that work but expose the app."""
    if is_loopback(web.host):
        return ()
    return (
        f'web.host = "{web.host}" is not a loopback address: `edge-screen serve` refuses to bind it without '
        "--allow-remote; the README's way in is an SSH tunnel or a TLS reverse proxy on this device "
        "(web.trusted_proxies)",
    )


def allowed_hosts(web) -> Tuple[str, ...]:
    """Host header values `serve` answers to: loopback names, the bound address unless it is a wildcard, and
    web.server_names (a DNS-rebinding page on another name gets a 400)."""
    names = ["localhost", "127.0.0.1", "::1", "[::1]", *web.server_names]
    if web.host not in WILDCARDS:
        names.append(web.host)
    return tuple(dict.fromkeys(names))


__all__ = ["WILDCARDS", "allowed_hosts", "is_loopback", "warnings"]

"""Log-in throttling: failed log-ins slow down, then lock, each user name and each client.

A failure is counted against the user name as typed (casefolded, known or not, so a lock does not tell
which names exist) and against the client's address. From ``slowdown_after`` failures on, the next try
must wait 1, 2, 4 ... s (at most 30); at ``lock_after`` failures of a name (``client_lock_after`` of a
client) it is locked for ``lock_minutes``. A try that comes too early is refused before the password is
checked and is not counted. Counts start again once ``lock_minutes`` pass without a failure; a successful
log-in clears its name's count (not its client's: an attacker's own account must not reset the count of
the guesses it makes at others).

Why not Flask-Limiter: it counts requests per key in the server's memory (or in Redis), but a lock here
must survive a restart of `serve` and be lifted by `edge-screen user enable`, another process. The
database is the one state they share; a log-in costs one small write beside the bcrypt check.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Optional

from sqlalchemy import delete, func, select

from edge.store.schema import login_throttle, user_events, users, utcnow

log = logging.getLogger("edge.web")
MAX_DELAY_S = 30


@dataclass(frozen=True)
class Policy:
    slowdown_after: int = 3
    lock_after: int = 10
    client_lock_after: int = 30
    lock_minutes: int = 15


@dataclass(frozen=True)
class Refusal:
    """Why a log-in is not even checked: ``retry_at`` is when the next try will be."""

    message: str
    retry_at: datetime
    locked: bool

    def retry_after_s(self, now: Optional[datetime] = None) -> int:
        return max(1, int((self.retry_at - (now or utcnow())).total_seconds() + 0.999))


def user_key(name: str) -> str:
    return "user:" + name.strip().casefold()[:100]


def client_key(address: Optional[str]) -> str:
    return "client:" + (address or "unknown")[:100]


def check(store, name: str, address: Optional[str], policy: Policy) -> Optional[Refusal]:
    """A refusal when the name or the client must wait; None when the password may be checked."""
    now = utcnow()
    keys = {
        user_key(name): ("for this user name", policy.lock_after),
        client_key(address): ("from this computer", policy.client_lock_after),
    }
    with store.engine.connect() as conn:
        rows = conn.execute(select(login_throttle).where(login_throttle.c.key.in_(list(keys)))).all()
    worst = max(
        (r for r in rows if r.retry_at is not None and r.retry_at > now), key=lambda r: r.retry_at, default=None
    )
    if worst is None:
        return None
    who, lock_after = keys[worst.key]
    locked = worst.failures >= lock_after
    if locked:
        unlock = (
            ", or until an administrator unlocks it with: edge-screen user enable NAME"
            if worst.key.startswith("user:")
            else ""
        )
        return Refusal(
            f"too many failed log-ins {who}: locked until {worst.retry_at:%H:%M} UTC{unlock}", worst.retry_at, True
        )
    wait = Refusal("", worst.retry_at, False).retry_after_s(now)
    return Refusal(f"too many failed log-ins {who}: wait {wait} s before trying again", worst.retry_at, False)


def failed(store, name: str, address: Optional[str], policy: Policy) -> None:
    """Count a failed log-in against the name and the client; logs a line when either becomes locked."""
    now = utcnow()
    window = timedelta(minutes=policy.lock_minutes)
    with store.write() as conn:
        for key, lock_after in ((user_key(name), policy.lock_after), (client_key(address), policy.client_lock_after)):
            row = conn.execute(select(login_throttle).where(login_throttle.c.key == key)).first()
            n = 1 if row is None or now - row.last_failure_at > window else row.failures + 1
            retry_at = None
            if n >= lock_after:
                retry_at = now + window
                log.warning(
                    "log-in LOCKED for %s until %s UTC after %d failed log-ins (last from %s)",
                    key,
                    f"{retry_at:%H:%M:%S}",
                    n,
                    address,
                )
                if key.startswith("user:"):
                    _audit_lock(conn, name, n, address, retry_at)
            elif n >= policy.slowdown_after:
                retry_at = now + timedelta(seconds=min(MAX_DELAY_S, 2 ** (n - policy.slowdown_after)))
                log.warning(
                    "log-in slowed down for %s: %d failed log-ins, next try in %d s",
                    key,
                    n,
                    (retry_at - now).total_seconds(),
                )
            values = dict(failures=n, last_failure_at=now, retry_at=retry_at)
            if row is None:
                conn.execute(login_throttle.insert().values(key=key, **values))
            else:
                conn.execute(login_throttle.update().where(login_throttle.c.key == key).values(**values))


def _audit_lock(conn, name: str, n: int, address: Optional[str], until: datetime) -> None:
    # Into the accounts' audit when the name is an account (a guessed name has no history to keep).
    row = conn.execute(
        select(users.c.name)
        .where(func.lower(users.c.name) == name.strip().lower())
        .order_by(users.c.name != name.strip())
        .limit(1)
    ).first()
    if row is not None:
        conn.execute(
            user_events.insert().values(
                id=str(uuid.uuid4()),
                created_at=utcnow(),
                user_name=row.name,
                action="lock",
                actor=f"web:{address}",
                detail=f"{n} failed log-ins; locked until {until:%Y-%m-%d %H:%M} UTC",
            )
        )


def succeeded(store, name: str) -> None:
    with store.write() as conn:
        conn.execute(delete(login_throttle).where(login_throttle.c.key == user_key(name)))


def clear_user(conn, name: str) -> bool:
    """Lift a user name's count and lock inside the caller's transaction; True when there was one."""
    return conn.execute(delete(login_throttle).where(login_throttle.c.key == user_key(name))).rowcount > 0


__all__ = ["Policy", "Refusal", "check", "clear_user", "client_key", "failed", "succeeded", "user_key"]

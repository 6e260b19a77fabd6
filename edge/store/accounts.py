"""The review app's accounts: add, disable, enable, change a password, check a log-in; every change audited.

Library under `edge-screen user` and `edge-screen serve`. Passwords are stored only as bcrypt hashes. A
name is unique without regard to case ("alice" and "Alice" are one person to a lab), and a log-in finds
it in any case. A new password must not be one of the 19,640 common passwords Django's validator refuses
(bundled in edge/data, see its LICENSE file) nor the user name. Every change is a row in the append-only
``user_events`` table, with who made it.
"""

from __future__ import annotations

import getpass
import gzip
import uuid
from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache
from pathlib import Path
from typing import FrozenSet, List, Optional

from sqlalchemy import delete, func, select
from sqlalchemy.exc import IntegrityError

from edge.store import throttle
from edge.store.schema import user_events, users, utcnow, web_sessions
from edge.vocabulary import ROLES

WRITERS = ("reviewer", "admin")  # roles that may review and sign off
MIN_PASSWORD = 8
MAX_PASSWORD_BYTES = 72  # bcrypt reads no further; a longer password would be silently truncated
NAME_CHARS = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-@")
COMMON_PASSWORDS = Path(__file__).resolve().parent.parent / "data" / "common-passwords.txt.gz"


class ReviewError(ValueError):
    """A refused review, sign-off or account change; ``str(err)`` is one line and nothing was changed."""


@dataclass(frozen=True)
class User:
    name: str
    role: str
    created_at: datetime
    disabled: bool = False

    @property
    def can_review(self) -> bool:
        return self.role in WRITERS and not self.disabled


@dataclass(frozen=True)
class UserEvent:
    created_at: datetime
    user_name: str
    action: str
    actor: str
    detail: Optional[str]


def os_actor() -> str:
    """Who runs the command, for the audit: the operating-system login (the CLI has no other identity)."""
    try:
        return "os:" + getpass.getuser()
    except (KeyError, OSError):  # no passwd entry (a container's arbitrary uid)
        return "os:unknown"


def _hash(password: str) -> str:
    import bcrypt  # a compiled extension: only the commands that handle passwords load it

    return bcrypt.hashpw(password.encode("utf-8"), bcrypt.gensalt()).decode("ascii")


def _check_password(password: str, hashed: str) -> bool:
    import bcrypt

    try:
        return bcrypt.checkpw(password.encode("utf-8"), hashed.encode("ascii"))
    except ValueError:  # over 72 bytes (bcrypt 5 refuses) or a malformed stored hash
        return False


@lru_cache(maxsize=1)
def common_passwords() -> FrozenSet[str]:
    with gzip.open(COMMON_PASSWORDS, "rt", encoding="utf-8") as f:
        return frozenset(line.strip() for line in f if line.strip())


def check_new_password(name: str, password: str) -> None:
    """Raise ReviewError when ``password`` may not be set for ``name``."""
    if not password:
        raise ReviewError("empty password")
    if len(password) < MIN_PASSWORD:
        raise ReviewError(f"password too short: at least {MIN_PASSWORD} characters")
    if len(password.encode("utf-8")) > MAX_PASSWORD_BYTES:
        raise ReviewError(f"password too long: at most {MAX_PASSWORD_BYTES} bytes (bcrypt ignores the rest)")
    low = password.strip().casefold()
    if low in common_passwords():
        raise ReviewError("password too common: it is on the list of common passwords, choose another")
    if len(name) >= 4 and name.casefold() in low:  # shorter names occur inside ordinary words
        raise ReviewError("password contains the user name: choose another")


def validate_name(name: str) -> str:
    if not isinstance(name, str) or not name or len(name) > 64 or not set(name) <= NAME_CHARS:
        raise ReviewError(f"invalid user name {name!r}: use 1-64 of A-Z a-z 0-9 . _ - @")
    return name


def user_from_row(row) -> User:
    return User(name=row.name, role=row.role, created_at=row.created_at, disabled=bool(row.disabled))


def find_row(conn, name: str):
    """The users row named ``name``: the exact spelling first, else the one whose name differs only in case
    (databases from before names were case-insensitive may hold both; then only the exact one matches)."""
    if not isinstance(name, str) or not name:
        return None
    row = conn.execute(select(users).where(users.c.name == name)).first()
    if row is not None:
        return row
    rows = conn.execute(select(users).where(func.lower(users.c.name) == name.lower()).limit(2)).all()
    return rows[0] if len(rows) == 1 else None


def _event(conn, user_name: str, action: str, actor: str, detail: Optional[str] = None) -> None:
    conn.execute(
        user_events.insert().values(
            id=str(uuid.uuid4()),
            created_at=utcnow(),
            user_name=user_name,
            action=action,
            actor=actor[:128],
            detail=detail,
        )
    )


def add_user(store, name: str, password: str, role: str, actor: Optional[str] = None) -> User:
    """A new account; the password is stored only as a bcrypt hash."""
    validate_name(name)
    if role not in ROLES:
        raise ReviewError(f"invalid role {role!r}: use one of {', '.join(ROLES)}")
    check_new_password(name, password)
    user = User(name=name, role=role, created_at=utcnow())
    hashed = _hash(password)  # slow on purpose (~0.25 s on a Pi 4): outside the write lock
    try:
        with store.write() as conn:  # SQLite: the write lock is taken at BEGIN, so check-then-insert holds
            clash = conn.execute(select(users.c.name).where(func.lower(users.c.name) == name.lower())).first()
            if clash is not None:
                same = "" if clash.name == name else f" (as {clash.name!r}: names do not differ by case alone)"
                raise ReviewError(f"user {name!r} already exists{same}")
            conn.execute(
                users.insert().values(
                    name=name, password_hash=hashed, role=role, created_at=user.created_at, disabled=False
                )
            )
            _event(conn, name, "add", actor or os_actor(), f"role {role}")
    except IntegrityError:  # PostgreSQL: another process added the same name between check and insert
        raise ReviewError(f"user {name!r} already exists") from None
    return user


def _existing(conn, name: str):
    row = find_row(conn, name)
    if row is None:
        raise ReviewError(f"no user {name!r}")
    return row


def set_disabled(store, name: str, disabled: bool, actor: Optional[str] = None) -> str:
    """Disable (its sessions end at once) or enable (a log-in lock is lifted too); returns one line."""
    with store.write() as conn:
        row = _existing(conn, name)
        if disabled:
            conn.execute(users.update().where(users.c.name == row.name).values(disabled=True))
            ended = conn.execute(delete(web_sessions).where(web_sessions.c.user_name == row.name)).rowcount
            _event(conn, row.name, "disable", actor or os_actor(), f"{ended} session(s) ended")
            return f"disabled {row.name} ({ended} session(s) ended)"
        unlocked = throttle.clear_user(conn, row.name)
        conn.execute(users.update().where(users.c.name == row.name).values(disabled=False))
        _event(conn, row.name, "enable", actor or os_actor(), "log-in lock lifted" if unlocked else None)
    return f"enabled {row.name}" + (" (log-in lock lifted)" if unlocked else "")


def set_password(store, name: str, password: str, actor: Optional[str] = None) -> str:
    """A new password; the user's open sessions end (a password is changed because it may be known)."""
    with store.engine.connect() as conn:
        real = _existing(conn, name).name
    check_new_password(real, password)
    hashed = _hash(password)
    with store.write() as conn:
        _existing(conn, real)
        conn.execute(users.update().where(users.c.name == real).values(password_hash=hashed))
        ended = conn.execute(delete(web_sessions).where(web_sessions.c.user_name == real)).rowcount
        unlocked = throttle.clear_user(conn, real)
        _event(
            conn,
            real,
            "passwd",
            actor or os_actor(),
            f"{ended} session(s) ended" + ("; log-in lock lifted" if unlocked else ""),
        )
    return f"password of {real} changed ({ended} session(s) ended)"


def get_user(store, name: str) -> Optional[User]:
    with store.engine.connect() as conn:
        row = find_row(conn, name)
    return user_from_row(row) if row else None


def list_users(store) -> List[User]:
    with store.engine.connect() as conn:
        return [user_from_row(r) for r in conn.execute(select(users).order_by(users.c.name))]


def events(store, name: Optional[str] = None) -> List[UserEvent]:
    q = select(user_events).order_by(user_events.c.created_at)
    if name is not None:
        q = q.where(func.lower(user_events.c.user_name) == name.lower())
    with store.engine.connect() as conn:
        return [UserEvent(r.created_at, r.user_name, r.action, r.actor, r.detail) for r in conn.execute(q)]


_dummy: List[str] = []


def _dummy_hash() -> str:
    # Checked against when the name is unknown, so a wrong name costs as long as a wrong password and the
    # login form does not tell which names exist.
    if not _dummy:
        _dummy.append(_hash(uuid.uuid4().hex))
    return _dummy[0]


def verify_user(store, name: str, password: str) -> Optional[User]:
    """The user when the name and password match an enabled account, else None (never says which was wrong)."""
    with store.engine.connect() as conn:
        row = find_row(conn, name)
    if row is None:
        _check_password(password or "", _dummy_hash())
        return None
    if not _check_password(password or "", row.password_hash) or row.disabled:
        return None
    return user_from_row(row)


__all__ = [
    "MIN_PASSWORD",
    "ReviewError",
    "User",
    "UserEvent",
    "WRITERS",
    "add_user",
    "check_new_password",
    "common_passwords",
    "events",
    "find_row",
    "get_user",
    "list_users",
    "os_actor",
    "set_disabled",
    "set_password",
    "user_from_row",
    "validate_name",
    "verify_user",
]

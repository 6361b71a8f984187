"""Owner, installer, viewer and member accounts; login sessions; first-run setup code; login
rate limit; members' invitations.

There is no default password: while no owner exists, a one-time setup code
is generated at start and logged, and whoever holds it creates the owner.
Passwords are hashed with argon2id off the event loop. A login session is a
random id in an HttpOnly cookie; only its SHA-256 is stored (table
``ui_sessions`` of :mod:`local_ui.store`), so a copy of the journal cannot be
replayed as a login.

The owner invites a member with a one-time code (:meth:`Accounts.create_invite`):
the station keeps only its SHA-256, the code expires, and it works once — the
member who holds it chooses a password and gets their account and cards in one
transaction (:meth:`Accounts.accept_invite`).
"""

from __future__ import annotations

import asyncio
import hashlib
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import structlog
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from local_ui.store import InviteRow, InviteTaken, UiStore

log = structlog.get_logger(__name__)

ROLES = ("owner", "installer", "viewer", "member")
INVITE_TTL_S = 72 * 3600.0

InviteProblem = Literal["unknown", "used", "expired", "taken"]


class InviteRefused(Exception):
    """An invitation code that cannot be used: unknown (mistyped, forged), used, expired,
    or its name was given to another account meanwhile."""

    def __init__(self, problem: InviteProblem, username: str = "") -> None:
        super().__init__(problem)
        self.problem: InviteProblem = problem
        self.username = username


@dataclass(frozen=True, slots=True)
class User:
    username: str
    role: str


def _digest(sid: str) -> str:
    return hashlib.sha256(sid.encode()).hexdigest()


class LoginLimiter:
    """Failed attempts per key (a client address, a user name on one client): free tries,
    then a doubling delay. A key that stays quiet for ``forget_s`` after its last delay
    starts afresh.

    Never key on a user name alone: a stranger's wrong guesses would lock the
    real user out of every other host.
    """

    def __init__(
        self,
        *,
        free_attempts: int = 5,
        max_delay_s: float = 900.0,
        forget_s: float = 3600.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.free_attempts = free_attempts
        self.max_delay_s = max_delay_s
        self.forget_s = forget_s
        self.clock = clock
        self._fails: dict[str, tuple[int, float]] = {}  # key -> (failures, blocked until)

    def retry_after(self, *keys: str) -> float:
        now = self.clock()
        return max((self._fails.get(k, (0, 0.0))[1] - now for k in keys), default=0.0)

    def failed(self, *keys: str) -> None:
        now = self.clock()
        if len(self._fails) > 10_000:
            self._fails = {k: v for k, v in self._fails.items() if v[1] > now - self.forget_s}
        for k in keys:
            n, until = self._fails.get(k, (0, 0.0))
            n = 1 if now - until > self.forget_s else n + 1
            delay = 0.0
            if n >= self.free_attempts:
                delay = min(self.max_delay_s, 2.0 ** (n - self.free_attempts + 1))
            self._fails[k] = (n, now + delay)

    def succeeded(self, *keys: str) -> None:
        for k in keys:
            self._fails.pop(k, None)


class Accounts:
    def __init__(
        self,
        store: UiStore,
        *,
        session_ttl_s: float = 12 * 3600,
        hasher: PasswordHasher | None = None,
    ) -> None:
        self.store = store
        self.session_ttl_s = session_ttl_s
        # argon2id at OWASP's lower bound: ~0.1 s on a Pi 4, and it runs in a thread.
        self.hasher = hasher or PasswordHasher(time_cost=2, memory_cost=19456, parallelism=1)
        self.setup_code: str | None = None
        self._dummy_hash: str | None = None
        self._cache: dict[str, tuple[User, float]] = {}
        self._ready = False
        self._init_lock = asyncio.Lock()
        self.clock: Callable[[], float] = time.time  # wall time of invitations

    async def init(self, *, announce: str = "") -> None:
        async with self._init_lock:
            if self._ready:
                return
            await self.store.open()
            await self.store.end_expired_logins(time.time())
            if not await self.has_owner():
                self.setup_code = "-".join(
                    "".join(secrets.choice("23456789ABCDEFGHJKLMNPQRSTUVWXYZ") for _ in range(4))
                    for _ in range(3)
                )
                log.warning(
                    "ui.first_run_setup_code",
                    setup_code=self.setup_code,
                    action=f"open {announce or 'the station UI'}/setup and enter this code "
                    "to create the owner account",
                )
            self._ready = True

    async def has_owner(self) -> bool:
        return await self.store.has_owner()

    async def _hash(self, password: str) -> str:
        return await asyncio.to_thread(self.hasher.hash, password)

    async def create_user(self, username: str, password: str, role: str) -> User:
        await self.store.add_user(username, await self._hash(password), role, time.time())
        return User(username, role)

    async def get_user(self, username: str) -> User | None:
        row = await self.store.user(username)
        return User(row.username, row.role) if row else None

    async def list_users(self) -> list[dict[str, object]]:
        return await self.store.users()

    async def delete_user(self, username: str) -> bool:
        gone = await self.store.delete_user(username)
        self._cache = {k: v for k, v in self._cache.items() if v[0].username != username}
        return gone

    async def member_tokens(self, username: str) -> list[str]:
        """The cards and codes of a member: they see and stop only sessions started with them."""
        return await self.store.member_tokens(username)

    async def token_owner(self, token: str) -> str | None:
        return await self.store.token_owner(token)

    async def token_members(self) -> dict[str, str]:
        """Every member's card or code -> the member (whose sessions those are)."""
        return await self.store.token_members()

    async def set_member_tokens(self, username: str, tokens: list[str]) -> None:
        await self.store.set_member_tokens(username, tokens, time.time())

    async def set_password(self, username: str, password: str) -> None:
        await self.store.set_password_hash(username, await self._hash(password), time.time())

    async def verify(self, username: str, password: str) -> User | None:
        row = await self.store.user(username)
        if row is None:
            # Spend the same time as a real check, so timing does not reveal user names.
            if self._dummy_hash is None:
                self._dummy_hash = await self._hash(secrets.token_hex(8))
            await asyncio.to_thread(self._check, self._dummy_hash, password)
            return None
        ok = await asyncio.to_thread(self._check, row.password_hash, password)
        return User(row.username, row.role) if ok else None

    def _check(self, hashed: str, password: str) -> bool:
        try:
            return bool(self.hasher.verify(hashed, password))
        except (VerificationError, InvalidHashError):
            return False

    # ------------------------------------------------------------------ invitations

    async def create_invite(
        self, username: str, tokens: list[str], by: str, ttl_s: float = INVITE_TTL_S
    ) -> tuple[str, float]:
        """A one-time code inviting ``username`` as a member (with ``tokens``), and when it
        expires. Only its hash is stored; an open invitation for the name is withdrawn."""
        code = secrets.token_urlsafe(18)  # 144 random bits, fits a small QR code
        now = self.clock()
        await self.store.add_invite(_digest(code), username, tokens, by, now, now + ttl_s)
        return code, now + ttl_s

    async def open_invites(self) -> list[dict[str, Any]]:
        return await self.store.open_invites(self.clock())

    async def withdraw_invites(self, username: str) -> int:
        return await self.store.withdraw_invites(username)

    async def invite(self, code: str) -> InviteRow:
        """The open invitation of ``code``, or :class:`InviteRefused` saying why not."""
        row = await self.store.invite(_digest(code))
        if row is None:
            raise InviteRefused("unknown")
        if row.used_at is not None:
            raise InviteRefused("used", row.username)
        if row.expires_at <= self.clock():
            raise InviteRefused("expired", row.username)
        return row

    async def accept_invite(self, code: str, password: str) -> tuple[User, InviteRow]:
        """Use the code once: the member account with ``password`` (argon2id) and its cards."""
        await self.invite(code)  # says why a code cannot be used
        hashed = await self._hash(password)
        try:
            row = await self.store.redeem_invite(_digest(code), hashed, self.clock())
        except InviteTaken as err:
            raise InviteRefused("taken", str(err)) from None
        if row is None:  # used or expired while the password was hashed
            await self.invite(code)
            raise InviteRefused("used")
        return User(row.username, "member"), row

    # ------------------------------------------------------------------ login sessions

    async def new_session(self, user: User) -> str:
        sid = secrets.token_urlsafe(32)
        now = time.time()
        await self.store.add_login(_digest(sid), user.username, now, now + self.session_ttl_s)
        self._cache[_digest(sid)] = (user, now + self.session_ttl_s)
        return sid

    async def session_user(self, sid: str) -> User | None:
        key = _digest(sid)
        now = time.time()
        hit = self._cache.get(key)
        if hit is not None:
            if hit[1] > now:
                return hit[0]
            self._cache.pop(key, None)
            return None
        login = await self.store.login(key, now)
        if login is None:
            return None
        user = User(login.username, login.role)
        if len(self._cache) > 1000:
            self._cache.clear()
        self._cache[key] = (user, login.expires_at)
        return user

    async def end_other_sessions(self, username: str, keep_sid: str | None) -> int:
        """End every login of ``username`` but ``keep_sid``'s; returns how many ended."""
        keep = _digest(keep_sid) if keep_sid else ""
        n = await self.store.end_logins_of(username, keep=keep)
        self._cache = {
            k: v for k, v in self._cache.items() if v[0].username != username or k == keep
        }
        return n

    async def end_session(self, sid: str) -> None:
        key = _digest(sid)
        self._cache.pop(key, None)
        await self.store.end_login(key)

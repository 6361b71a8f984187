"""What every route needs: the station, the accounts, the settings registry; auth dependencies.

Cookies: ``es_session`` (HttpOnly, SameSite=Strict) holds the login;
``es_csrf`` (readable by the page's JS, SameSite=Strict) is the double-submit
token that every state-changing request must echo in ``X-CSRF-Token``.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Annotated, Any

from fastapi import Depends, Request, WebSocket

from controller.core.station import Station
from local_ui.accounts import Accounts, LoginLimiter, User
from local_ui.errors import ApiError
from local_ui.installer import InstallerTests
from local_ui.messages import not_allowed
from local_ui.settings import SettingsRegistry

SESSION_COOKIE = "es_session"
CSRF_COOKIE = "es_csrf"
CSRF_HEADER = "x-csrf-token"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})

READ = frozenset({"owner", "installer", "viewer"})
OPERATE = frozenset({"owner", "installer"})
OWNER = frozenset({"owner"})
INSTALLER = frozenset({"installer"})
MEMBER = frozenset({"member"})


RECEIPT_KEYS_KEPT = 4096
"""Receipt keys remembered (a few times the sessions any station shows at once)."""


@dataclass
class UiContext:
    station: Station
    accounts: Accounts
    settings: SettingsRegistry
    limiter: LoginLimiter = field(default_factory=LoginLimiter)
    installer: InstallerTests = field(default_factory=InstallerTests)
    kiosk_secret: bytes = field(default_factory=lambda: secrets.token_bytes(32))
    ready: bool = False
    on_ready: list[Callable[[], Awaitable[None]]] = field(default_factory=list)
    # session id -> (the secret it was made with, its receipt key): the kiosk's state and
    # stream carry one per charging bay, asked for again every second.
    _receipt_keys: dict[str, tuple[bytes, str]] = field(default_factory=dict, repr=False)

    async def ensure_ready(self, announce: str = "") -> None:
        if self.ready:
            return
        await self.accounts.init(announce=announce)
        secret = await self.station.journal.kv_get("ui.kiosk_secret")
        if isinstance(secret, str) and len(secret) == 64:
            self.kiosk_secret = bytes.fromhex(secret)
        else:
            await self.station.journal.kv_set("ui.kiosk_secret", self.kiosk_secret.hex())
        await self.settings.restore(self.station)
        self.ready = True

    def session_key(self, session_id: str) -> str:
        """The proof a kiosk holds that it started (or stopped) ``session_id``."""
        return hmac.new(self.kiosk_secret, session_id.encode(), hashlib.sha256).hexdigest()[:32]

    def check_session_key(self, session_id: str, key: str) -> bool:
        return hmac.compare_digest(self.session_key(session_id).encode(), key.encode())

    def receipt_key(self, session_id: str) -> str:
        """The proof that opens ``session_id``'s receipt and nothing else (it cannot stop
        or change the session). The public kiosk stream carries it with every session it
        shows, so a kiosk shows the receipt of a session it did not start, however it ends:
        the receipt says no more than that stream showed live (no token)."""
        known = self._receipt_keys.get(session_id)
        if known is not None and known[0] is self.kiosk_secret:
            return known[1]
        msg = b"receipt\0" + session_id.encode()
        key = hmac.new(self.kiosk_secret, msg, hashlib.sha256).hexdigest()[:32]
        if len(self._receipt_keys) >= RECEIPT_KEYS_KEPT:
            self._receipt_keys.clear()  # sessions long gone: start again from those shown now
        self._receipt_keys[session_id] = (self.kiosk_secret, key)
        return key

    def check_receipt_key(self, session_id: str, key: str) -> bool:
        """The session's key (the kiosk that started or stopped it) or its receipt key."""
        k = key.encode()
        return hmac.compare_digest(
            self.receipt_key(session_id).encode(), k
        ) or self.check_session_key(session_id, key)

    def kiosk_bay(self, view: dict[str, Any]) -> dict[str, Any]:
        """A public bay view with its session's receipt key (see :meth:`receipt_key`)."""
        sess = view.get("session")
        if isinstance(sess, dict) and isinstance(sess.get("id"), str):
            sess["receipt_key"] = self.receipt_key(sess["id"])
        return view


def get_ctx(request: Request) -> UiContext:
    ctx: UiContext = request.app.state.ui
    return ctx


async def ready_ctx(request: Request) -> UiContext:
    ctx = get_ctx(request)
    await ctx.ensure_ready()
    return ctx


def client_ip(request: Request | WebSocket) -> str:
    return request.client.host if request.client else "unknown"


Ctx = Annotated[UiContext, Depends(ready_ctx)]


async def optional_user(request: Request, ctx: Ctx) -> User | None:
    sid = request.cookies.get(SESSION_COOKIE)
    if not sid or len(sid) > 200:
        return None
    return await ctx.accounts.session_user(sid)


MaybeUser = Annotated[User | None, Depends(optional_user)]


async def current_user(user: MaybeUser) -> User:
    if user is None:
        raise ApiError(401, "login_required", "Please log in.")
    return user


AnyUser = Annotated[User, Depends(current_user)]


def require(roles: frozenset[str]) -> Callable[..., Awaitable[User]]:
    async def dep(user: AnyUser) -> User:
        if user.role not in roles:
            raise ApiError(403, "forbidden", not_allowed(user.role))
        return user

    return dep


Reader = Annotated[User, Depends(require(READ))]
Operator = Annotated[User, Depends(require(OPERATE))]
OwnerOnly = Annotated[User, Depends(require(OWNER))]
InstallerOnly = Annotated[User, Depends(require(INSTALLER))]
MemberOnly = Annotated[User, Depends(require(MEMBER))]


async def check_csrf(request: Request) -> None:
    """Double-submit check for state-changing requests (cookie must equal header)."""
    if request.method in SAFE_METHODS:
        return
    cookie = request.cookies.get(CSRF_COOKIE, "")
    header = request.headers.get(CSRF_HEADER, "")
    if not cookie or not header or not hmac.compare_digest(cookie.encode(), header.encode()):
        raise ApiError(
            403,
            "csrf",
            "Missing or wrong CSRF token: send the es_csrf cookie's value in X-CSRF-Token.",
        )


def audit_actor(user: User) -> str:
    return f"user:{user.username}"


def jsonable(value: Any) -> Any:
    """Snapshots are plain data already; this only guards against stray non-JSON values."""
    # Plain values first, by exact type (the kiosk's state runs this over every bay's figures
    # once a second); subclasses (enums, ...) take the general path below.
    kind = type(value)
    if kind is str or kind is float or kind is int or kind is bool or value is None:
        return value
    if kind is dict:
        return {k if type(k) is str else str(k): jsonable(v) for k, v in value.items()}
    if kind is list:
        return [jsonable(v) for v in value]
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    if value is None or isinstance(value, bool | int | float | str):
        return value
    return str(value)

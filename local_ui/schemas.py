"""Request and response models of the JSON API (they make the OpenAPI schema)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

Mode = Literal["standard", "eco", "boost", "solar"]
Role = Literal["owner", "installer", "viewer", "member"]
Username = str


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid")


class TokenRequest(_In):
    token: str = Field(min_length=1, max_length=64, pattern=r"^[\x21-\x7e]+$")
    mode: Mode = "standard"
    boost_confirmed: bool = False
    quota_wh: int | None = Field(default=None, ge=1, le=500_000)
    quota_s: float | None = Field(default=None, gt=0, le=7 * 86400)


class KioskStopRequest(_In):
    session_id: str = Field(min_length=1, max_length=64)
    key: str = Field(min_length=1, max_length=64)


class KioskModeRequest(KioskStopRequest):
    mode: Literal["standard", "eco", "boost", "solar"]
    boost_confirmed: bool = False


class HoldRequest(_In):
    bay_id: str = Field(min_length=1, max_length=32)
    token: str = Field(min_length=1, max_length=64, pattern=r"^[\x21-\x7e]+$")
    duration_s: float | None = Field(default=None, ge=60, le=7 * 86400)


class BookingRequest(_In):
    bay_id: str = Field(min_length=1, max_length=32)
    token: str = Field(min_length=1, max_length=64, pattern=r"^[\x21-\x7e]+$")
    start_at: float = Field(
        gt=0, lt=4_133_980_800, description="Unix seconds when the hold begins (1970–2100)"
    )
    hold_s: float | None = Field(default=None, ge=60, le=7 * 86400)


class AvailabilityRequest(_In):
    available: bool


class InstallerTestRequest(_In):
    action: Literal["lock", "unlock", "relay_on", "relay_off", "ramp"]
    current_a: float | None = Field(
        default=None, ge=0, le=80, description="relay_on: the current; ramp: where it ends"
    )
    hold_s: float | None = Field(
        default=None, ge=0.1, le=60, description="relay test: how long (5 s); ramp: per step (3 s)"
    )
    step_a: float | None = Field(default=None, ge=0.5, le=32, description="ramp step (2 A)")


class LoginRequest(_In):
    username: str = Field(min_length=1, max_length=64)
    password: str = Field(min_length=1, max_length=256)


class SetupRequest(_In):
    code: str = Field(min_length=1, max_length=32)
    username: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9._@-]+$")
    password: str = Field(min_length=10, max_length=256)


class NewUserRequest(_In):
    username: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9._@-]+$")
    password: str = Field(min_length=10, max_length=256)
    role: Role


def _member_tokens(v: list[str]) -> list[str]:
    out = []
    for tok in v:
        tok = tok.strip()
        if not 1 <= len(tok) <= 64 or not all(0x21 <= ord(c) <= 0x7E for c in tok):
            raise ValueError("token: a card or code is 1 to 64 letters, digits or signs")
        if tok not in out:
            out.append(tok)
    return out


class MemberTokens(_In):
    """The cards and codes a member charges with (replaces the list)."""

    tokens: list[str] = Field(max_length=20)

    @field_validator("tokens")
    @classmethod
    def _tokens(cls, v: list[str]) -> list[str]:
        return _member_tokens(v)


class InviteRequest(_In):
    """Invite a member: their user name, the cards and codes they get, how long it is valid."""

    username: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9._@-]+$")
    tokens: list[str] = Field(default_factory=list, max_length=20)
    valid_hours: int = Field(default=72, ge=1, le=30 * 24)

    @field_validator("tokens")
    @classmethod
    def _tokens(cls, v: list[str]) -> list[str]:
        return _member_tokens(v)


class InviteCheck(_In):
    code: str = Field(min_length=1, max_length=64)
    lang: str | None = Field(default=None, max_length=16)


class InviteAccept(InviteCheck):
    password: str = Field(min_length=1, max_length=256)


class MemberStart(_In):
    """Start charging at a bay with one of the member's cards (by its place in their list)."""

    card: int = Field(default=0, ge=0, lt=20)
    mode: Literal["standard", "eco", "solar"] = "standard"


class PasswordChange(_In):
    current_password: str = Field(min_length=1, max_length=256)
    new_password: str = Field(min_length=10, max_length=256)


class OutcomeOut(BaseModel):
    ok: bool
    code: str
    message: str
    session_id: str | None = None
    data: dict[str, Any] = Field(default_factory=dict)


class KioskOutcome(OutcomeOut):
    key: str | None = Field(default=None, description="proof for stop/receipt of this session")


class UserOut(BaseModel):
    username: str
    role: str


class AuthStatus(BaseModel):
    setup_required: bool
    user: UserOut | None = None


class Page(BaseModel):
    total: int
    limit: int
    offset: int
    items: list[dict[str, Any]]

"""Authorization of a presented token: a chain of steps, first answer wins.

The chain is built by the composition root: signed QR tokens, the OCPP
upstream (CSMS, local list, cache), the owner's local list, and free vend
(simulation, or a site that wants it). With no step answering the token is
refused: when in doubt, no new session.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from controller.ports import AuthResult, AuthStatus


@dataclass(frozen=True, slots=True)
class AuthRequest:
    token: str
    bay_id: str
    connector: int
    source: str  # "kiosk", "camera", "api", "csms", ...


AuthStep = Callable[[AuthRequest], Awaitable[AuthResult | None]]


class Authorizer:
    def __init__(self, steps: list[AuthStep] | None = None) -> None:
        self.steps: list[AuthStep] = list(steps or [])

    def add(self, step: AuthStep, *, first: bool = False) -> None:
        if first:
            self.steps.insert(0, step)
        else:
            self.steps.append(step)

    async def authorize(self, req: AuthRequest) -> AuthResult:
        for step in self.steps:
            result = await step(req)
            if result is not None:
                return result
        return AuthResult(AuthStatus.INVALID, "none", "This code is not known here.")


def local_list_step(tokens: frozenset[str]) -> AuthStep:
    async def step(req: AuthRequest) -> AuthResult | None:
        if req.token in tokens:
            return AuthResult(AuthStatus.ACCEPTED, "local")
        return None

    return step


def free_vend_step() -> AuthStep:
    async def step(req: AuthRequest) -> AuthResult | None:
        return AuthResult(AuthStatus.ACCEPTED, "free_vend")

    return step

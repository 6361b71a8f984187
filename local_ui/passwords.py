"""Password strength: zxcvbn's estimate of how guessable a password is, told as sentences.

A password must reach score 3 of 4 ("safely unguessable" against an online
attack, and costly offline with argon2id); the user's name and the station's
id and name count as known words. zxcvbn's own warning and suggestions are
already sentences. zxcvbn refuses inputs above 72 characters (its cost grows
quickly with length), so only the first 72 are weighed: a password that long
is judged by them, and the rest can only make it stronger.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable

from zxcvbn import zxcvbn

from local_ui.context import UiContext
from local_ui.errors import ApiError

MIN_SCORE = 3
WEIGHED_CHARS = 72  # zxcvbn raises ValueError above this


def weakness(password: str, known: Iterable[str] = ()) -> str | None:
    """None for a strong enough password; otherwise what to tell the person choosing it."""
    result = zxcvbn(password[:WEIGHED_CHARS], user_inputs=[k for k in known if k])
    if result["score"] >= MIN_SCORE:
        return None
    feedback = result["feedback"]
    parts = ["This password is too easy to guess."]
    if feedback["warning"]:
        parts.append(feedback["warning"])
    parts.extend(feedback["suggestions"][:2])
    if len(parts) == 1:
        parts.append("Add another word or two. Uncommon words are better.")
    return " ".join(p if p.endswith(".") else p + "." for p in parts)


async def require_strong(ctx: UiContext, password: str, username: str) -> None:
    """Refuse a guessable password (422 ``weak_password``) with zxcvbn's reasons."""
    cfg = ctx.station.cfg.station
    problem = await asyncio.to_thread(weakness, password, (username, cfg.id, cfg.name))
    if problem:
        raise ApiError(422, "weak_password", problem)

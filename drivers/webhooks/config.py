"""The ``[webhooks]`` section: where notifications go::

    [[webhooks.targets]]
    url = "https://example.org/hook"
    events = ["session_completed", "fault"]   # default: every kind (notify.KINDS)
    secret_file = "webhook.secret"            # optional: X-Edge-Signature: sha256=<hmac>
    timeout_s = 10
    retry_initial_s = 2                       # capped exponential backoff with jitter
    retry_max_s = 300
    max_age_s = 86400                         # a notification older than this is dropped

Absent: no webhooks (today's behaviour).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from drivers.webhooks.notify import KINDS


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Target(_Strict):
    url: str = Field(pattern=r"^https?://[^\s]+$")
    events: list[str] = Field(default_factory=lambda: list(KINDS))
    secret_file: Path | None = None
    timeout_s: float = Field(default=10.0, gt=0, le=60)
    retry_initial_s: float = Field(default=2.0, gt=0, le=600)
    retry_max_s: float = Field(default=300.0, gt=0, le=86400)
    max_age_s: float = Field(default=86400.0, gt=0)

    @field_validator("events")
    @classmethod
    def _known(cls, v: list[str]) -> list[str]:
        unknown = sorted(set(v) - set(KINDS))
        if unknown:
            raise ValueError(f"unknown event(s) {unknown}; known: {', '.join(KINDS)}")
        return v

    def secret(self) -> bytes | None:
        if self.secret_file is None:
            return None
        return self.secret_file.read_bytes().strip()


class WebhooksSection(_Strict):
    targets: list[Target] = Field(default_factory=list)


def check_webhooks(section: dict[str, Any] | None) -> list[str]:
    if section is None:
        return []
    try:
        cfg = WebhooksSection.model_validate(section)
    except ValidationError as err:
        out = []
        for e in err.errors():
            path = ".".join(f"[{p}]" if isinstance(p, int) else str(p) for p in e["loc"])
            path = path.replace(".[", "[")
            out.append(
                f"webhooks{'.' + path if path else ''}: {e['msg'].removeprefix('Value error, ')}"
            )
        return out
    problems = []
    for i, t in enumerate(cfg.targets):
        if t.secret_file is not None and not t.secret_file.is_file():
            problems.append(
                f"webhooks.targets[{i}].secret_file: {t.secret_file} is not a readable file"
            )
    return problems

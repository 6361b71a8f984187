"""What an energy manager sends, read the same way over MQTT and HTTP.

A limit is JSON ``{"a": 16}`` (A per phase) or ``{"w": 11000}`` (W), with an
optional ``"lease_s"`` (shorter than the configured lease, never longer); a
bare number is amps. The grid operator's signal is ``{"active": true}`` or a
bare ``1``/``0``/``true``/``false``. Anything else is a :class:`PayloadError`
with a sentence.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass


class PayloadError(ValueError):
    pass


@dataclass(frozen=True, slots=True)
class LimitRequest:
    amps: float | None
    watts: float | None
    lease_s: float | None


def _number(value: object, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise PayloadError(f"{what} must be a number")
    return float(value)


def parse_limit(raw: bytes | str) -> LimitRequest:
    try:
        data = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise PayloadError('the limit is not JSON: send {"a": 16} or {"w": 11000}') from exc
    if isinstance(data, int | float) and not isinstance(data, bool):
        return LimitRequest(_number(data, "the limit"), None, None)
    if not isinstance(data, dict):
        raise PayloadError('send {"a": 16} or {"w": 11000}')
    unknown = set(data) - {"a", "w", "lease_s"}
    if unknown:
        raise PayloadError(f"unknown field(s): {', '.join(sorted(unknown))}")
    amps = _number(data["a"], "a") if "a" in data else None
    watts = _number(data["w"], "w") if "w" in data else None
    if (amps is None) == (watts is None):
        raise PayloadError('give the limit in A ("a") or in W ("w"), one of them')
    lease = _number(data["lease_s"], "lease_s") if "lease_s" in data else None
    if lease is not None and lease <= 0:
        raise PayloadError("lease_s must be above 0")
    return LimitRequest(amps, watts, lease)


def parse_switch(raw: bytes | str) -> bool:
    text = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else raw
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise PayloadError('send {"active": true} or {"active": false}') from exc
    if isinstance(data, dict) and set(data) == {"active"}:
        data = data["active"]
    if data in (True, 1) and not isinstance(data, float):
        return True
    if data in (False, 0) and not isinstance(data, float):
        return False
    raise PayloadError('send {"active": true} or {"active": false}')

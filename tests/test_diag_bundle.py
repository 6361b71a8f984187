"""The diagnostics bundle's pure parts: what counts as a secret, and the log ring's window."""

from __future__ import annotations

import logging

from controller.ops.diagnostics import REDACTED, redact
from controller.ops.diagnostics_logs import LogRing


def test_secrets_are_replaced_by_name_and_inside_urls() -> None:
    cfg = {
        "ocpp": {
            "url": "wss://cp:hunter2@csms.example/ocpp",
            "password": "hunter2",
            "keys": {"AuthorizationKey": "00112233", "HeartbeatInterval": "300"},
        },
        "mqtt": [{"host": "broker", "username": "st", "pass_word": "x"}],
        "http": {"session_secret": "s", "pin": "1234", "spinner": "on", "tls_key_file": "/k"},
        "token_ttl_s": 0,
        "empty_password": "",
    }
    out = redact(cfg)
    assert out["ocpp"]["url"] == f"wss://cp:{REDACTED}@csms.example/ocpp"
    assert out["ocpp"]["password"] == REDACTED
    assert out["ocpp"]["keys"] == {"AuthorizationKey": REDACTED, "HeartbeatInterval": "300"}
    assert out["mqtt"] == [{"host": "broker", "username": "st", "pass_word": REDACTED}]
    assert out["http"] == {
        "session_secret": REDACTED,
        "pin": REDACTED,
        "spinner": "on",  # a word that merely contains "pin"
        "tls_key_file": REDACTED,
    }
    assert out["empty_password"] == ""  # nothing to hide, and an empty one is worth seeing
    assert "hunter2" not in repr(out)


def test_the_log_ring_keeps_a_bounded_window() -> None:
    ring = LogRing(size=3)
    ring.setFormatter(logging.Formatter("%(message)s"))
    for i in range(5):
        rec = logging.LogRecord("x", logging.INFO, __file__, 1, f"line {i}", None, None)
        rec.created = 100.0 + i
        ring.emit(rec)
    assert ring.lines() == ["line 2", "line 3", "line 4"]
    assert ring.lines(since=103.0, until=103.5) == ["line 3"]

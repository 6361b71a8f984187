"""The recent log lines the station keeps in memory for a diagnostics bundle.

A bounded ring (:data:`RING`, the last :data:`MAX_LINES` lines, each cut to
:data:`MAX_LINE` characters) fed by a logging handler that ``setup_logging``
installs beside the console one; with systemd the journal keeps the rest
(the bundle adds a ``journalctl`` excerpt when it can read one).
"""

from __future__ import annotations

import collections
import logging
import threading
import time

MAX_LINES = 5000
MAX_LINE = 2000


class LogRing(logging.Handler):
    """The last ``size`` formatted records with their time, safe to read from any thread."""

    def __init__(self, size: int = MAX_LINES) -> None:
        super().__init__()
        self._lines: collections.deque[tuple[float, str]] = collections.deque(maxlen=size)
        self._guard = threading.Lock()

    def emit(self, record: logging.LogRecord) -> None:
        try:
            line = self.format(record)[:MAX_LINE]
        except Exception:  # a log line that cannot be formatted must not break logging
            line = f"{record.levelname} {record.name}: (unformattable)"
        with self._guard:
            self._lines.append((record.created, line))

    def lines(self, since: float | None = None, until: float | None = None) -> list[str]:
        """The lines logged in [since, until] (wall clock seconds), oldest first."""
        lo = since if since is not None else float("-inf")
        hi = until if until is not None else time.time()
        with self._guard:
            return [line for at, line in self._lines if lo <= at <= hi]


RING = LogRing()

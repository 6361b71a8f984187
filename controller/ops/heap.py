"""The heap after start-up: frozen, so the cycle collector stops re-reading it.

A station that has loaded its configuration, catalogues, web app and drivers holds
a quarter of a million long-lived objects. CPython's full (generation 2) collection
walks all of them: measured at ~170 ms on the development machine (a Pi 4 is slower
still), the event loop held all that time: a kiosk update, a setpoint, a meter read
wait behind it. Objects that exist when the station is ready live as long as the
process, so :func:`settle` collects once and moves them to the permanent
generation (:func:`gc.freeze`); later full collections walk only what was made since.
"""

from __future__ import annotations

import gc

import structlog

__all__ = ["settle"]

log = structlog.get_logger(__name__)


def settle() -> int:
    """Collect once, then freeze what survives; returns how many objects are frozen."""
    gc.collect()
    gc.freeze()
    frozen = gc.get_freeze_count()
    log.info("heap.settled", frozen_objects=frozen)
    return frozen

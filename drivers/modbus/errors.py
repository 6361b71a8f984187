"""The one place where pymodbus failures become :class:`DriverError`.

``CancelledError`` is never caught here: cancel must stay cancel.
"""

from __future__ import annotations

import contextlib
import struct
from collections.abc import Iterator

from pymodbus.exceptions import ConnectionException, ModbusException, ModbusIOException

from controller.ports import (
    ConnectionLost,
    DriverError,
    DriverTimeout,
    PermanentError,
    TransientError,
)

# Modbus exception codes the device will answer the same way next time.
_PERMANENT_CODES = {1: "illegal function", 2: "illegal data address", 3: "illegal data value"}
_TRANSIENT_CODES = {
    4: "device failure",
    5: "acknowledge (busy with a long command)",
    6: "device busy",
    7: "negative acknowledge",
    8: "memory parity error",
    10: "gateway path unavailable",
    11: "gateway target did not respond",
}


class ModbusRejected(PermanentError):
    """The device answered with exception code 1, 2 or 3: the request itself is wrong for it."""

    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.code = code


class ModbusDeviceBusy(TransientError):
    """The device (or a gateway) answered with a transient exception code (4-11)."""

    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.code = code


def exception_response_error(code: int, what: str) -> DriverError:
    """The error for a Modbus exception response with ``code`` to the request ``what``."""
    if code in _PERMANENT_CODES:
        return ModbusRejected(f"{what}: exception {code} ({_PERMANENT_CODES[code]})", code)
    reason = _TRANSIENT_CODES.get(code, "unknown exception code")
    return ModbusDeviceBusy(f"{what}: exception {code} ({reason})", code)


@contextlib.contextmanager
def mapped_errors(what: str) -> Iterator[None]:
    """Translate library and OS errors raised inside the block; ``what`` names the request."""
    try:
        yield
    except DriverError:
        raise
    except TimeoutError as exc:  # asyncio.TimeoutError is TimeoutError on 3.11
        raise DriverTimeout(f"{what}: no answer in time") from exc
    except ConnectionException as exc:
        raise ConnectionLost(f"{what}: {exc}") from exc
    except ModbusIOException as exc:
        # pymodbus reports "no response" and mismatched answers with this one class.
        raise TransientError(f"{what}: {exc}") from exc
    except ModbusException as exc:
        raise TransientError(f"{what}: {exc}") from exc
    except OSError as exc:
        raise ConnectionLost(f"{what}: {exc}") from exc
    except (ValueError, struct.error) as exc:
        # Undecodable frames surface as ValueError / struct.error from the framer.
        raise TransientError(f"{what}: garbled answer: {exc}") from exc

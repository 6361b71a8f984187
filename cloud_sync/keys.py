"""OCPP 1.6 configuration keys (chapter 9): definitions, validation, and their persisted values.

Values live in the journal's kv table under ``ocpp.keys`` (only the ones
changed from their defaults), so a ChangeConfiguration survives a restart.
Read-only keys describe what this charge point supports and cannot be changed.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass

from controller.core.journal import Journal

KV_KEY = "ocpp.keys"

MEASURANDS = frozenset(
    {
        "Energy.Active.Import.Register",
        "Power.Active.Import",
        "Current.Import",
        "Current.Offered",
        "Voltage",
        "SoC",
        "Temperature",
    }
)
FEATURE_PROFILES = (
    "Core,FirmwareManagement,LocalAuthListManagement,Reservation,SmartCharging,RemoteTrigger"
)


def _int(v: str) -> bool:
    try:
        return int(v) >= 0
    except ValueError:
        return False


def _positive(v: str) -> bool:
    try:
        return int(v) > 0
    except ValueError:
        return False


def _bool(v: str) -> bool:
    return v.lower() in ("true", "false")


def _measurands(v: str) -> bool:
    items = [m.strip() for m in v.split(",") if m.strip()]
    return len(items) <= 10 and all(m in MEASURANDS for m in items)


def _any(v: str) -> bool:
    return len(v) <= 500


@dataclass(frozen=True, slots=True)
class KeyDef:
    name: str
    default: str
    readonly: bool = False
    valid: Callable[[str], bool] = _any


_DEFS = [
    KeyDef("AllowOfflineTxForUnknownId", "false", valid=_bool),
    KeyDef("AuthorizationCacheEnabled", "true", valid=_bool),
    KeyDef("AuthorizeRemoteTxRequests", "true", valid=_bool),
    KeyDef("ClockAlignedDataInterval", "0", valid=_int),
    KeyDef("ConnectionTimeOut", "120", valid=_positive),
    KeyDef("ConnectorPhaseRotation", "NotApplicable"),
    KeyDef("GetConfigurationMaxKeys", "100", readonly=True),
    KeyDef("HeartbeatInterval", "300", valid=_int),
    KeyDef("LocalAuthorizeOffline", "true", valid=_bool),
    KeyDef("LocalPreAuthorize", "false", valid=_bool),
    KeyDef("MaxEnergyOnInvalidId", "0", valid=_int),
    KeyDef("MeterValuesAlignedData", "Energy.Active.Import.Register", valid=_measurands),
    KeyDef("MeterValuesAlignedDataMaxLength", "10", readonly=True),
    KeyDef(
        "MeterValuesSampledData",
        "Energy.Active.Import.Register,Power.Active.Import,Current.Import,SoC",
        valid=_measurands,
    ),
    KeyDef("MeterValuesSampledDataMaxLength", "10", readonly=True),
    KeyDef("MeterValueSampleInterval", "60", valid=_int),
    KeyDef("MinimumStatusDuration", "0", valid=_int),
    KeyDef("NumberOfConnectors", "0", readonly=True),
    KeyDef("ResetRetries", "1", valid=_int),
    KeyDef("StopTransactionOnEVSideDisconnect", "true", readonly=True),
    KeyDef("StopTransactionOnInvalidId", "true", valid=_bool),
    KeyDef("StopTxnAlignedData", "", valid=_measurands),
    KeyDef("StopTxnAlignedDataMaxLength", "10", readonly=True),
    KeyDef("StopTxnSampledData", "Energy.Active.Import.Register", valid=_measurands),
    KeyDef("StopTxnSampledDataMaxLength", "10", readonly=True),
    KeyDef("SupportedFeatureProfiles", FEATURE_PROFILES, readonly=True),
    KeyDef("TransactionMessageAttempts", "3", valid=_int),
    KeyDef("TransactionMessageRetryInterval", "60", valid=_int),
    KeyDef("UnlockConnectorOnEVSideDisconnect", "true", valid=_bool),
    KeyDef("WebSocketPingInterval", "30", valid=_int),
    KeyDef("LocalAuthListEnabled", "true", valid=_bool),
    KeyDef("LocalAuthListMaxLength", "10000", readonly=True),
    KeyDef("SendLocalListMaxLength", "1000", readonly=True),
    KeyDef("ReserveConnectorZeroSupported", "false", readonly=True),
    KeyDef("ChargeProfileMaxStackLevel", "10", readonly=True),
    KeyDef("ChargingScheduleAllowedChargingRateUnit", "Current,Power", readonly=True),
    KeyDef("ChargingScheduleMaxPeriods", "48", readonly=True),
    KeyDef("ConnectorSwitch3to1PhaseSupported", "false", readonly=True),
    KeyDef("MaxChargingProfilesInstalled", "32", readonly=True),
]
DEFS: dict[str, KeyDef] = {d.name: d for d in _DEFS}


class ConfigKeys:
    """The current key values; :meth:`wait_changed` wakes on every accepted change."""

    def __init__(
        self,
        journal: Journal,
        *,
        fixed: dict[str, str] | None = None,
        defaults: dict[str, str] | None = None,
    ) -> None:
        self._journal = journal
        self._fixed = dict(fixed or {})  # read-only facts of this station (NumberOfConnectors …)
        self._defaults = dict(defaults or {})  # this station's own defaults (ConnectionTimeOut)
        self._values: dict[str, str] = {}
        self._changed = asyncio.Event()
        # Called with (name, value) after every accepted change and once per key after load.
        self.listeners: list[Callable[[str, str], None]] = []

    async def load(self, initial: dict[str, str] | None = None) -> None:
        """Defaults, then the config's ``keys``, then what the CSMS changed (persisted)."""
        values = {d.name: self._defaults.get(d.name, d.default) for d in _DEFS}
        for name, value in (initial or {}).items():
            if name not in DEFS:
                raise ValueError(f"ocpp.keys: unknown configuration key {name!r}")
            if not DEFS[name].valid(value):
                raise ValueError(f"ocpp.keys.{name}: invalid value {value!r}")
            values[name] = value
        stored = await self._journal.kv_get(KV_KEY, {})
        for name, value in stored.items():
            if name in DEFS and not DEFS[name].readonly and DEFS[name].valid(value):
                values[name] = value
        values.update(self._fixed)
        self._values = values
        for name, value in values.items():
            self._tell(name, value)

    def _tell(self, name: str, value: str) -> None:
        for listener in self.listeners:
            listener(name, value)

    def get(self, name: str) -> str:
        return self._values[name]

    def get_int(self, name: str) -> int:
        return int(self._values[name])

    def get_bool(self, name: str) -> bool:
        return self._values[name].lower() == "true"

    def get_list(self, name: str) -> list[str]:
        return [m.strip() for m in self._values[name].split(",") if m.strip()]

    def items(self) -> list[tuple[str, str, bool]]:
        return [(d.name, self._values[d.name], d.readonly) for d in _DEFS]

    async def change(self, name: str, value: str) -> str:
        """ChangeConfiguration: Accepted / Rejected / NotSupported."""
        d = DEFS.get(name)
        if d is None:
            return "NotSupported"
        if d.readonly or not d.valid(value):
            return "Rejected"
        if d.valid is _bool:
            value = value.lower()
        await self._set(name, value)
        return "Accepted"

    async def set_internal(self, name: str, value: str) -> None:
        """A change the charge point makes itself (HeartbeatInterval from BootNotification)."""
        if self._values.get(name) != value:
            await self._set(name, value)

    async def _set(self, name: str, value: str) -> None:
        stored = dict(await self._journal.kv_get(KV_KEY, {}))
        stored[name] = value
        await self._journal.kv_set(KV_KEY, stored)
        self._values[name] = value
        self._tell(name, value)
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()

    async def wait_changed(self, timeout_s: float) -> bool:
        """Wait until a key changes (True) or ``timeout_s`` passes (False)."""
        try:
            async with asyncio.timeout(timeout_s):
                await self._changed.wait()
        except TimeoutError:
            return False
        return True

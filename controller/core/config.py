"""Station configuration: the schema of ``station.toml`` and its loading and checking.

A bad config is refused with every problem named by its path in the file
(``bays[2].max_current_a: ...``); the station never starts on a guess.
Sections owned by other parts (site tree, meters, OCPP, MQTT, camera, GPIO)
are defined next to the code that uses them and embedded here.
"""

from __future__ import annotations

import ipaddress
import os
import tomllib
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from controller.core.accounting import Tariff
from controller.core.tokens import TokenKeys, parse_hmac_key
from controller.load.model import RuleConfig, SiteConfig


class ConfigError(Exception):
    """A config that cannot be used; ``problems`` lists each as ``path: message``."""

    def __init__(self, source: str, problems: list[str]) -> None:
        self.source = source
        self.problems = problems
        super().__init__(f"{source}: " + "; ".join(problems))


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class StationSection(_Strict):
    id: str = Field(
        default="edge-station-1", min_length=1, max_length=48, pattern=r"^[A-Za-z0-9._-]+$"
    )
    name: str = Field(
        default="edge-station", min_length=1, max_length=60, description="shown on the kiosk"
    )
    data_dir: Path = Path("data")
    contact: str = Field(
        default="", max_length=80, description="the operator's contact, shown to drivers"
    )
    opening_hours: str = Field(default="", max_length=80, description="shown on the kiosk if set")
    language: Literal["en", "de", "fr", "nl"] = Field(
        default="en", description="the kiosk's language until a driver picks another"
    )


class HttpSection(_Strict):
    host: str = "127.0.0.1"
    port: int = Field(default=8080, ge=0, le=65535)
    public_url: str = Field(
        default="",
        max_length=200,
        description="the address phones reach the UI at, for every QR code (empty: as requested)",
    )

    @field_validator("public_url")
    @classmethod
    def _public_url(cls, v: str) -> str:
        if not v:
            return v
        u = urlsplit(v)
        if u.scheme not in ("http", "https") or not u.hostname or u.query or u.fragment:
            raise ValueError(
                f"{v!r} is not a web address a phone can open: "
                'write it like "http://192.168.1.20:8080" or "https://charge.example.org"'
            )
        return v.rstrip("/")


class TimersSection(_Strict):
    hold_s: float = Field(default=900.0, gt=0, description="how long a hold (arrival grace) lasts")
    connection_timeout_s: float = Field(default=120.0, gt=0)
    exit_grace_s: float = Field(default=120.0, gt=0)
    suspend_after_s: float = Field(default=30.0, gt=0)
    node_offline_s: float = Field(default=3.0, gt=0)
    lease_s: float = Field(default=5.0, gt=0, le=60)
    tick_s: float = Field(default=1.0, gt=0, le=10)
    max_interruption_s: float = Field(
        default=900.0,
        gt=0,
        le=86400,
        description="a session suspended this long by an outage (controller or node) is closed",
    )


class JournalSection(_Strict):
    """``[journal]``: how the station watches the disk its journal lives on, and how often
    it writes the meter figures (``checkpoint_s``; see :mod:`controller.core.samples`)."""

    check_s: float = Field(default=10.0, gt=0, le=600, description="free-space check interval")
    retry_s: float = Field(
        default=2.0, gt=0, le=60, description="while writes fail: retry (probe write) interval"
    )
    low_space_mb: float = Field(default=200.0, ge=0, description="warn below this much free space")
    samples_min_free_mb: float = Field(
        default=50.0, ge=0, description="below this, meter samples are no longer written"
    )
    emergency_reserve_mb: float = Field(
        default=2.0,
        ge=0,
        le=1024,
        description="space kept aside for stops on a full disk (0: none)",
    )
    checkpoint_s: float | None = Field(
        default=None,
        ge=5,
        le=600,
        description=(
            "how often the per-minute meter figures and the open sessions' energy are "
            "written; unset: whole minutes chosen by the station's size, from every minute "
            "at 40 sources (bays, grid and PV meters) and more to every 10 minutes at 4 or "
            "fewer (kind to flash: each write costs at least a page, however few rows it "
            "carries). A crash loses the figures since the last write, and a session's "
            "progress since then only if its node lost its register too (the restart "
            "continues a session from its node's register)"
        ),
    )

    @model_validator(mode="after")
    def _order(self) -> JournalSection:
        if self.samples_min_free_mb > self.low_space_mb:
            raise ValueError(
                f"samples_min_free_mb ({self.samples_min_free_mb}) is above "
                f"low_space_mb ({self.low_space_mb})"
            )
        return self


class BusConfig(_Strict):
    """One link to bay nodes: a serial (RS-485/UART) port, or the simulator's pseudo-terminal.

    ``transport = "ocpp"``: the station is the central system of OCPP 1.6J wallboxes
    that connect to ``listen``; ``ocpp`` holds that server's options, validated by
    ``drivers.ocpp_wallbox`` (security profile, passwords, TLS, timing, charger models).
    """

    id: str = Field(min_length=1)
    transport: Literal["serial", "mqtt", "gpio", "ocpp"] = "serial"
    port: str = ""
    baud: int = Field(default=115200, gt=0)
    host_timeout_s: float = Field(default=10.0, gt=0)
    poll_period_s: float = Field(
        default=0.2,
        ge=0.02,
        le=10.0,
        description=(
            "serial: how often the host polls each node; a node's events (door, fault, "
            "emergency stop) reach the host within one poll period"
        ),
    )
    telemetry_period_s: float = Field(
        default=1.0,
        ge=0.1,
        le=60.0,
        description="how often each node reports its measurements (sent to the node)",
    )
    listen: str = Field(default="", description='"host:port" of the wallboxes\' OCPP server')
    ocpp: dict[str, Any] | None = None


class BayConfig(_Strict):
    id: str = Field(min_length=1, max_length=32, pattern=r"^[A-Za-z0-9_-]+$")
    connector: int = Field(ge=1, le=999, description="OCPP connector id")
    kind: Literal["evse", "locker"] = "evse"
    bus: str = Field(min_length=1)
    node_id: str = ""
    address: int = Field(default=1, ge=1, le=247)
    node_serial: str | None = Field(
        default=None,
        min_length=1,
        max_length=32,
        description="the node's identity (serial/MAC) from its HELLO; another one faults the bay",
    )
    min_current_a: float = Field(default=6.0, ge=0)
    max_current_a: float = Field(default=16.0, gt=0, le=80)
    safe_current_a: float = Field(default=0.0, ge=0)
    phases: Literal[1, 3] = 3
    phase: Literal["L1", "L2", "L3"] | None = Field(
        default=None, description="the phase a single-phase bay is wired to (required for those)"
    )
    circuit: str = "main"
    charger_id: str | None = Field(
        default=None,
        min_length=1,
        max_length=48,
        pattern=r"^[A-Za-z0-9._-]+$",
        description="the OCPP charge point id of the wallbox serving this bay (ocpp buses)",
    )
    charger_connector: int = Field(
        default=1, ge=1, le=16, description="the bay's connector number on that wallbox"
    )
    name: str = Field(
        default="", max_length=24, description="the bay's name on the kiosk (empty: its id)"
    )

    @model_validator(mode="after")
    def _currents(self) -> BayConfig:
        if self.max_current_a < self.min_current_a:
            raise ValueError(
                f"max_current_a ({self.max_current_a}) is below min_current_a ({self.min_current_a})"
            )
        if self.safe_current_a > self.max_current_a:
            raise ValueError("safe_current_a is above max_current_a")
        if 0 < self.safe_current_a < self.min_current_a:
            raise ValueError(
                f"safe_current_a ({self.safe_current_a}) must be 0 or at least min_current_a"
            )
        if self.phases == 1 and self.phase is None:
            # Guessing would put the bay on another phase in both the proof and the allocation.
            raise ValueError(
                f"phase: bay {self.id!r} is single-phase: say which phase it is wired to "
                '(phase = "L1", "L2" or "L3")'
            )
        if not self.node_id:
            self.node_id = self.id
        return self


class AuthSection(_Strict):
    free_vend: bool = Field(
        default=False, description="accept every well-formed token (simulation, or a free site)"
    )
    local_tokens: list[str] = Field(
        default_factory=list, description="tokens the owner accepts without the CSMS"
    )


class TokensSection(_Strict):
    """Signed QR tokens (see controller/core/TOKENS.md): the keys this station trusts."""

    hmac_key_files: list[Path] = Field(default_factory=list)
    ed25519_public_key_files: list[Path] = Field(default_factory=list)
    leeway_s: float = Field(default=60.0, ge=0, le=3600, description="tolerated clock skew")


class StationConfig(_Strict):
    station: StationSection = StationSection()
    http: HttpSection = HttpSection()
    timers: TimersSection = TimersSection()
    tariff: Tariff = Tariff()
    auth: AuthSection = AuthSection()
    tokens: TokensSection = TokensSection()
    journal: JournalSection = JournalSection()
    buses: list[BusConfig] = Field(default_factory=list)
    bays: list[BayConfig] = Field(default_factory=list)
    site: SiteConfig | None = Field(default=None, description="the site tree for load management")
    rules: list[RuleConfig] = Field(default_factory=list)
    # Sections of optional parts, validated by the part itself (see controller.registry.Extension):
    ocpp: dict[str, Any] | None = None
    meters: list[dict[str, Any]] = Field(default_factory=list)
    mqtt: dict[str, Any] | None = None
    camera: dict[str, Any] | None = None
    gpio: dict[str, Any] | None = None
    external: dict[str, Any] | None = None
    mqtt_state: dict[str, Any] | None = None
    homeassistant: dict[str, Any] | None = None
    webhooks: dict[str, Any] | None = None
    site_lease: dict[str, Any] | None = None

    @model_validator(mode="after")
    def _references(self) -> StationConfig:
        bus_ids = [b.id for b in self.buses]
        _unique("buses", bus_ids)
        _unique("bays", [b.id for b in self.bays])
        _unique("bays connector", [str(b.connector) for b in self.bays])
        for i, bay in enumerate(self.bays):
            if bay.bus not in bus_ids:
                raise ValueError(f"bays[{i}].bus: unknown bus {bay.bus!r} (known: {bus_ids})")
        for bus in self.buses:
            on_bus = [b for b in self.bays if b.bus == bus.id]
            if bus.transport == "ocpp":
                # Wallboxes are named by their charge point id and connector, not an address.
                for b in on_bus:
                    if b.charger_id is None:
                        i = self.bays.index(b)
                        raise ValueError(
                            f"bays[{i}].charger_id: bay {b.id!r} is on the OCPP bus "
                            f"{bus.id!r}: say which wallbox serves it (charger_id)"
                        )
                _unique(
                    f"wallbox connectors on bus {bus.id}",
                    [f"{b.charger_id}#{b.charger_connector}" for b in on_bus],
                )
                continue
            _unique(f"addresses on bus {bus.id}", [str(b.address) for b in on_bus])
            if bus.transport == "serial":
                _check_polling(self.buses.index(bus), bus, self.timers)
        # Over MQTT the topic names the node: one node id on two MQTT buses is one topic.
        mqtt_buses = {b.id for b in self.buses if b.transport == "mqtt"}
        seen: dict[str, str] = {}
        for i, bay in enumerate(self.bays):
            if bay.bus not in mqtt_buses:
                continue
            other = seen.setdefault(bay.node_id, bay.bus)
            if other != bay.bus:
                raise ValueError(
                    f"bays[{i}].node_id: node {bay.node_id!r} is on MQTT bus {other!r} already; "
                    "MQTT topics name the node, so each node id may be used on one MQTT bus only"
                )
        return self

    def data_path(self, base: Path | None = None) -> Path:
        d = self.station.data_dir
        if not d.is_absolute() and base is not None:
            d = base / d
        return d


POLLS_PER_TIMEOUT = 3  # a node's timers must outlast this many poll periods (a missed poll)
LONGEST_BUS_HOLD_S = 0.75  # a command's ack timeouts and retries on a serial bus (HubTiming)


def _check_polling(i: int, bus: BusConfig, timers: TimersSection) -> None:
    """A serial bus's poll period against the timers that must outlast it."""
    p = bus.poll_period_s
    where = f"buses[{i}].poll_period_s"
    if bus.telemetry_period_s < p:
        raise ValueError(
            f"{where}: bus {bus.id!r} polls every {p:g} s, but its nodes are to report "
            f"telemetry every {bus.telemetry_period_s:g} s; a node on a serial bus speaks "
            "only when polled, so poll at least as often as telemetry_period_s"
        )
    for name, limit in (
        ("host_timeout_s of the bus", bus.host_timeout_s),
        ("timers.lease_s", timers.lease_s),
    ):
        if p * POLLS_PER_TIMEOUT > limit:
            raise ValueError(
                f"{where}: bus {bus.id!r} polls every {p:g} s, too seldom for the "
                f"{name} of {limit:g} s, which must span {POLLS_PER_TIMEOUT} polls so that "
                f"one missed poll does not let it lapse; poll at least every "
                f"{limit / POLLS_PER_TIMEOUT:.3g} s"
            )
    if timers.node_offline_s <= p + LONGEST_BUS_HOLD_S:
        raise ValueError(
            f"{where}: bus {bus.id!r} polls every {p:g} s, so timers.node_offline_s "
            f"({timers.node_offline_s:g} s) would declare a healthy node offline between "
            f"two polls; it must exceed {p + LONGEST_BUS_HOLD_S:g} s"
        )


def _unique(what: str, values: list[str]) -> None:
    seen: set[str] = set()
    for v in values:
        if v in seen:
            raise ValueError(f"{what}: duplicate {v!r}")
        seen.add(v)


def _format_errors(err: ValidationError) -> list[str]:
    problems = []
    for e in err.errors():
        path = ""
        for part in e["loc"]:
            path += f"[{part}]" if isinstance(part, int) else (f".{part}" if path else str(part))
        msg = e["msg"].removeprefix("Value error, ")
        problems.append(f"{path or '(top)'}: {msg}")
    return problems


def parse_config(data: dict[str, Any], source: str = "<config>") -> StationConfig:
    try:
        return StationConfig.model_validate(data)
    except ValidationError as err:
        raise ConfigError(source, _format_errors(err)) from None


def load_config(path: Path) -> StationConfig:
    try:
        raw = path.read_bytes()
    except OSError as err:
        raise ConfigError(str(path), [f"cannot read: {err.strerror or err}"]) from None
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as err:
        raise ConfigError(str(path), [f"not UTF-8 text: {err}"]) from None
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(str(path), [f"TOML syntax: {err}"]) from None
    if not data:
        raise ConfigError(
            str(path),
            [
                "(top): the file is empty; a station needs at least one [[buses]] and one "
                "[[bays]] section (see systemd/station.example.toml)"
            ],
        )
    cfg = parse_config(data, str(path))
    if not cfg.station.data_dir.is_absolute():
        cfg.station.data_dir = (path.parent / cfg.station.data_dir).resolve()
    t = cfg.tokens
    t.hmac_key_files = [(path.parent / f).resolve() for f in t.hmac_key_files]
    t.ed25519_public_key_files = [(path.parent / f).resolve() for f in t.ed25519_public_key_files]
    return cfg


def station_problems(cfg: StationConfig) -> list[str]:
    """What keeps a schema-valid config from running a station: no bays, an unusable data_dir.

    Checks only; nothing is created (a missing data_dir is fine when it can be made).
    """
    problems: list[str] = []
    if not cfg.bays:
        problems.append("bays: no bay is configured; add at least one [[bays]] section")
    d = cfg.station.data_dir
    if d.exists():
        if not d.is_dir():
            problems.append(f"station.data_dir: {d} is a file, not a folder")
        elif not os.access(d, os.W_OK | os.X_OK):
            problems.append(f"station.data_dir: {d} is not writable by this user")
    else:
        parent = d.parent
        while not parent.exists() and parent != parent.parent:
            parent = parent.parent
        if not parent.is_dir() or not os.access(parent, os.W_OK | os.X_OK):
            problems.append(
                f"station.data_dir: {d} does not exist and cannot be created "
                f"({parent} is not a writable folder)"
            )
    return problems


def load_token_keys(cfg: StationConfig) -> TokenKeys | None:
    """The token keys named by ``[tokens]``, or None when the station accepts no signed tokens."""
    t = cfg.tokens
    if not t.hmac_key_files and not t.ed25519_public_key_files:
        return None
    problems: list[str] = []
    hmacs: list[bytes] = []
    eds: list[bytes] = []
    for i, f in enumerate(t.hmac_key_files):
        try:
            hmacs.append(parse_hmac_key(f.read_bytes()))
        except (OSError, ValueError) as err:
            problems.append(f"tokens.hmac_key_files[{i}]: {f}: {err}")
    for i, f in enumerate(t.ed25519_public_key_files):
        try:
            eds.append(f.read_bytes())
        except OSError as err:
            problems.append(f"tokens.ed25519_public_key_files[{i}]: {f}: {err}")
    if not problems:
        try:
            return TokenKeys.build(
                cfg.station.id, ed25519_public=eds, hmac_keys=hmacs, leeway_s=t.leeway_s
            )
        except ValueError as err:
            problems.append(f"tokens: {err}")
    raise ConfigError("tokens", problems)


def _loopback(host: str) -> bool:
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def config_warnings(cfg: StationConfig) -> list[str]:
    """Risky but allowed settings of the core sections (check-config prints them)."""
    out: list[str] = []
    for i, bus in enumerate(cfg.buses):
        if bus.transport != "serial" and "poll_period_s" in bus.model_fields_set:
            out.append(
                f"buses[{i}].poll_period_s: bus {bus.id!r} uses transport {bus.transport!r}, "
                "whose nodes are not polled: the setting applies to serial buses only"
            )
    host = urlsplit(cfg.http.public_url).hostname if cfg.http.public_url else None
    if not _loopback(cfg.http.host):
        if host is None:
            out.append(
                "http.public_url: not set, so the QR codes on the kiosk hold the address the "
                "kiosk's browser uses, which a phone may not reach; set it to the station's "
                "address on the network"
            )
        elif _loopback(host):
            out.append(
                f"http.public_url: {cfg.http.public_url} is this machine's own loopback "
                "address: phones that scan the kiosk's QR codes cannot reach it; use the "
                "station's address on the network"
            )
    return out

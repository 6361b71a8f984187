"""The ``[mqtt]`` section of ``station.toml``: how the controller reaches its broker.

Validated here (the controller keeps the section as a raw dict). Nodes have
their own broker accounts; this section holds only the controller's. Topics::

    <prefix>/<station_id>/node/<node_id>/up      node -> host, one encoded frame per message
    <prefix>/<station_id>/node/<node_id>/down    host -> node, one encoded frame per message
    <prefix>/<station_id>/node/<node_id>/status  retained "online" / "offline" (the node's last will)
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, model_validator

from controller.ports import PermanentError

STATUS_ONLINE = b"online"
STATUS_OFFLINE = b"offline"
_TOPIC_PART = r"^[A-Za-z0-9._-]+$"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class MqttTls(_Strict):
    """TLS to the broker. ``ca_file`` None: the system's trust store."""

    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None
    insecure: bool = Field(default=False, description="skip the host name check (never on a LAN)")


class MqttConfig(_Strict):
    """The controller's side of the MQTT transport. Times in seconds."""

    host: str = Field(default="localhost", min_length=1)
    port: int = Field(default=1883, ge=1, le=65535)
    username: str = Field(default="controller", min_length=1)
    password: SecretStr | None = None
    password_file: Path | None = None
    tls: MqttTls | None = None
    topic_prefix: str = Field(default="edge", pattern=_TOPIC_PART)
    client_id: str = Field(default="", description="default: <prefix>-<station id>-controller")
    keepalive_s: int = Field(default=15, ge=2, le=3600)
    ack_timeout_s: float = Field(default=1.0, gt=0, le=30)
    retries: int = Field(default=3, ge=0, le=10)
    offline_after_s: float = Field(
        default=5.0, gt=0, description="no frame from a node this long -> offline"
    )
    heartbeat_s: float = Field(
        default=2.0,
        gt=0,
        description="the host heartbeats a node it has sent nothing for this long",
    )
    backoff_initial_s: float = Field(default=0.5, gt=0)
    backoff_max_s: float = Field(default=30.0, gt=0)

    @model_validator(mode="after")
    def _secret(self) -> MqttConfig:
        if (self.password is None) == (self.password_file is None):
            raise ValueError("set exactly one of password and password_file")
        if self.backoff_max_s < self.backoff_initial_s:
            raise ValueError("backoff_max_s is below backoff_initial_s")
        if self.offline_after_s <= self.heartbeat_s:
            raise ValueError("offline_after_s must exceed heartbeat_s")
        return self

    def secret(self) -> str:
        """The controller's password (read from ``password_file`` on each call)."""
        if self.password is not None:
            return self.password.get_secret_value()
        assert self.password_file is not None
        try:
            return self.password_file.read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise PermanentError(f"mqtt.password_file: cannot read: {exc}") from exc


def parse_mqtt(section: dict[str, Any] | None) -> MqttConfig:
    """Validate a raw ``[mqtt]`` section; raises ``PermanentError`` naming each problem."""
    problems = check_mqtt(section)
    if problems:
        raise PermanentError("; ".join(problems))
    return MqttConfig.model_validate(section or {})


def check_mqtt(section: dict[str, Any] | None, *, need_section: bool = True) -> list[str]:
    """Problems of the ``[mqtt]`` section as ``mqtt.path: message`` lines."""
    if section is None:
        return ["mqtt: section missing (a bus uses transport 'mqtt')"] if need_section else []
    try:
        cfg = MqttConfig.model_validate(section)
    except ValidationError as err:
        out = []
        for e in err.errors():
            path = ".".join(str(p) for p in e["loc"])
            out.append(
                f"mqtt{'.' + path if path else ''}: {e['msg'].removeprefix('Value error, ')}"
            )
        return out
    if cfg.password_file is not None and not cfg.password_file.is_file():
        return [f"mqtt.password_file: {cfg.password_file} is not a readable file"]
    return []


@dataclass(frozen=True, slots=True)
class Topics:
    """Topic names for one station."""

    prefix: str
    station_id: str

    def base(self, node_id: str) -> str:
        return f"{self.prefix}/{self.station_id}/node/{node_id}"

    def up(self, node_id: str) -> str:
        return self.base(node_id) + "/up"

    def down(self, node_id: str) -> str:
        return self.base(node_id) + "/down"

    def status(self, node_id: str) -> str:
        return self.base(node_id) + "/status"

    def all_up(self) -> str:
        return f"{self.prefix}/{self.station_id}/node/+/up"

    def all_status(self) -> str:
        return f"{self.prefix}/{self.station_id}/node/+/status"

    def parse(self, topic: str) -> tuple[str, str] | None:
        """``(node_id, leaf)`` of one of this station's node topics, else None."""
        parts = topic.split("/")
        if (
            len(parts) != 5
            or parts[0] != self.prefix
            or parts[1] != self.station_id
            or parts[2] != "node"
        ):
            return None
        return parts[3], parts[4]

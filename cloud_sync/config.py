"""The ``[ocpp]`` section of ``station.toml``: where the central system is and how to reach it.

Security profiles (OCPP 1.6 security whitepaper): 0 = no authentication
(development only), 1 = HTTP Basic auth over ``ws://``, 2 = Basic auth over
TLS (``wss://``) with the server certificate checked against ``ca_bundle``
(or the system store when unset). The Basic-auth user is the charge point id.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from pydantic import BaseModel, ConfigDict, Field, SecretStr, model_validator

from controller.core.tokens import load_ed25519_public


def load_firmware_key(text: str | None) -> Ed25519PublicKey | None:
    """``firmware_key``: base64 of the raw key, PEM text, or a PEM file's path."""
    if not text:
        return None
    if not text.lstrip().startswith("-----BEGIN") and text.strip().endswith(".pem"):
        text = Path(text.strip()).read_text()
    return load_ed25519_public(text)


class OcppConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    url: str = Field(description="CSMS endpoint without the charge point id, e.g. wss://csms/ocpp")
    charge_point_id: str = Field(min_length=1, max_length=48, pattern=r"^[A-Za-z0-9._:-]+$")
    security_profile: Literal[0, 1, 2] = 0
    password: SecretStr | None = Field(default=None, description="Basic-auth password")
    ca_bundle: Path | None = Field(default=None, description="PEM file of trusted CAs (profile 2)")
    vendor: str = Field(default="edge-station", min_length=1, max_length=20)
    model: str = Field(default="edge-station", min_length=1, max_length=20)
    firmware_version: str | None = Field(default=None, max_length=50)
    serial_number: str | None = Field(default=None, max_length=25)
    backoff_min_s: float = Field(default=1.0, gt=0)
    backoff_max_s: float = Field(default=300.0, gt=0)
    response_timeout_s: float = Field(default=30.0, gt=0)
    open_timeout_s: float = Field(default=10.0, gt=0)
    boot_retry_s: float = Field(
        default=60.0, gt=0, description="wait before the next BootNotification when interval is 0"
    )
    boot_every_connect: bool = Field(
        default=True, description="send BootNotification on every new connection, not only once"
    )
    data_transfer_vendor: str = Field(default="edge-station", max_length=255)
    firmware_key: str | None = Field(
        default=None,
        description="Ed25519 public key that signs node firmware (UpdateFirmware): base64 of"
        " the raw 32 bytes, PEM text, or the path of a .pem file",
    )
    firmware_hash_only: bool = Field(
        default=False,
        description="accept node firmware checked by its SHA-256 alone, unsigned (development)",
    )
    keys: dict[str, str] = Field(
        default_factory=dict,
        description="initial values of OCPP configuration keys (ChangeConfiguration overrides)",
    )

    @model_validator(mode="after")
    def _profile(self) -> OcppConfig:
        scheme = self.url.split("://", 1)[0].lower()
        if scheme not in ("ws", "wss"):
            raise ValueError(f"url: scheme must be ws or wss, not {scheme!r}")
        if self.security_profile >= 1 and self.password is None:
            raise ValueError(f"security_profile {self.security_profile} needs a password")
        if self.security_profile == 2 and scheme != "wss":
            raise ValueError("security_profile 2 needs a wss:// url")
        if self.firmware_key:
            try:
                load_firmware_key(self.firmware_key)
            except (OSError, ValueError) as err:
                raise ValueError(f"firmware_key: not an Ed25519 public key ({err})") from None
        if self.backoff_max_s < self.backoff_min_s:
            raise ValueError("backoff_max_s is below backoff_min_s")
        return self

    def endpoint(self) -> str:
        return self.url.rstrip("/") + "/" + self.charge_point_id

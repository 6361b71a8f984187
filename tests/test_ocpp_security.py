"""Security profiles 1 (Basic auth) and 2 (TLS + Basic auth, CA bundle from config); backoff."""

from __future__ import annotations

import datetime as dt
import ipaddress
import ssl
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from pydantic import ValidationError

from cloud_sync.config import OcppConfig
from cloud_sync.upstream import backoff_delay
from simulators.csms import CsmsSim
from tests.test_ocpp_support import CP, rig

pytestmark = pytest.mark.timeout(60)


def _self_signed(tmp: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=1))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = tmp / "csms.pem", tmp / "csms.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


async def test_profile_1_basic_auth(tmp_path: Path) -> None:
    sim = CsmsSim(passwords={CP: "s3cret-password-16"})
    cfg = {"security_profile": 1, "password": "wrong-password"}
    async with rig(tmp_path, bays=1, sim=sim, cfg=cfg) as r:
        await r.upstream(lambda: "401" in r.up.last_error)
        assert sim.rejected_auth >= 1 and not r.up.online
    sim2 = CsmsSim(passwords={CP: "s3cret-password-16"})
    cfg = {"security_profile": 1, "password": "s3cret-password-16"}
    async with rig(tmp_path / "ok", bays=1, sim=sim2, cfg=cfg) as r:
        await r.online()


async def test_profile_2_tls_with_configured_ca(tmp_path: Path) -> None:
    cert, key = _self_signed(tmp_path)
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.load_cert_chain(cert, key)
    sim = CsmsSim(passwords={CP: "s3cret-password-16"}, ssl_context=server_ctx)
    cfg = {"security_profile": 2, "password": "s3cret-password-16", "ca_bundle": str(cert)}
    async with rig(tmp_path / "a", bays=1, sim=sim, cfg=cfg) as r:
        assert r.up.cfg.url.startswith("wss://")
        await r.online()
    # Without the CA the server is not trusted: no connection.
    sim = CsmsSim(passwords={CP: "s3cret-password-16"}, ssl_context=server_ctx)
    cfg = {"security_profile": 2, "password": "s3cret-password-16"}
    async with rig(tmp_path / "b", bays=1, sim=sim, cfg=cfg) as r:
        await r.upstream(lambda: "CERTIFICATE_VERIFY_FAILED" in r.up.last_error)
        assert sim.connects == 0


def test_config_rules() -> None:
    with pytest.raises(ValidationError):
        OcppConfig(url="ws://x/ocpp", charge_point_id="CP1", security_profile=1)
    with pytest.raises(ValidationError):
        OcppConfig.model_validate(
            {"url": "ws://x/ocpp", "charge_point_id": "CP1", "security_profile": 2, "password": "p"}
        )
    with pytest.raises(ValidationError):
        OcppConfig(url="http://x/ocpp", charge_point_id="CP1")
    cfg = OcppConfig.model_validate(
        {"url": "wss://x/ocpp/", "charge_point_id": "CP1", "security_profile": 2, "password": "p"}
    )
    assert cfg.endpoint() == "wss://x/ocpp/CP1"


def test_backoff_is_capped_exponential_with_jitter() -> None:
    lo = [backoff_delay(n, 1.0, 60.0, lambda: 0.0) for n in range(10)]
    hi = [backoff_delay(n, 1.0, 60.0, lambda: 1.0) for n in range(10)]
    assert hi[:7] == [1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 60.0] and hi[9] == 60.0
    assert lo[:3] == [0.5, 1.0, 2.0] and lo[9] == 30.0
    assert backoff_delay(10_000, 1.0, 60.0) <= 60.0

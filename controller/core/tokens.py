"""Signed QR tokens for bookings and access, verified offline; plain idTags pass through.

Owns the token format (``controller/core/TOKENS.md`` is the issuer's reference),
minting, and :func:`verify`, which classifies *any* scanned text:

- ``ES1.<base64url(JSON payload)>.<base64url(signature)>``: a signed token.
  The signature (Ed25519 with the operator's key, or HMAC-SHA256 with a
  per-station secret) covers the ASCII bytes ``ES1.<payload part>``, exactly as
  scanned, so no JSON canonicalisation is needed.
- a conservative OCPP idTag (1..20 of ``A-Z a-z 0-9 . _ - * #``): handed on
  as :attr:`Outcome.PLAIN_ID_TAG` for the local list / cache / CSMS to decide;
- anything else (a URL, a Wi-Fi QR, binary, empty): :attr:`Outcome.UNRECOGNIZED`.

Pure: no clock, no file, no network. Time comes in as ``now_wall`` (Unix
seconds), keys in a :class:`TokenKeys`, replay memory through the
:class:`NonceStore` port. The nonce is consumed last, only for a token that
passed every other check, so a token shown at the wrong bay stays usable.
"""

from __future__ import annotations

import base64
import binascii
import enum
import hashlib
import hmac
import json
import logging
import re
import secrets
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

log = logging.getLogger(__name__)

PREFIX = "ES1."
VERSION = 1
ALG_ED25519 = "EdDSA"
ALG_HMAC = "HS256"
MAX_TOKEN_CHARS = 1024
MIN_HMAC_KEY_BYTES = 32
DEFAULT_LEEWAY_S = 60.0
MAX_VALIDITY_S = 400 * 86400

_ID_TAG = re.compile(r"[A-Za-z0-9._\-*#]{1,20}")
_KID = re.compile(r"[A-Za-z0-9_\-]{1,32}")
_NONCE = re.compile(r"[A-Za-z0-9_\-]{8,43}")
_B64URL = re.compile(r"[A-Za-z0-9_\-]+")
_VERSIONED = re.compile(r"ES\d+\.")
_TS_MAX = 2**40
_FIELDS = frozenset({"v", "alg", "kid", "st", "bay", "nbf", "exp", "n", "id"})
_REQUIRED = _FIELDS - {"bay"}


class Outcome(enum.StrEnum):
    ACCEPTED = "accepted"  # a valid signed token, nonce consumed
    PLAIN_ID_TAG = "plain_id_tag"  # not a token; an idTag for the OCPP path
    UNRECOGNIZED = "unrecognized"  # a URL, Wi-Fi QR, binary, empty: not for us
    MALFORMED = "malformed"  # looks like a token but does not parse
    UNKNOWN_KEY = "unknown_key"  # signed with a key this station does not know
    BAD_SIGNATURE = "bad_signature"
    WRONG_STATION = "wrong_station"
    NOT_YET_VALID = "not_yet_valid"
    EXPIRED = "expired"
    WRONG_BAY = "wrong_bay"
    REPLAYED = "replayed"
    CHECK_UNAVAILABLE = "check_unavailable"  # the nonce store failed; try again

    @property
    def ok(self) -> bool:
        return self in (Outcome.ACCEPTED, Outcome.PLAIN_ID_TAG)


_MESSAGES: dict[Outcome, str] = {
    Outcome.ACCEPTED: "Code accepted.",
    Outcome.PLAIN_ID_TAG: "Checking your code…",
    Outcome.UNRECOGNIZED: "This is not a charging code.",
    Outcome.MALFORMED: "This code cannot be read. Please show it again.",
    Outcome.UNKNOWN_KEY: "This code was not issued for this station.",
    Outcome.BAD_SIGNATURE: "This code is not valid.",
    Outcome.WRONG_STATION: "This code is for another station.",
    Outcome.NOT_YET_VALID: "This code is not valid yet.",
    Outcome.EXPIRED: "This code has expired.",
    Outcome.WRONG_BAY: "This code is for another bay.",
    Outcome.REPLAYED: "This code has already been used.",
    Outcome.CHECK_UNAVAILABLE: "Cannot check codes right now. Please try again.",
}


@dataclass(frozen=True, slots=True)
class TokenClaims:
    """The signed content of a token. Times are Unix seconds (UTC)."""

    station_id: str
    bay: int | None  # None: any bay of the station
    not_before: int
    expires: int
    nonce: str
    id_tag: str
    kid: str
    alg: str


@dataclass(frozen=True, slots=True)
class VerifyResult:
    outcome: Outcome
    message: str  # short, for the driver (kiosk / display)
    id_tag: str | None = None  # for the session record / OCPP, when ok
    claims: TokenClaims | None = None  # set once the signature is valid
    detail: str = ""  # for logs and the audit trail, not for the driver

    @property
    def ok(self) -> bool:
        return self.outcome.ok


def _result(outcome: Outcome, detail: str = "", **kw: Any) -> VerifyResult:
    message = _MESSAGES[outcome]
    claims = kw.get("claims")
    if outcome is Outcome.WRONG_BAY and claims is not None and claims.bay is not None:
        message = f"This code is for bay {claims.bay}."
    return VerifyResult(outcome, message, detail=detail, **kw)


# --------------------------------------------------------------------------- keys


def b64url_encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64url_decode(text: str) -> bytes | None:
    """Strict unpadded base64url; None unless ``text`` is the canonical encoding of some bytes."""
    if not _B64URL.fullmatch(text) or len(text) % 4 == 1:
        return None
    try:
        data = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError):
        return None
    return data if b64url_encode(data) == text else None


def key_id(key_material: bytes, *, hmac_key: bool = False) -> str:
    """The default key id: 8 base64url chars of a SHA-256 fingerprint.

    For Ed25519 the material is the raw 32-byte public key; for HMAC the
    secret (domain-separated, so the id reveals nothing useful about it).
    """
    prefix = b"edge-station hmac kid\x00" if hmac_key else b""
    return b64url_encode(hashlib.sha256(prefix + key_material).digest()[:6])


def ed25519_raw(public: Ed25519PublicKey) -> bytes:
    return public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def load_ed25519_public(text: str | bytes) -> Ed25519PublicKey:
    """A public key from PEM (SubjectPublicKeyInfo) or base64 / base64url of the raw 32 bytes."""
    data = text.encode() if isinstance(text, str) else text
    stripped = data.strip()
    if stripped.startswith(b"-----BEGIN"):
        key = serialization.load_pem_public_key(stripped)
        if not isinstance(key, Ed25519PublicKey):
            raise ValueError("not an Ed25519 public key")
        return key
    raw = base64.urlsafe_b64decode(
        stripped.replace(b"+", b"-").replace(b"/", b"_") + b"=" * (-len(stripped) % 4)
    )
    if len(raw) != 32:
        raise ValueError("an Ed25519 public key is 32 bytes")
    return Ed25519PublicKey.from_public_bytes(raw)


def load_ed25519_private(pem: str | bytes) -> Ed25519PrivateKey:
    data = pem.encode() if isinstance(pem, str) else pem
    key = serialization.load_pem_private_key(data.strip(), password=None)
    if not isinstance(key, Ed25519PrivateKey):
        raise ValueError("not an Ed25519 private key")
    return key


def parse_hmac_key(text: str | bytes) -> bytes:
    """A station HMAC secret from its key-file text: hex, at least 32 bytes (64 hex digits)."""
    raw = text.decode("ascii") if isinstance(text, bytes) else text
    try:
        key = bytes.fromhex(raw.strip())
    except ValueError:
        raise ValueError("an HMAC key file holds the secret as hex digits") from None
    if len(key) < MIN_HMAC_KEY_BYTES:
        raise ValueError(f"an HMAC key must be at least {MIN_HMAC_KEY_BYTES} bytes")
    return key


@dataclass(frozen=True, slots=True)
class TokenKeys:
    """What a station trusts: its own id, and verification keys by key id.

    Each key is bound to one algorithm by the map it sits in; the ``alg`` in a
    token only has to agree, it never chooses how a key is used.
    """

    station_id: str
    ed25519: Mapping[str, Ed25519PublicKey] = field(default_factory=dict)
    hmac: Mapping[str, bytes] = field(default_factory=dict)
    leeway_s: float = DEFAULT_LEEWAY_S  # tolerated clock skew, both ends of the window

    @classmethod
    def build(
        cls,
        station_id: str,
        *,
        ed25519_public: Iterable[Ed25519PublicKey | str | bytes] = (),
        hmac_keys: Iterable[bytes] = (),
        leeway_s: float = DEFAULT_LEEWAY_S,
    ) -> TokenKeys:
        """Keys indexed by their default :func:`key_id`."""
        eds: dict[str, Ed25519PublicKey] = {}
        for k in ed25519_public:
            pub = k if isinstance(k, Ed25519PublicKey) else load_ed25519_public(k)
            eds[key_id(ed25519_raw(pub))] = pub
        macs: dict[str, bytes] = {}
        for secret in hmac_keys:
            if len(secret) < MIN_HMAC_KEY_BYTES:
                raise ValueError(f"an HMAC key must be at least {MIN_HMAC_KEY_BYTES} bytes")
            macs[key_id(secret, hmac_key=True)] = secret
        return cls(station_id, eds, macs, leeway_s)


# --------------------------------------------------------------------------- signing


class Signer(Protocol):
    alg: str
    kid: str

    def sign(self, data: bytes) -> bytes: ...


class HmacSigner:
    alg = ALG_HMAC

    def __init__(self, secret: bytes, kid: str | None = None) -> None:
        if len(secret) < MIN_HMAC_KEY_BYTES:
            raise ValueError(f"an HMAC key must be at least {MIN_HMAC_KEY_BYTES} bytes")
        self._secret = secret
        self.kid = kid or key_id(secret, hmac_key=True)

    def sign(self, data: bytes) -> bytes:
        return hmac.new(self._secret, data, hashlib.sha256).digest()


class Ed25519Signer:
    alg = ALG_ED25519

    def __init__(self, private: Ed25519PrivateKey, kid: str | None = None) -> None:
        self._private = private
        self.kid = kid or key_id(ed25519_raw(private.public_key()))

    def sign(self, data: bytes) -> bytes:
        return self._private.sign(data)


def new_nonce() -> str:
    """96 random bits, base64url (16 chars)."""
    return b64url_encode(secrets.token_bytes(12))


def new_id_tag() -> str:
    """A random idTag for a token that has no booking reference: ``Q`` + 12 base32 chars."""
    return "Q" + base64.b32encode(secrets.token_bytes(8)).decode("ascii")[:12]


def mint(
    signer: Signer,
    *,
    station_id: str,
    bay: int | None,
    not_before: int,
    expires: int,
    id_tag: str,
    nonce: str | None = None,
) -> str:
    """Build and sign a token. Raises ``ValueError`` for fields :func:`verify` would reject."""
    payload: dict[str, Any] = {
        "v": VERSION,
        "alg": signer.alg,
        "kid": signer.kid,
        "st": station_id,
        "nbf": int(not_before),
        "exp": int(expires),
        "n": nonce if nonce is not None else new_nonce(),
        "id": id_tag,
    }
    if bay is not None:
        payload["bay"] = bay
    problem = _check_payload(payload)
    if problem:
        raise ValueError(problem)
    body = PREFIX + b64url_encode(
        json.dumps(payload, separators=(",", ":"), sort_keys=True).encode()
    )
    token = body + "." + b64url_encode(signer.sign(body.encode("ascii")))
    if len(token) > MAX_TOKEN_CHARS:
        raise ValueError(f"token longer than {MAX_TOKEN_CHARS} characters")
    return token


# --------------------------------------------------------------------------- verifying


class NonceStore(Protocol):
    """Replay memory. Implemented by the journal (SQLite); :class:`MemoryNonceStore` for tests.

    ``seen_or_add`` returns True if ``nonce`` was recorded before (a replay);
    otherwise records it, atomically, and returns False. The record may be
    forgotten after ``expires_wall`` (Unix seconds): the token no longer
    verifies then anyway.
    """

    async def seen_or_add(self, nonce: str, expires_wall: float) -> bool: ...


class MemoryNonceStore:
    """In-memory :class:`NonceStore` (tests, simulator). Prunes expired nonces as it goes."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._seen: dict[str, float] = {}

    async def seen_or_add(self, nonce: str, expires_wall: float) -> bool:
        now = self._clock()
        if len(self._seen) > 1024:
            self._seen = {n: exp for n, exp in self._seen.items() if exp >= now}
        if nonce in self._seen:
            return True
        self._seen[nonce] = expires_wall
        return False

    def __len__(self) -> int:
        return len(self._seen)


def classify_plain(text: str) -> bool:
    """True if ``text`` may be an OCPP idTag (RFID UID, local-list entry, reservation idTag)."""
    return bool(_ID_TAG.fullmatch(text)) and not _VERSIONED.match(text)


def check(text: object, now_wall: float, bay_id: int, keys: TokenKeys) -> VerifyResult:
    """Everything :func:`verify` checks except replay. Pure; never raises.

    Returns ``ACCEPTED`` for a token that is valid now at this bay (its nonce
    is *not* consumed: call :func:`verify` to use it).
    """
    try:
        return _check(text, now_wall, bay_id, keys)
    except Exception as exc:  # a bug must not stop the scanner; the fuzz test keeps this unused
        log.error("token check failed unexpectedly: %r", exc, exc_info=True)
        return _result(Outcome.MALFORMED, f"internal error: {type(exc).__name__}")


async def verify(
    text: object, now_wall: float, bay_id: int, keys: TokenKeys, nonce_store: NonceStore
) -> VerifyResult:
    """Classify and verify scanned text for ``bay_id`` at ``now_wall``; never raises.

    A signed token that passes every check has its nonce consumed and comes
    back ``ACCEPTED`` with ``id_tag`` and ``claims``; a second use is ``REPLAYED``.
    """
    result = check(text, now_wall, bay_id, keys)
    if result.outcome is not Outcome.ACCEPTED or result.claims is None:
        return result
    claims = result.claims
    try:
        replayed = await nonce_store.seen_or_add(claims.nonce, claims.expires + keys.leeway_s)
    except Exception as exc:
        log.warning("nonce store failed: %r", exc)
        return _result(
            Outcome.CHECK_UNAVAILABLE, f"nonce store: {type(exc).__name__}: {exc}", claims=claims
        )
    if replayed:
        return _result(Outcome.REPLAYED, f"nonce {claims.nonce} already used", claims=claims)
    return result


def _check(text: object, now_wall: float, bay_id: int, keys: TokenKeys) -> VerifyResult:
    if not isinstance(text, str):
        return _result(Outcome.UNRECOGNIZED, f"not text: {type(text).__name__}")
    if not _VERSIONED.match(text):
        if classify_plain(text):
            return _result(Outcome.PLAIN_ID_TAG, id_tag=text)
        return _result(Outcome.UNRECOGNIZED, f"{len(text)} chars, not a token or idTag")
    if not text.startswith(PREFIX):
        return _result(Outcome.MALFORMED, "unsupported token version")
    if len(text) > MAX_TOKEN_CHARS:
        return _result(Outcome.MALFORMED, f"token of {len(text)} chars")

    parts = text[len(PREFIX) :].split(".")
    if len(parts) != 2:
        return _result(Outcome.MALFORMED, "expected ES1.<payload>.<signature>")
    payload_b64, sig_b64 = parts
    raw_payload = b64url_decode(payload_b64)
    signature = b64url_decode(sig_b64)
    if raw_payload is None or signature is None:
        return _result(Outcome.MALFORMED, "bad base64url")
    payload = _parse_json(raw_payload)
    if payload is None:
        return _result(Outcome.MALFORMED, "payload is not a JSON object")
    problem = _check_payload(payload)
    if problem:
        return _result(Outcome.MALFORMED, problem)

    alg, kid = payload["alg"], payload["kid"]
    signed = (PREFIX + payload_b64).encode("ascii")
    if alg == ALG_ED25519:
        pub = keys.ed25519.get(kid)
        if pub is None:
            return _result(Outcome.UNKNOWN_KEY, f"no Ed25519 key {kid!r}")
        try:
            pub.verify(signature, signed)
        except (InvalidSignature, ValueError):
            return _result(Outcome.BAD_SIGNATURE, f"Ed25519 signature does not match key {kid!r}")
    else:
        secret = keys.hmac.get(kid)
        if secret is None:
            return _result(Outcome.UNKNOWN_KEY, f"no HMAC key {kid!r}")
        expected = hmac.new(secret, signed, hashlib.sha256).digest()
        if not hmac.compare_digest(expected, signature):
            return _result(Outcome.BAD_SIGNATURE, f"HMAC does not match key {kid!r}")

    claims = TokenClaims(
        station_id=payload["st"],
        bay=payload.get("bay"),
        not_before=payload["nbf"],
        expires=payload["exp"],
        nonce=payload["n"],
        id_tag=payload["id"],
        kid=kid,
        alg=alg,
    )
    if claims.station_id != keys.station_id:
        return _result(Outcome.WRONG_STATION, f"for station {claims.station_id!r}", claims=claims)
    if now_wall + keys.leeway_s < claims.not_before:
        return _result(Outcome.NOT_YET_VALID, f"valid from {claims.not_before}", claims=claims)
    if now_wall - keys.leeway_s >= claims.expires:
        return _result(Outcome.EXPIRED, f"expired at {claims.expires}", claims=claims)
    if claims.bay is not None and claims.bay != bay_id:
        return _result(
            Outcome.WRONG_BAY, f"for bay {claims.bay}, shown at bay {bay_id}", claims=claims
        )
    return _result(Outcome.ACCEPTED, id_tag=claims.id_tag, claims=claims)


def _reject_constant(name: str) -> Any:
    raise ValueError(f"JSON constant {name} not allowed")


def _unique_pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in pairs:
        if k in out:
            raise ValueError(f"duplicate key {k!r}")
        out[k] = v
    return out


def _parse_json(raw: bytes) -> dict[str, Any] | None:
    try:
        obj = json.loads(
            raw.decode("utf-8"), object_pairs_hook=_unique_pairs, parse_constant=_reject_constant
        )
    except (UnicodeDecodeError, ValueError, RecursionError):
        return None
    return obj if isinstance(obj, dict) else None


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _check_payload(p: Mapping[str, Any]) -> str:
    """'' if the payload is well-formed, else what is wrong (shared by mint and verify)."""
    if unknown := set(p) - _FIELDS:
        return f"unknown fields {sorted(unknown)}"
    if missing := _REQUIRED - set(p):
        return f"missing fields {sorted(missing)}"
    if not _is_int(p["v"]) or p["v"] != VERSION:
        return "unsupported payload version"
    if p["alg"] not in (ALG_ED25519, ALG_HMAC):
        return "unknown alg"
    if not isinstance(p["kid"], str) or not _KID.fullmatch(p["kid"]):
        return "bad kid"
    st = p["st"]
    if not isinstance(st, str) or not 1 <= len(st) <= 64 or not st.isprintable():
        return "bad station id"
    if "bay" in p and not (_is_int(p["bay"]) and 1 <= p["bay"] <= 10_000):
        return "bad bay"
    nbf, exp = p["nbf"], p["exp"]
    if not (_is_int(nbf) and _is_int(exp) and 0 <= nbf < exp < _TS_MAX):
        return "bad validity window"
    if exp - nbf > MAX_VALIDITY_S:
        return "validity window too long"
    if not isinstance(p["n"], str) or not _NONCE.fullmatch(p["n"]):
        return "bad nonce"
    if not isinstance(p["id"], str) or not _ID_TAG.fullmatch(p["id"]):
        return "bad id tag"
    return ""

"""QR tokens: the outcome table, replay, fuzzing (never raises), the CLI round trip."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from controller.cli import tokens as token_cli
from controller.core.tokens import (
    Ed25519Signer,
    HmacSigner,
    MemoryNonceStore,
    Outcome,
    TokenKeys,
    VerifyResult,
    b64url_encode,
    check,
    classify_plain,
    load_ed25519_public,
    mint,
    parse_hmac_key,
    verify,
)

NOW = 1_750_000_000
STATION = "ST-0042"
HMAC_SECRET = bytes(range(32))
ED_PRIVATE = Ed25519PrivateKey.from_private_bytes(bytes(range(100, 132)))
HMAC = HmacSigner(HMAC_SECRET)
ED = Ed25519Signer(ED_PRIVATE)
KEYS = TokenKeys.build(STATION, ed25519_public=[ED_PRIVATE.public_key()], hmac_keys=[HMAC_SECRET])


def token(signer: Any = HMAC, **over: Any) -> str:
    fields: dict[str, Any] = {
        "station_id": STATION,
        "bay": 2,
        "not_before": NOW - 600,
        "expires": NOW + 3600,
        "id_tag": "BOOK-1234",
        "nonce": "nonce-0000000001",
    }
    fields.update(over)
    return str(mint(signer, **fields))


def forge(payload: dict[str, Any], signer: Any = HMAC) -> str:
    """Sign an arbitrary payload, bypassing mint's own checks."""
    body = "ES1." + b64url_encode(json.dumps(payload).encode())
    return body + "." + b64url_encode(signer.sign(body.encode()))


def flip_last_sig_char(t: str) -> str:
    head, sig = t.rsplit(".", 1)
    return head + "." + ("A" if sig[0] != "A" else "B") + sig[1:]


async def run(text: object, *, bay: int = 2, now: float = NOW, store: Any = None) -> VerifyResult:
    return await verify(
        text, now, bay, KEYS, store if store is not None else MemoryNonceStore(lambda: NOW)
    )


OTHER_ED = Ed25519Signer(Ed25519PrivateKey.from_private_bytes(bytes(32)))
OTHER_HMAC_SAME_KID = HmacSigner(bytes(range(1, 33)), kid=HMAC.kid)
ED_KEY_AS_HMAC = HmacSigner(bytes(range(1, 33)), kid=ED.kid)  # alg confusion attempt

CASES: list[tuple[str, object, int, float, Outcome]] = [
    ("hmac ok", token(), 2, NOW, Outcome.ACCEPTED),
    ("ed25519 ok", token(ED), 2, NOW, Outcome.ACCEPTED),
    ("any bay", token(bay=None), 7, NOW, Outcome.ACCEPTED),
    ("wrong bay", token(bay=3), 2, NOW, Outcome.WRONG_BAY),
    ("wrong station", token(station_id="ST-0043"), 2, NOW, Outcome.WRONG_STATION),
    ("expired", token(), 2, NOW + 3600 + 61, Outcome.EXPIRED),
    ("expired within leeway", token(), 2, NOW + 3600 + 59, Outcome.ACCEPTED),
    ("not yet valid", token(), 2, NOW - 600 - 61, Outcome.NOT_YET_VALID),
    ("early within leeway", token(), 2, NOW - 600 - 59, Outcome.ACCEPTED),
    ("tampered hmac", flip_last_sig_char(token()), 2, NOW, Outcome.BAD_SIGNATURE),
    ("tampered ed25519", flip_last_sig_char(token(ED)), 2, NOW, Outcome.BAD_SIGNATURE),
    ("other secret, same kid", token(OTHER_HMAC_SAME_KID), 2, NOW, Outcome.BAD_SIGNATURE),
    ("unknown ed25519 key", token(OTHER_ED), 2, NOW, Outcome.UNKNOWN_KEY),
    ("hmac with an ed25519 kid", token(ED_KEY_AS_HMAC), 2, NOW, Outcome.UNKNOWN_KEY),
    (
        "payload swapped",
        token().split(".")[0] + "." + token(bay=None).split(".")[1] + "." + token().split(".")[2],
        2,
        NOW,
        Outcome.BAD_SIGNATURE,
    ),
    (
        "unknown field",
        forge({**json.loads(base64.urlsafe_b64decode(token().split(".")[1] + "==")), "x": 1}),
        2,
        NOW,
        Outcome.MALFORMED,
    ),
    (
        "bool as version",
        forge({**json.loads(base64.urlsafe_b64decode(token().split(".")[1] + "==")), "v": True}),
        2,
        NOW,
        Outcome.MALFORMED,
    ),
    ("payload is a list", forge([1, 2]), 2, NOW, Outcome.MALFORMED),  # type: ignore[arg-type]
    ("bad base64", "ES1.%%%.abc", 2, NOW, Outcome.MALFORMED),
    ("three parts", "ES1.a.b.c", 2, NOW, Outcome.MALFORMED),
    ("prefix only", "ES1.", 2, NOW, Outcome.MALFORMED),
    ("future version", "ES2.abc.def", 2, NOW, Outcome.MALFORMED),
    ("oversized token", "ES1." + "A" * 2000 + ".AA", 2, NOW, Outcome.MALFORMED),
    ("url", "https://example.com/pay?x=1", 2, NOW, Outcome.UNRECOGNIZED),
    ("wifi", "WIFI:S:CafeNet;T:WPA;P:secret;;", 2, NOW, Outcome.UNRECOGNIZED),
    ("binary 3 KB", bytes(range(256)).decode("latin-1") * 12, 2, NOW, Outcome.UNRECOGNIZED),
    ("empty", "", 2, NOW, Outcome.UNRECOGNIZED),
    ("bytes object", b"BOOK-1234", 2, NOW, Outcome.UNRECOGNIZED),
    ("None", None, 2, NOW, Outcome.UNRECOGNIZED),
    ("21 chars", "A" * 21, 2, NOW, Outcome.UNRECOGNIZED),
    ("space inside", "AB 12", 2, NOW, Outcome.UNRECOGNIZED),
    ("rfid uid", "04A2B3C4D5E6F7", 2, NOW, Outcome.PLAIN_ID_TAG),
    ("local list tag", "FLEET-007", 2, NOW, Outcome.PLAIN_ID_TAG),
]


@pytest.mark.parametrize(
    ("text", "bay", "now", "outcome"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
async def test_outcome_table(text: object, bay: int, now: float, outcome: Outcome) -> None:
    result = await run(text, bay=bay, now=now)
    assert result.outcome is outcome, result.detail
    assert result.message and "internal" not in result.detail
    assert result.ok == (outcome in (Outcome.ACCEPTED, Outcome.PLAIN_ID_TAG))
    if outcome is Outcome.ACCEPTED:
        assert result.id_tag == "BOOK-1234" and result.claims is not None
    elif outcome is Outcome.PLAIN_ID_TAG:
        assert result.id_tag == text
    else:
        assert result.id_tag is None


def test_messages_are_distinct_and_short() -> None:
    from controller.core.tokens import _MESSAGES

    assert len(set(_MESSAGES.values())) == len(_MESSAGES) == len(Outcome)
    assert all(len(m) <= 60 for m in _MESSAGES.values())
    wrong_bay = check(token(bay=3), NOW, 2, KEYS)
    assert wrong_bay.message == "This code is for bay 3."


async def test_replay_is_rejected() -> None:
    store = MemoryNonceStore(lambda: NOW)
    t = token()
    assert (await run(t, store=store)).outcome is Outcome.ACCEPTED
    second = await run(t, store=store)
    assert second.outcome is Outcome.REPLAYED and second.id_tag is None
    # Another token with a fresh nonce is fine.
    assert (await run(token(nonce="nonce-0000000002"), store=store)).outcome is Outcome.ACCEPTED


async def test_rejected_token_keeps_its_nonce() -> None:
    store = MemoryNonceStore(lambda: NOW)
    t = token(bay=3)
    assert (await run(t, bay=2, store=store)).outcome is Outcome.WRONG_BAY
    assert len(store) == 0
    assert (await run(t, bay=3, store=store)).outcome is Outcome.ACCEPTED


async def test_nonce_kept_until_expiry_plus_leeway() -> None:
    calls: list[tuple[str, float]] = []

    class Recording:
        async def seen_or_add(self, nonce: str, expires_wall: float) -> bool:
            calls.append((nonce, expires_wall))
            return False

    await run(token(), store=Recording())
    assert calls == [("nonce-0000000001", NOW + 3600 + KEYS.leeway_s)]


async def test_store_failure_is_an_outcome_not_an_exception() -> None:
    class Broken:
        async def seen_or_add(self, nonce: str, expires_wall: float) -> bool:
            raise OSError("database is locked")

    result = await run(token(), store=Broken())
    assert result.outcome is Outcome.CHECK_UNAVAILABLE and not result.ok


def test_check_does_not_consume() -> None:
    assert check(token(), NOW, 2, KEYS).outcome is Outcome.ACCEPTED


@pytest.mark.parametrize(
    ("text", "plain"),
    [
        ("ABC", True),
        ("a.b_c-d*e#f", True),
        ("x" * 20, True),
        ("ES1.x", False),
        ("ES12.x", False),
        ("a/b", False),
        ("a:b", False),
        ("a?b", False),
        ("é", False),
        ("", False),
        ("x" * 21, False),
    ],
)
def test_plain_id_tag_pattern(text: str, plain: bool) -> None:
    assert classify_plain(text) is plain


def test_mint_refuses_what_verify_would_reject() -> None:
    with pytest.raises(ValueError, match="id tag"):
        token(id_tag="has space")
    with pytest.raises(ValueError, match="validity"):
        token(not_before=NOW, expires=NOW)
    with pytest.raises(ValueError, match="bay"):
        token(bay=0)
    with pytest.raises(ValueError):
        HmacSigner(b"short")


def test_token_fits_a_small_qr() -> None:
    assert len(token()) < 250
    assert len(token(ED)) < 300


def test_key_loading() -> None:
    pub = ED_PRIVATE.public_key()
    raw = b64url_encode(pub.public_bytes_raw())
    assert load_ed25519_public(raw).public_bytes_raw() == pub.public_bytes_raw()
    assert parse_hmac_key(HMAC_SECRET.hex() + "\n") == HMAC_SECRET
    with pytest.raises(ValueError):
        parse_hmac_key("00" * 16)
    with pytest.raises(ValueError):
        parse_hmac_key("not hex")


# --------------------------------------------------------------------------- fuzz


def _payload_of(t: str) -> dict[str, Any]:
    result: dict[str, Any] = json.loads(base64.urlsafe_b64decode(t.split(".")[1] + "=="))
    return result


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=30),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=5), inner, max_size=4)
    ),
    max_leaves=12,
)
field_names = st.sampled_from(["v", "alg", "kid", "st", "bay", "nbf", "exp", "n", "id", "zz"])

scanned_text = st.one_of(
    st.text(max_size=300),
    st.binary(max_size=3000).map(lambda b: b.decode("latin-1")),
    st.text(
        alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.=", max_size=400
    ).map(lambda s: "ES1." + s),
    st.builds(
        lambda i, c: (lambda t: t[:i] + c + t[i + 1 :])(token()),
        st.integers(0, 200),
        st.characters(),
    ),
    st.builds(lambda k, v: forge({**_payload_of(token()), k: v}), field_names, json_values),
    st.dictionaries(field_names, json_values, max_size=9).map(forge),
    json_values.map(lambda v: forge(v)),  # type: ignore[arg-type]
)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(text=scanned_text, bay=st.integers(-5, 20), now=st.floats(-1e12, 1e12, allow_nan=False))
def test_check_never_raises(text: str, bay: int, now: float) -> None:
    result = check(text, now, bay, KEYS)
    assert isinstance(result.outcome, Outcome)
    assert "internal error" not in result.detail  # the safety net was not needed
    assert result.ok == (result.outcome in (Outcome.ACCEPTED, Outcome.PLAIN_ID_TAG))


@settings(max_examples=100, deadline=None)
@given(text=scanned_text)
async def test_verify_never_raises(text: str) -> None:
    result = await run(text)
    assert isinstance(result, VerifyResult) and "internal error" not in result.detail


# --------------------------------------------------------------------------- CLI


def test_cli_keygen_mint_verify_round_trip(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    key = tmp_path / "operator"
    assert token_cli.main(["token", "keygen", "--ed25519", str(key)]) == 0
    assert (key.stat().st_mode & 0o777) == 0o600
    assert token_cli.main(["token", "keygen", "--ed25519", str(key)]) == 2  # never overwrites
    capsys.readouterr()
    png = tmp_path / "t.png"
    rc = token_cli.main(
        [
            "token",
            "mint",
            "--station",
            STATION,
            "--bay",
            "4",
            "--valid-from",
            "2025-06-15T12:00:00Z",
            "--valid-for",
            "2h",
            "--id-tag",
            "RES-77",
            "--ed25519-private-key",
            str(key),
            "--png",
            str(png),
        ]
    )
    assert rc == 0
    text = capsys.readouterr().out.strip()
    keys = TokenKeys.build(STATION, ed25519_public=[(tmp_path / "operator.pub").read_bytes()])
    start = 1_749_988_800  # 2025-06-15T12:00:00Z
    ok = check(text, start + 3600, 4, keys)
    assert ok.outcome is Outcome.ACCEPTED and ok.id_tag == "RES-77"
    assert ok.claims is not None and (ok.claims.not_before, ok.claims.expires) == (
        start,
        start + 7200,
    )
    assert check(text, start + 7200 + 61, 4, keys).outcome is Outcome.EXPIRED
    # The PNG holds the same token.
    from drivers.camera.corpus import read_image
    from drivers.camera.decoders import make_decoder

    assert make_decoder().decode(read_image(png)) == [text]


def test_cli_hmac_any_bay(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    secret = tmp_path / "station.key"
    assert token_cli.main(["token", "keygen", "--hmac", str(secret)]) == 0
    capsys.readouterr()
    assert (
        token_cli.main(
            [
                "token",
                "mint",
                "--station",
                "S1",
                "--any-bay",
                "--valid-for",
                "30m",
                "--hmac-key-file",
                str(secret),
            ]
        )
        == 0
    )
    text = capsys.readouterr().out.strip()
    keys = TokenKeys.build("S1", hmac_keys=[parse_hmac_key(secret.read_text())])
    import time

    result = check(text, time.time(), 9, keys)
    assert result.outcome is Outcome.ACCEPTED and result.id_tag is not None
    assert classify_plain(result.id_tag)


def test_cli_rejects_bad_arguments(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        token_cli.main(
            ["token", "mint", "--station", "S1", "--bay", "1", "--any-bay", "--hmac-key-file", "x"]
        )
    with pytest.raises(SystemExit):
        token_cli.main(
            [
                "token",
                "mint",
                "--station",
                "S1",
                "--bay",
                "1",
                "--valid-for",
                "soon",
                "--hmac-key-file",
                "x",
            ]
        )
    assert (
        token_cli.main(
            [
                "token",
                "mint",
                "--station",
                "S1",
                "--bay",
                "1",
                "--hmac-key-file",
                str(tmp_path / "missing"),
            ]
        )
        == 2
    )


@pytest.mark.parametrize(
    ("text", "seconds"), [("2h", 7200), ("30m", 1800), ("1d12h", 129600), ("90s", 90), ("45", 45)]
)
def test_parse_duration(text: str, seconds: int) -> None:
    assert token_cli.parse_duration(text) == seconds


def test_documented_example_verifies() -> None:
    doc = (Path(__file__).resolve().parents[1] / "controller" / "core" / "TOKENS.md").read_text(
        encoding="utf-8"
    )
    example = next(line for line in doc.splitlines() if line.startswith("ES1.eyJ"))
    result = check(example, 1_750_000_000, 2, TokenKeys.build("ST-0042", hmac_keys=[HMAC_SECRET]))
    assert result.outcome is Outcome.ACCEPTED and result.id_tag == "BOOK-1234"

"""``edge-station token ...``: mint QR tokens and make keys (for operators and tests).

Wired into the main CLI with :func:`add_token_commands`; each sub-command
sets ``func`` (``func(args) -> int`` exit code) on its parser. Also runnable
alone: ``python -m controller.cli.tokens token mint ...``.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from controller.core.tokens import (
    Ed25519Signer,
    HmacSigner,
    Signer,
    b64url_encode,
    ed25519_raw,
    key_id,
    load_ed25519_private,
    mint,
    new_id_tag,
    parse_hmac_key,
)

_DURATION = re.compile(r"(?:(\d+)d)?(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s?)?")


def parse_duration(text: str) -> int:
    """``"2h"``, ``"90m"``, ``"1d12h"``, ``"45s"`` or plain seconds → seconds (> 0)."""
    m = _DURATION.fullmatch(text.strip())
    if not m or not any(m.groups()):
        raise argparse.ArgumentTypeError(f"not a duration: {text!r} (e.g. 2h, 30m, 1d, 90s)")
    d, h, mins, s = (int(g) if g else 0 for g in m.groups())
    seconds = ((d * 24 + h) * 60 + mins) * 60 + s
    if seconds <= 0:
        raise argparse.ArgumentTypeError("duration must be positive")
    return seconds


def parse_time(text: str) -> int:
    """``"now"``, Unix seconds, or ISO 8601 (a time without zone is taken as UTC) → Unix seconds."""
    t = text.strip()
    if t == "now":
        return int(time.time())
    if t.isdigit():
        return int(t)
    try:
        dt = datetime.fromisoformat(t.replace("Z", "+00:00"))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"not a time: {text!r} (now, Unix seconds or ISO 8601)"
        ) from None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return int(dt.timestamp())


def add_token_commands(subparsers: Any) -> argparse.ArgumentParser:
    """Add ``token mint`` and ``token keygen`` to an argparse sub-parser collection."""
    token = subparsers.add_parser("token", help="mint signed QR tokens, make keys")
    sub = token.add_subparsers(dest="token_command", required=True)

    m = sub.add_parser("mint", help="print a signed token (and optionally a QR PNG)")
    m.add_argument("--station", required=True, help="station id the token is for")
    where = m.add_mutually_exclusive_group(required=True)
    where.add_argument("--bay", type=int, help="OCPP connector id of the bay")
    where.add_argument("--any-bay", action="store_true", help="valid at any bay of the station")
    m.add_argument(
        "--valid-from", type=parse_time, default=None, help="now (default), Unix s or ISO 8601"
    )
    m.add_argument(
        "--valid-for", type=parse_duration, default=2 * 3600, help="e.g. 2h (default), 30m, 1d"
    )
    m.add_argument("--id-tag", default=None, help="idTag for the session record (default: random)")
    m.add_argument("--kid", default=None, help="key id (default: the key's fingerprint)")
    key = m.add_mutually_exclusive_group(required=True)
    key.add_argument("--hmac-key-file", type=Path, help="station secret, hex")
    key.add_argument("--ed25519-private-key", type=Path, help="operator private key, PEM")
    m.add_argument("--png", type=Path, default=None, help="also write the QR code as a PNG")
    m.set_defaults(func=cmd_mint)

    k = sub.add_parser("keygen", help="make a key pair or a station secret")
    kind = k.add_mutually_exclusive_group(required=True)
    kind.add_argument("--ed25519", type=Path, metavar="OUT", help="write OUT (private) and OUT.pub")
    kind.add_argument(
        "--hmac", type=Path, metavar="OUT", help="write a 32-byte station secret, hex"
    )
    k.add_argument("--force", action="store_true", help="overwrite existing files")
    k.set_defaults(func=cmd_keygen)
    assert isinstance(token, argparse.ArgumentParser)
    return token


def _signer(args: argparse.Namespace) -> Signer:
    if args.hmac_key_file is not None:
        return HmacSigner(parse_hmac_key(args.hmac_key_file.read_text(encoding="ascii")), args.kid)
    return Ed25519Signer(load_ed25519_private(args.ed25519_private_key.read_bytes()), args.kid)


def cmd_mint(args: argparse.Namespace) -> int:
    try:
        signer = _signer(args)
        not_before = args.valid_from if args.valid_from is not None else int(time.time())
        token = mint(
            signer,
            station_id=args.station,
            bay=None if args.any_bay else args.bay,
            not_before=not_before,
            expires=not_before + args.valid_for,
            id_tag=args.id_tag or new_id_tag(),
        )
    except (OSError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(token)
    if args.png is not None:
        import segno

        segno.make_qr(token, error="m").save(str(args.png), scale=6, border=4)
        print(f"wrote {args.png}", file=sys.stderr)
    return 0


def _write_private(path: Path, data: bytes, force: bool) -> None:
    flags = os.O_WRONLY | os.O_CREAT | (os.O_TRUNC if force else os.O_EXCL)
    fd = os.open(path, flags, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)


def cmd_keygen(args: argparse.Namespace) -> int:
    try:
        if args.hmac is not None:
            secret = os.urandom(32)
            _write_private(args.hmac, secret.hex().encode() + b"\n", args.force)
            print(f"kid {key_id(secret, hmac_key=True)}: wrote {args.hmac}")
            return 0
        private = Ed25519PrivateKey.generate()
        pub_path = args.ed25519.with_name(args.ed25519.name + ".pub")
        if pub_path.exists() and not args.force:
            raise FileExistsError(f"{pub_path} exists (use --force)")
        _write_private(
            args.ed25519,
            private.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            ),
            args.force,
        )
        public = private.public_key()
        pub_path.write_bytes(
            public.public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            )
        )
        raw = ed25519_raw(public)
        print(f"kid {key_id(raw)}: wrote {args.ed25519} (private) and {pub_path}")
        print(f"public key (raw, base64url) for station.toml: {b64url_encode(raw)}")
        return 0
    except OSError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="edge-station")
    add_token_commands(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    raise SystemExit(main())

"""``edge-station firmware force BAY``: the installer forces a waiting node update on a bay.

It logs in to the running station's local UI like the browser does (a user with
the installer or owner role; the password from ``$EDGE_STATION_PASSWORD`` or
asked for) and asks for the forced update: the station stops the bay's session
first and updates the node once it reports itself off. The audit log names the
user. Progress shows in ``edge-station status`` and on the owner UI's
diagnostics page.
"""

from __future__ import annotations

import argparse
import getpass
import http.cookiejar
import json
import os
import sys
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

PASSWORD_ENV = "EDGE_STATION_PASSWORD"
CSRF_COOKIE = "es_csrf"


def add_commands(sub: Any) -> None:
    fw = sub.add_parser("firmware", help="node firmware updates on a running station")
    fsub = fw.add_subparsers(dest="firmware_command", required=True)
    f = fsub.add_parser(
        "force",
        help="update a bay waiting for a node update now (its session is stopped first)",
    )
    f.add_argument("bay", help="the bay's id")
    f.add_argument("--url", default="http://127.0.0.1:8080", help="the station's local UI")
    f.add_argument("--user", required=True, help="an installer or owner account")
    f.add_argument("--timeout", type=float, default=10.0)
    f.set_defaults(func=cmd_force)


class _Session:
    def __init__(self, base: str, timeout: float) -> None:
        self.base = base.rstrip("/")
        self.timeout = timeout
        self.jar = http.cookiejar.CookieJar()
        self.opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(self.jar))

    def csrf(self) -> str:
        return next((c.value or "" for c in self.jar if c.name == CSRF_COOKIE), "")

    def call(self, method: str, path: str, body: Any = None) -> tuple[int, dict[str, Any]]:
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.base + path, data=data, method=method)
        req.add_header("Accept", "application/json")
        if data is not None:
            req.add_header("Content-Type", "application/json")
        if method != "GET":
            req.add_header("X-CSRF-Token", self.csrf())
        try:
            with self.opener.open(req, timeout=self.timeout) as resp:
                return int(resp.status), _json(resp.read())
        except urllib.error.HTTPError as err:
            with err:
                return int(err.code), _json(err.read())


def _json(raw: bytes) -> dict[str, Any]:
    try:
        value = json.loads(raw or b"{}")
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def cmd_force(args: argparse.Namespace) -> int:
    password = os.environ.get(PASSWORD_ENV) or getpass.getpass(f"Password of {args.user}: ")
    s = _Session(args.url, args.timeout)
    try:
        s.call("GET", "/api/v1/auth/csrf")
        code, body = s.call(
            "POST", "/api/v1/auth/login", {"username": args.user, "password": password}
        )
        if code != 200:
            print(body.get("message") or f"The login failed ({code}).", file=sys.stderr)
            return 1
        bay = urllib.parse.quote(args.bay, safe="")
        code, body = s.call("POST", f"/api/v1/firmware/bays/{bay}/force")
        s.call("POST", "/api/v1/auth/logout")
    except OSError as err:
        reason = getattr(err, "reason", err)
        print(f"The station at {args.url} cannot be reached: {reason}.", file=sys.stderr)
        return 2
    if code != 200:
        print(body.get("message") or f"The station refused ({code}).", file=sys.stderr)
        return 1
    print(body.get("message", "Forced."))
    return 0

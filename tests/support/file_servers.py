"""Real file servers on loopback for the diagnostics and firmware tests (no tests here).

:class:`HttpFiles`: a threaded ``http.server`` that stores PUT and multipart POST uploads,
serves files for GET, and can be told to fail the next requests, refuse PUT (405) or
hold a request until released. :func:`ftp_server`: a pyftpdlib server with one user
whose home is a directory of the test's.
"""

from __future__ import annotations

import contextlib
import email.parser
import email.policy
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from pyftpdlib.authorizers import DummyAuthorizer
from pyftpdlib.handlers import FTPHandler
from pyftpdlib.servers import ThreadedFTPServer


@dataclass
class Upload:
    method: str
    path: str
    body: bytes
    authorization: str | None


@dataclass
class HttpFiles:
    uploads: list[Upload] = field(default_factory=list)
    attempts: list[tuple[str, str]] = field(default_factory=list)  # (method, path) of each
    files: dict[str, bytes] = field(default_factory=dict)  # served for GET
    fail_next: int = 0  # answer this many more requests with 500
    refuse_put: bool = False
    hold: threading.Event | None = None  # requests wait for this before being answered
    port: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def url(self, path: str = "/") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def _take_failure(self) -> bool:
        with self.lock:
            if self.fail_next > 0:
                self.fail_next -= 1
                return True
            return False


def _handler(state: HttpFiles) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            pass

        def _body(self) -> bytes:
            n = int(self.headers.get("Content-Length") or 0)
            return self.rfile.read(n)

        def _answer(self, code: int, body: bytes = b"") -> None:
            self.send_response(code)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def _receive(self, method: str) -> bytes | None:
            body = self._body()
            with state.lock:
                state.attempts.append((method, self.path))
            if state.hold is not None:
                state.hold.wait(30)
            if state._take_failure():
                self._answer(500)
                return None
            return body

        def do_PUT(self) -> None:
            if state.refuse_put:
                self._body()
                with state.lock:
                    state.attempts.append(("PUT", self.path))
                self._answer(405)
                return
            body = self._receive("PUT")
            if body is None:
                return
            with state.lock:
                state.uploads.append(
                    Upload("PUT", self.path, body, self.headers.get("Authorization"))
                )
            self._answer(201)

        def do_POST(self) -> None:
            body = self._receive("POST")
            if body is None:
                return
            ctype = self.headers.get("Content-Type", "")
            msg = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
                f"Content-Type: {ctype}\r\n\r\n".encode() + body
            )
            for part in msg.iter_parts():
                if part.get_param("name", header="content-disposition") == "file":
                    payload = part.get_payload(decode=True)
                    assert isinstance(payload, bytes)
                    with state.lock:
                        state.uploads.append(
                            Upload("POST", self.path, payload, self.headers.get("Authorization"))
                        )
            self._answer(200)

        def do_GET(self) -> None:
            with state.lock:
                state.attempts.append(("GET", self.path))
            if state._take_failure():
                self._answer(500)
                return
            data = state.files.get(self.path)
            if data is None:
                self._answer(404)
                return
            self._answer(200, data)

    return Handler


@contextlib.contextmanager
def http_files() -> Iterator[HttpFiles]:
    state = HttpFiles()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(state))
    server.daemon_threads = True
    state.port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, name="http-files", daemon=True)
    thread.start()
    try:
        yield state
    finally:
        if state.hold is not None:
            state.hold.set()
        server.shutdown()
        server.server_close()
        thread.join(5)


@dataclass
class Ftp:
    port: int
    root: Path
    user: str
    password: str

    def url(self, path: str = "/") -> str:
        return f"ftp://{self.user}:{self.password}@127.0.0.1:{self.port}{path}"


@contextlib.contextmanager
def ftp_server(root: Path, user: str = "support", password: str = "ftp-S3cret") -> Iterator[Ftp]:
    root.mkdir(parents=True, exist_ok=True)
    auth = DummyAuthorizer()
    auth.add_user(user, password, str(root), perm="elradfmwMT")
    handler = type("Handler", (FTPHandler,), {"authorizer": auth, "passive_ports": None})
    server = ThreadedFTPServer(("127.0.0.1", 0), handler)
    port = server.address[1]
    thread = threading.Thread(
        target=server.serve_forever, kwargs={"timeout": 0.2, "blocking": True}, daemon=True
    )
    thread.start()
    try:
        yield Ftp(port, root, user, password)
    finally:
        server.close_all()
        thread.join(5)

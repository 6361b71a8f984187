"""Moving files to and from the locations a central system names: HTTP(S) and FTP(S).

Blocking (``urllib``, ``ftplib``): callers run these in a worker thread. Every
failure is a :class:`TransferError` with a sentence saying what went wrong;
credentials in a location (``ftp://user:pass@host/dir/``) are used, never logged
(:func:`safe_location`).

Upload target: FTP locations and HTTP locations ending in ``/`` are directories
(the file name is appended); any other HTTP location is the target itself. HTTP
uploads PUT the file; a server that refuses PUT (405, 501) gets a POST of a
``multipart/form-data`` form with the file in the field ``file``.
"""

from __future__ import annotations

import base64
import ftplib
import io
import ssl
import urllib.error
import urllib.parse
import urllib.request
import uuid

MAX_DOWNLOAD = 64 * 1024 * 1024  # a firmware image larger than this is refused


class TransferError(Exception):
    """A transfer failed; the message is a sentence for the log and the audit."""


def safe_location(location: str) -> str:
    """``location`` without its password, for logs."""
    u = urllib.parse.urlsplit(location)
    if u.password is None:
        return location
    host = u.hostname or ""
    if u.port:
        host = f"{host}:{u.port}"
    return urllib.parse.urlunsplit(u._replace(netloc=f"{u.username}:***@{host}"))


def _split(location: str) -> tuple[urllib.parse.SplitResult, str]:
    try:
        u = urllib.parse.urlsplit(location)
        _ = u.port  # raises on a port that is not a number
    except ValueError as err:
        raise TransferError(f"The location {safe_location(location)!r} is not a URL.") from err
    scheme = u.scheme.lower()
    if scheme not in ("http", "https", "ftp", "ftps") or not u.hostname:
        raise TransferError(f"The location {safe_location(location)!r} is not an HTTP or FTP URL.")
    return u, scheme


def check_location(location: str) -> None:
    """Raise :class:`TransferError` unless ``location`` is an HTTP(S) or FTP(S) URL."""
    _split(location)


def _http_request(u: urllib.parse.SplitResult) -> tuple[str, dict[str, str]]:
    host = u.hostname or ""
    if u.port:
        host = f"{host}:{u.port}"
    url = urllib.parse.urlunsplit(u._replace(netloc=host))
    headers = {"User-Agent": "edge-station"}
    if u.username is not None:
        cred = f"{urllib.parse.unquote(u.username)}:{urllib.parse.unquote(u.password or '')}"
        headers["Authorization"] = "Basic " + base64.b64encode(cred.encode()).decode()
    return url, headers


def _context(scheme: str) -> ssl.SSLContext | None:
    if scheme not in ("https", "ftps"):
        return None
    ctx = ssl.create_default_context()
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    return ctx


def upload(location: str, name: str, data: bytes, *, timeout_s: float = 60.0) -> None:
    """Upload ``data`` as ``name`` to ``location`` (see the module docstring)."""
    u, scheme = _split(location)
    if scheme in ("ftp", "ftps"):
        _ftp_upload(u, scheme, name, data, timeout_s)
        return
    if u.path.endswith("/") or not u.path:
        u = u._replace(path=(u.path or "/") + urllib.parse.quote(name))
    url, headers = _http_request(u)
    ctx = _context(scheme)
    try:
        _http_send(url, "PUT", data, {**headers, "Content-Type": "application/zip"}, ctx, timeout_s)
        return
    except urllib.error.HTTPError as err:
        if err.code not in (405, 501):
            raise TransferError(f"The server answered HTTP {err.code} to the upload.") from err
    boundary = uuid.uuid4().hex
    body = (
        (
            f"--{boundary}\r\n"
            f'Content-Disposition: form-data; name="file"; filename="{name}"\r\n'
            "Content-Type: application/octet-stream\r\n\r\n"
        ).encode()
        + data
        + f"\r\n--{boundary}--\r\n".encode()
    )
    form = {**headers, "Content-Type": f"multipart/form-data; boundary={boundary}"}
    try:
        _http_send(url, "POST", body, form, ctx, timeout_s)
    except urllib.error.HTTPError as err:
        raise TransferError(f"The server answered HTTP {err.code} to the upload.") from err


def _http_send(
    url: str,
    method: str,
    body: bytes,
    headers: dict[str, str],
    ctx: ssl.SSLContext | None,
    timeout_s: float,
) -> None:
    req = urllib.request.Request(url, data=body, method=method, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=timeout_s, context=ctx) as resp:
            resp.read(65536)
    except urllib.error.HTTPError:
        raise
    except (urllib.error.URLError, OSError, ValueError) as err:
        reason = getattr(err, "reason", err)
        raise TransferError(f"The upload server could not be reached: {reason}.") from err


def _ftp_connect(u: urllib.parse.SplitResult, scheme: str, timeout_s: float) -> ftplib.FTP:
    ftp: ftplib.FTP = (
        ftplib.FTP_TLS(context=_context(scheme), timeout=timeout_s)
        if scheme == "ftps"
        else ftplib.FTP(timeout=timeout_s)
    )
    ftp.connect(u.hostname or "", u.port or 21)
    user = urllib.parse.unquote(u.username) if u.username else "anonymous"
    ftp.login(user, urllib.parse.unquote(u.password or ""))
    if isinstance(ftp, ftplib.FTP_TLS):
        ftp.prot_p()
    ftp.set_pasv(True)
    return ftp


def _ftp_upload(
    u: urllib.parse.SplitResult, scheme: str, name: str, data: bytes, timeout_s: float
) -> None:
    try:
        ftp = _ftp_connect(u, scheme, timeout_s)
        try:
            path = urllib.parse.unquote(u.path)
            if path not in ("", "/"):
                ftp.cwd(path)
            ftp.storbinary(f"STOR {name}", io.BytesIO(data))
        finally:
            try:
                ftp.quit()
            except (*ftplib.all_errors,):
                ftp.close()
    except (*ftplib.all_errors,) as err:
        raise TransferError(f"The FTP upload failed: {err}.") from err


def download(location: str, *, timeout_s: float = 60.0, limit: int = MAX_DOWNLOAD) -> bytes:
    """The file at ``location`` (HTTP(S) GET or FTP(S) RETR), at most ``limit`` bytes."""
    u, scheme = _split(location)
    if scheme in ("ftp", "ftps"):
        return _ftp_download(u, scheme, timeout_s, limit)
    url, headers = _http_request(u)
    req = urllib.request.Request(url, method="GET", headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=timeout_s, context=_context(scheme)) as resp:
            data: bytes = resp.read(limit + 1)
    except urllib.error.HTTPError as err:
        raise TransferError(f"The server answered HTTP {err.code} to the download.") from err
    except (urllib.error.URLError, OSError, ValueError) as err:
        reason = getattr(err, "reason", err)
        raise TransferError(f"The download server could not be reached: {reason}.") from err
    if len(data) > limit:
        raise TransferError(f"The file is larger than {limit} bytes.")
    return data


def _ftp_download(u: urllib.parse.SplitResult, scheme: str, timeout_s: float, limit: int) -> bytes:
    buf = io.BytesIO()

    def take(chunk: bytes) -> None:
        buf.write(chunk)
        if buf.tell() > limit:
            raise TransferError(f"The file is larger than {limit} bytes.")

    try:
        ftp = _ftp_connect(u, scheme, timeout_s)
        try:
            ftp.retrbinary(f"RETR {urllib.parse.unquote(u.path)}", take)
        finally:
            try:
                ftp.quit()
            except (*ftplib.all_errors,):
                ftp.close()
    except (*ftplib.all_errors,) as err:
        raise TransferError(f"The FTP download failed: {err}.") from err
    return buf.getvalue()

"""Small request/response value types shared by the protocol modules."""

from __future__ import annotations

import json
import mimetypes
from collections.abc import Callable
from dataclasses import dataclass, field
from email.message import Message
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from .store import FileEntry

if TYPE_CHECKING:
    from .server import LocalHub


@dataclass
class Request:
    method: str
    raw_path: str  # percent-encoded path, without query
    query: dict[str, str]
    headers: Message
    hub: LocalHub

    @property
    def token(self) -> str | None:
        auth = self.headers.get("Authorization") or ""
        if auth.lower().startswith("bearer "):
            return auth[7:].strip() or None
        cookie = self.headers.get("Cookie") or ""
        for part in cookie.split(";"):
            name, _, value = part.strip().partition("=")
            if name == "m_session_id" and value:
                return value
        return None

    @property
    def authorized(self) -> bool:
        return self.hub.token is not None and self.token == self.hub.token

    @property
    def range_header(self) -> str | None:
        return self.headers.get("Range")


@dataclass
class Response:
    status: int
    headers: list[tuple[str, str]] = field(default_factory=list)
    body: bytes = b""
    file: FileEntry | None = None  # when set, the body is file[start:start+length]
    start: int = 0
    length: int = 0
    attribution: tuple[str, str] | None = None  # (repo_id, path) for per-file byte counters

    @property
    def content_length(self) -> int:
        return self.length if self.file is not None else len(self.body)


@dataclass
class Route:
    name: str
    handler: Callable[[], Response]
    error: Callable[[int, str, dict[str, str] | None], Response]


def json_response(status: int, payload: Any, headers: list[tuple[str, str]] | None = None) -> Response:
    body = json.dumps(payload, ensure_ascii=False).encode("utf-8")
    return Response(status, [("Content-Type", "application/json; charset=utf-8"), *(headers or [])], body)


def header_safe(text: str) -> str:
    """Headers must be latin-1: percent-encode anything else."""
    return quote(text, safe=" !#$&'()*+,-./:;<=>?@[]^_`{|}~")


def content_disposition(path: str) -> str:
    name = path.rsplit("/", 1)[-1]
    ascii_name = name.encode("ascii", "replace").decode("ascii").replace('"', "_").replace("?", "_")
    return f"attachment; filename*=UTF-8''{quote(name)}; filename=\"{ascii_name}\";"


def guess_type(path: str) -> str:
    return mimetypes.guess_type(path)[0] or "application/octet-stream"


def parse_range(header: str | None, size: int) -> tuple[int, int] | None | str:
    """Return (start, end_inclusive), None when absent/ignored, or "unsatisfiable"."""
    if not header:
        return None
    header = header.strip()
    if not header.lower().startswith("bytes=") or "," in header:
        return None
    spec = header[6:].strip()
    first, sep, last = spec.partition("-")
    if not sep:
        return None
    try:
        if first == "":
            n = int(last)
            if n <= 0:
                return "unsatisfiable"
            start, end = max(0, size - n), size - 1
        else:
            start = int(first)
            end = int(last) if last else size - 1
    except ValueError:
        return None
    if start < 0 or start >= size or end < start:
        return "unsatisfiable"
    return start, min(end, size - 1)


def file_response(
    req: Request,
    entry: FileEntry,
    headers: list[tuple[str, str]],
    attribution: tuple[str, str] | None,
    error: Callable[[int, str, dict[str, str] | None], Response],
) -> Response:
    """200 / 206 / 416 for a file body, honouring a single ``Range``."""
    base = [
        ("Accept-Ranges", "bytes"),
        ("Content-Type", guess_type(entry.path)),
        ("Content-Disposition", content_disposition(entry.path)),
        *headers,
    ]
    rng = parse_range(req.range_header, entry.size)
    if rng == "unsatisfiable":
        resp = error(416, "Requested Range Not Satisfiable", None)
        resp.headers.append(("Content-Range", f"bytes */{entry.size}"))
        return resp
    if rng is None:
        return Response(200, base, file=entry, start=0, length=entry.size, attribution=attribution)
    start, end = rng  # type: ignore[misc]
    base.append(("Content-Range", f"bytes {start}-{end}/{entry.size}"))
    return Response(206, base, file=entry, start=start, length=end - start + 1, attribution=attribution)

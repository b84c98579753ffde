"""RunPodProxy: a loopback HTTP proxy in front of a real S3 server (moto) that behaves like RunPod's S3 API
where it matters to `push`, and counts what clients send.

Limits, as https://docs.runpod.io/storage/s3-api documents them: a PutObject body over ``put_limit`` bytes
answers 400 EntityTooLarge; DeleteObjects and presigned URLs answer 501 NotImplemented.
Faults: a 502 every ``fail_every``-th request (after its body was read, as a gateway answers); every
``drop_every``-th request with a body loses its connection half-way through the body; HeadObject answers 404
``lag_heads`` times after an object was written (an upload that returned success, whose object then answered
404); ``keep_metadata=False`` drops x-amz-meta-* from answers (a store without user metadata);
``hold_parts_after=N`` lets N UploadPart requests through, then holds the others until ``release()`` (to
kill a client in the middle of a multipart upload); ``lose_answers`` names operations whose first answer per
key is lost: the server did the work, the client's connection closes before the answer (a timeout on a slow
CompleteMultipartUpload); ``full=True`` answers every upload 507 Insufficient Storage (a full volume).
Counters: every request as a ``Call`` (operation, key, status, request body bytes received).
"""

from __future__ import annotations

import contextlib
import http.client
import socket
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, unquote, urlsplit

_HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "expect", "proxy-connection", "te", "upgrade"}


@dataclass
class Limits:
    put_limit: int | None = None
    fail_every: int = 0
    drop_every: int = 0
    lag_heads: int = 0
    keep_metadata: bool = True
    hold_parts_after: int | None = None
    lose_answers: tuple[str, ...] = ()
    full: bool = False


@dataclass(frozen=True)
class Call:
    op: str  # the S3 operation, e.g. "PutObject", "UploadPart", "HeadObject"
    key: str
    status: int  # 0: the connection was dropped
    body_bytes: int  # request body bytes received, also for refused and dropped requests
    region: str  # from the signature's credential scope


def _region(authorization: str) -> str:
    """AWS4-HMAC-SHA256 Credential=KEY/DATE/REGION/s3/aws4_request, ... -> REGION"""
    scope = authorization.partition("Credential=")[2].split(",")[0].split("/")
    return scope[2] if len(scope) > 2 else ""


def operation(method: str, key: str, query: dict) -> str:
    """The S3 operation of a path-style request."""
    if "X-Amz-Signature" in query:
        return "Presigned"
    if method == "POST":
        if "delete" in query:
            return "DeleteObjects"
        return "CreateMultipartUpload" if "uploads" in query else "CompleteMultipartUpload"
    if not key:
        bucket_ops = {"HEAD": "HeadBucket", "PUT": "CreateBucket", "DELETE": "DeleteBucket"}
        return "ListMultipartUploads" if "uploads" in query else bucket_ops.get(method, "ListObjects")
    if method == "PUT":
        return "UploadPart" if "uploadId" in query else "PutObject"
    if method == "GET":
        return "ListParts" if "uploadId" in query else "GetObject"
    if method == "DELETE":
        return "AbortMultipartUpload" if "uploadId" in query else "DeleteObject"
    return "HeadObject"


def _error_xml(code: str, message: str) -> bytes:
    return (
        f'<?xml version="1.0" encoding="UTF-8"?><Error><Code>{code}</Code><Message>{message}</Message></Error>'.encode()
    )


@dataclass
class _State:
    limits: Limits = field(default_factory=Limits)
    calls: list[Call] = field(default_factory=list)
    requests: int = 0
    bodies: int = 0
    parts_passed: int = 0
    held: int = 0
    lagging: dict[str, int] = field(default_factory=dict)
    lost: set[tuple[str, str]] = field(default_factory=set)
    release: threading.Event = field(default_factory=threading.Event)


class RunPodProxy:
    def __init__(self, upstream: tuple[str, int]):
        self.upstream = upstream
        self._lock = threading.Lock()
        self._state = _State()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self._server.daemon_threads = True
        self._server.proxy = self  # type: ignore[attr-defined]
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def start(self) -> RunPodProxy:
        self._thread = threading.Thread(target=self._server.serve_forever, name="runpod-proxy", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self.release()
        self._server.shutdown()
        self._server.server_close()

    def reset(self, limits: Limits | None = None) -> None:
        self.release()
        with self._lock:
            self._state = _State(limits or Limits())

    @property
    def limits(self) -> Limits:
        return self._state.limits

    def release(self) -> None:
        """Let held UploadPart requests go: their connections are closed without an answer."""
        self._state.release.set()

    # -- counters -------------------------------------------------------------------------------------
    @property
    def calls(self) -> list[Call]:
        with self._lock:
            return list(self._state.calls)

    @property
    def held(self) -> int:
        return self._state.held

    def count(self, op: str, status: int | None = None) -> int:
        return sum(1 for c in self.calls if c.op == op and (status is None or c.status == status))

    def body_bytes(self, *ops: str, key: str | None = None) -> int:
        return sum(c.body_bytes for c in self.calls if (not ops or c.op in ops) and (key is None or c.key == key))

    # -- what the handler asks ------------------------------------------------------------------------
    def _admit(self, op: str, has_body: bool) -> tuple[bool, bool]:
        """(drop this request's connection mid-body, answer it 502)."""
        with self._lock:
            state = self._state
            state.requests += 1
            state.bodies += has_body
            limits = state.limits
            drop = has_body and limits.drop_every > 0 and state.bodies % limits.drop_every == 0
            fail = not drop and limits.fail_every > 0 and state.requests % limits.fail_every == 0
            return drop, fail

    def _hold(self, op: str) -> bool:
        """Whether this UploadPart must wait for release() (and then be dropped)."""
        with self._lock:
            state = self._state
            if op != "UploadPart" or state.limits.hold_parts_after is None:
                return False
            if state.parts_passed < state.limits.hold_parts_after:
                state.parts_passed += 1
                return False
            state.held += 1
            return True

    def _lagging(self, op: str, key: str) -> bool:
        with self._lock:
            left = self._state.lagging.get(key, 0)
            if op != "HeadObject" or not left:
                return False
            self._state.lagging[key] = left - 1
            return True

    def _lose(self, op: str, key: str) -> bool:
        with self._lock:
            if op not in self._state.limits.lose_answers or (op, key) in self._state.lost:
                return False
            self._state.lost.add((op, key))
            return True

    def _written(self, key: str) -> None:
        with self._lock:
            if self._state.limits.lag_heads:
                self._state.lagging[key] = self._state.limits.lag_heads

    def _record(self, call: Call, state: _State) -> None:
        """Into the counters of the test that sent the request (a held one may end after a reset)."""
        with self._lock:
            state.calls.append(call)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "RunPodProxy/1.0"
    timeout = 60

    def log_message(self, format: str, *args) -> None:  # noqa: A002 - stdlib signature
        pass

    def do_GET(self) -> None:
        self._handle("GET")

    def do_HEAD(self) -> None:
        self._handle("HEAD")

    def do_PUT(self) -> None:
        self._handle("PUT")

    def do_POST(self) -> None:
        self._handle("POST")

    def do_DELETE(self) -> None:
        self._handle("DELETE")

    def _handle(self, method: str) -> None:
        try:
            self._proxy(method)
        except (ConnectionError, TimeoutError):  # the client went away (killed, or gave up): nothing to answer
            self.close_connection = True

    def handle(self) -> None:
        with contextlib.suppress(ConnectionError, TimeoutError):  # the client went away between two requests
            super().handle()

    def _proxy(self, method: str) -> None:
        proxy: RunPodProxy = self.server.proxy  # type: ignore[attr-defined]
        state = proxy._state
        split = urlsplit(self.path)
        query = parse_qs(split.query, keep_blank_values=True)
        key = unquote(split.path).lstrip("/").partition("/")[2]
        op = operation(method, key, query)
        length = int(self.headers.get("Content-Length") or 0)
        chunked = "chunked" in self.headers.get("Transfer-Encoding", "").lower()
        region = _region(self.headers.get("Authorization", ""))
        drop, fail = proxy._admit(op, length > 0 or chunked)
        if drop:
            received = len(self.rfile.read(length // 2))
            proxy._record(Call(op, key, 0, received, region), state)
            self.close_connection = True
            self.connection.shutdown(socket.SHUT_RDWR)
            return
        body = self._read_chunked() if chunked else self.rfile.read(length)
        call = lambda status: proxy._record(Call(op, key, status, len(body), region), state)  # noqa: E731
        if op in ("DeleteObjects", "Presigned"):
            call(501)
            self._answer(501, _error_xml("NotImplemented", f"{op} is not supported"), "application/xml")
        elif fail:
            call(502)
            self._answer(502, b"<html><body><h1>502 Bad Gateway</h1></body></html>", "text/html")
        elif op in ("PutObject", "UploadPart") and proxy.limits.full:
            call(507)
            self._answer(507, _error_xml("InsufficientStorage", "No space left on the volume"), "application/xml")
        elif op == "PutObject" and proxy.limits.put_limit is not None and len(body) > proxy.limits.put_limit:
            call(400)
            message = "Your proposed upload exceeds the maximum allowed size"
            self._answer(400, _error_xml("EntityTooLarge", message), "application/xml")
        elif proxy._hold(op):
            state.release.wait()
            call(0)
            self.close_connection = True
        elif proxy._lagging(op, key):
            call(404)
            self._answer(404, b"", "application/xml")
        else:
            status = self._forward(method, body, proxy, call, lose=proxy._lose(op, key))
            if status == 200 and op in ("PutObject", "CompleteMultipartUpload"):
                proxy._written(key)

    def _read_chunked(self) -> bytes:
        parts = []
        while True:
            size = int(self.rfile.readline().split(b";")[0].strip(), 16)
            if size == 0:
                while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                    pass
                return b"".join(parts)
            parts.append(self.rfile.read(size))
            self.rfile.readline()

    def _answer(self, status: int, body: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _forward(self, method: str, body: bytes, proxy: RunPodProxy, call, lose: bool) -> int:
        """Send the request to the S3 server and its answer back; `call(status)` records it in between (the
        server did the work even if the client is gone before the answer reaches it)."""
        headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP_BY_HOP}
        if body or method in ("PUT", "POST"):
            headers["Content-Length"] = str(len(body))
        upstream = http.client.HTTPConnection(*proxy.upstream, timeout=120)
        try:
            upstream.request(method, self.path, body=body, headers=headers)
            response = upstream.getresponse()
            data = response.read()
        finally:
            upstream.close()
        call(response.status)
        if lose:
            self.close_connection = True
            self.connection.shutdown(socket.SHUT_RDWR)
            return response.status
        self.send_response(response.status, response.reason)
        for name, value in response.getheaders():
            lower = name.lower()
            if lower in _HOP_BY_HOP or lower == "content-length" and method != "HEAD":
                continue
            if lower.startswith("x-amz-meta-") and not proxy.limits.keep_metadata:
                continue
            self.send_header(name, value)
        if method != "HEAD":
            self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if method != "HEAD":
            self.wfile.write(data)
        return response.status

"""LocalHub: a loopback-only fake of huggingface.co and modelscope.cn for tests.

Two stdlib ``ThreadingHTTPServer`` instances (HTTP/1.1, keep-alive) on 127.0.0.1:

* the *hub* server (``hub.url``) speaks both the Hugging Face and the ModelScope protocols;
  point ``HF_ENDPOINT`` and ``MODELSCOPE_ENDPOINT`` at it;
* the *cdn* server (``hub.cdn_url``, another port = another origin) serves LFS blobs by sha256,
  like cdn-lfs.huggingface.co / OSS. HF resolve of an LFS file answers ``302`` to it (as
  huggingface.co does), so clients must follow a cross-origin redirect.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import socket
import threading
import time
import traceback
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qsl, quote, unquote, unquote_plus, urlsplit

from . import hf_protocol, ms_protocol
from .faults import Answer, BodyPlan, Faults
from .http_types import Request, Response, Route, file_response, json_response
from .store import DEFAULT_LFS_THRESHOLD, HF, MS, FileEntry, Repo, RepoStore

__all__ = ["LocalHub", "RequestRecord", "HF", "MS"]

_CHUNK = 64 * 1024
_LOOPBACK = "127.0.0.1"


@dataclass(frozen=True)
class RequestRecord:
    method: str
    path: str  # decoded path + query
    route: str
    status: int
    range: str | None
    bytes_sent: int  # body bytes actually written
    server: str  # "hub" or "cdn"
    raw_path: str = ""
    aborted: bool = False
    credentials: bool = False  # an Authorization header or session cookie came with it


def _cdn_error(status: int, message: str, extra: dict[str, str] | None = None) -> Response:
    return json_response(status, {"error": message}, list((extra or {}).items()))


def _tampered(resp: Response, fn) -> Response:
    """A JSON answer replaced by what `fn` makes of its payload (a hostile hub's answer)."""
    if resp.file is not None or not resp.body:
        return resp
    headers = [(k, v) for k, v in resp.headers if k.lower() != "content-type"]
    return json_response(resp.status, fn(json.loads(resp.body)), headers)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 256

    def __init__(self, addr: tuple[str, int], hub: LocalHub, role: str) -> None:
        self.hub = hub
        self.role = role
        super().__init__(addr, _Handler)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "LocalHub/1.0"
    sys_version = ""
    timeout = 60  # idle keep-alive connections are closed after this many seconds
    # TCP_NODELAY, as real hubs and CDNs send: with Nagle on, the body's first segment waits for the client's
    # delayed ACK of the headers, which adds 40 ms to every request on a reused connection but the first
    disable_nagle_algorithm = True
    server: _Server

    def setup(self) -> None:
        super().setup()
        self.server.hub._track(self.connection, add=True)

    def finish(self) -> None:
        try:
            super().finish()
        except OSError:
            pass
        finally:
            self.server.hub._track(self.connection, add=False)

    def log_message(self, format: str, *args) -> None:  # noqa: A002 - stdlib signature
        pass

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_HEAD(self) -> None:
        self._dispatch("HEAD")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def do_PUT(self) -> None:
        self._dispatch("PUT")

    def do_DELETE(self) -> None:
        self._dispatch("DELETE")

    # ------------------------------------------------------------------------------------------
    def _route(self, req: Request) -> Route | None:
        if self.server.role == "cdn":
            segs = req.raw_path.split("/")
            if len(segs) == 3 and segs[1] == "_cdn" and req.method in ("GET", "HEAD"):
                return Route("cdn.blob", lambda: self._cdn_blob(req, segs[2]), _cdn_error)
            return None
        return hf_protocol.route(req) or ms_protocol.route(req)

    def _cdn_blob(self, req: Request, sha256: str) -> Response:
        entry = req.hub.store.blob(sha256)
        if entry is None:
            return _cdn_error(404, "NoSuchKey")
        if float(req.query.get("Expires", "inf")) < time.time():  # a signed link past its time, as S3 answers it
            return _cdn_error(403, "AccessDenied: Request has expired")
        repo_id, path = req.query.get("repo"), req.query.get("path")
        attribution = (repo_id, path) if repo_id and path else None
        headers = [("ETag", f'"{sha256}"'), ("X-Linked-ETag", f'"{sha256}"'), ("Cache-Control", "max-age=3600")]
        return file_response(req, entry, headers, attribution, _cdn_error)

    def _dispatch(self, method: str) -> None:
        hub = self.server.hub
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            length = 0
        if length > 0:
            self.rfile.read(length)
        split = urlsplit(self.path)
        query = dict(parse_qsl(split.query, keep_blank_values=True))
        req = Request(method, split.path, query, self.headers, hub)
        target = unquote(split.path) + ("?" + unquote_plus(split.query) if split.query else "")

        route = self._route(req)
        route_name = route.name if route else f"{self.server.role}.unknown"
        hub._in_flight(+1)
        if hub.faults.latency > 0:
            hub._sleep(hub.faults.latency)
        answer = hub.faults.take_answer(route_name, target)
        if answer is not None and answer.hang:
            hub._sleep(answer.hang)
        try:
            fail = hub.faults.take_fail(route_name, target)
            if route is None:
                resp = json_response(404, {"error": "Not Found"})
            elif fail is not None:
                extra = {"Retry-After": str(fail.retry_after)} if fail.retry_after is not None else None
                resp = route.error(fail.status, fail.message, extra)
            else:
                resp = route.handler()
                if answer is not None and answer.tamper is not None:
                    resp = _tampered(resp, answer.tamper)
        except Exception:  # pragma: no cover - surfaced through hub.server_errors
            tb = traceback.format_exc()
            hub.server_errors.append(tb)
            resp = json_response(500, {"error": "internal error in LocalHub", "traceback": tb})

        sent, aborted = 0, False
        try:
            sent, aborted = self._send(resp, method, route_name, target, answer)
        except (TimeoutError, ConnectionError, BrokenPipeError, OSError):
            self.close_connection = True
            aborted = True
        finally:
            hub._in_flight(-1)
            hub._record(
                RequestRecord(
                    method=method,
                    path=target,
                    route=route_name,
                    status=resp.status,
                    range=self.headers.get("Range"),
                    bytes_sent=sent,
                    server=self.server.role,
                    raw_path=self.path,
                    aborted=aborted,
                    credentials=bool(self.headers.get("Authorization") or self.headers.get("Cookie")),
                ),
                resp.attribution,
            )

    def _send(
        self, resp: Response, method: str, route_name: str, target: str, answer: Answer | None
    ) -> tuple[int, bool]:
        if answer is not None and answer.endless is not None:
            return self._send_endless(*answer.endless)
        drip = answer.drip if answer is not None else None
        self.send_response(resp.status)
        for key, value in resp.headers:
            self.send_header(key, value)
        self.send_header("Content-Length", str(resp.content_length))
        if drip and answer.drip_headers:
            self._headers_buffer.append(b"\r\n")
            head, self._headers_buffer = b"".join(self._headers_buffer), []
            self._drip(head, drip)
        else:
            self.end_headers()
        if method == "HEAD" or resp.status in (204, 304) or resp.content_length == 0:
            return 0, False
        if resp.file is None:
            if drip:
                return self._drip(resp.body, drip), False
            self.wfile.write(resp.body)
            return len(resp.body), False
        hub = self.server.hub
        plan = hub.faults.take_body_plan(route_name, target)
        bandwidth = drip or hub.faults.bandwidth
        if plan.drop_after is None and plan.stall_after is None and not bandwidth and resp.file.disk_path:
            with open(resp.file.disk_path, "rb") as f:
                sent = self.connection.sendfile(f, resp.start, resp.length)
            return sent, sent < resp.length
        return self._write_file(resp.file, resp.start, resp.length, plan, bandwidth)

    def _write_file(
        self, entry: FileEntry, start: int, length: int, plan: BodyPlan, bandwidth: int | None
    ) -> tuple[int, bool]:
        hub = self.server.hub
        chunk = _CHUNK if not bandwidth else max(1, min(_CHUNK, int(bandwidth) // 20))
        fh = open(entry.disk_path, "rb") if entry.disk_path is not None else None  # noqa: SIM115
        try:
            if fh is not None:
                fh.seek(start)
            sent, stalled, t0 = 0, False, time.monotonic()
            while sent < length:
                if hub._stopping.is_set():
                    self._abort()
                    return sent, True
                if plan.stall_after is not None and not stalled and sent >= plan.stall_after:
                    stalled = True
                    hub._sleep(plan.stall_seconds)
                    t0 = time.monotonic() - (sent / bandwidth if bandwidth else 0)
                n = min(chunk, length - sent)
                if plan.stall_after is not None and not stalled and sent < plan.stall_after < sent + n:
                    n = plan.stall_after - sent
                drop_now = plan.drop_after is not None and sent + n >= plan.drop_after
                if drop_now:
                    n = max(0, plan.drop_after - sent)  # type: ignore[operator]
                if n:
                    if fh is not None:
                        data = fh.read(n)
                    else:
                        assert entry.data is not None
                        data = entry.data[start + sent : start + sent + n]
                    self.wfile.write(data)
                    sent += len(data)
                if drop_now:
                    self._abort()
                    return sent, True
                if bandwidth:
                    delay = t0 + sent / bandwidth - time.monotonic()
                    if delay > 0:
                        hub._sleep(delay)
            return sent, False
        finally:
            if fh is not None:
                fh.close()

    def _drip(self, data: bytes, rate: float) -> int:
        """Send `data` at `rate` bytes/s, in pieces at most 20 times a second."""
        hub = self.server.hub
        step, sent = max(1, int(rate / 20)), 0
        while sent < len(data) and not hub._stopping.is_set():
            piece = data[sent : sent + step]
            self.wfile.write(piece)
            sent += len(piece)
            hub._sleep(len(piece) / rate)
        return sent

    def _send_endless(self, start: bytes, repeat: bytes) -> tuple[int, bool]:
        """A 200 whose body never ends (no length, no chunks): sent until the client hangs up."""
        hub = self.server.hub
        self.close_connection = True
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Connection", "close")
        self.end_headers()
        block, sent = repeat * max(1, _CHUNK // len(repeat)), 0
        try:
            self.wfile.write(start)
            sent += len(start)
            while not hub._stopping.is_set():
                self.wfile.write(block)
                sent += len(block)
        except OSError:
            pass
        return sent, True

    def _abort(self) -> None:
        self.close_connection = True
        with contextlib.suppress(OSError):
            self.connection.shutdown(socket.SHUT_RDWR)


class LocalHub:
    """Fake Hugging Face + ModelScope hub on 127.0.0.1.

    >>> with LocalHub() as hub:
    ...     sha = hub.add_repo("huggingface", "org/model", {"config.json": b"{}"})
    ...     # HF_ENDPOINT=hub.url, MODELSCOPE_ENDPOINT=hub.url
    """

    def __init__(
        self,
        *,
        port: int = 0,
        cdn_port: int = 0,
        token: str | None = "hub-test-token",
        lfs_threshold: int = DEFAULT_LFS_THRESHOLD,
        hf_lfs_redirect: bool = True,
        ms_lfs_redirect: bool = True,
        hf_tree_page_size: int = 1000,
        hf_siblings_limit: int | None = None,
        ms_files_limit: int | None = 3000,
    ) -> None:
        self.token = token
        self.hf_lfs_redirect = hf_lfs_redirect
        self.ms_lfs_redirect = ms_lfs_redirect
        self.hf_tree_page_size = hf_tree_page_size
        self.hf_siblings_limit = hf_siblings_limit  # huggingface.co may cut `siblings` short in large repos
        self.ms_files_limit = ms_files_limit
        self.store = RepoStore(lfs_threshold=lfs_threshold)
        self.faults = Faults()
        self.requests: Counter[tuple[str, str]] = Counter()
        self.log: list[RequestRecord] = []
        self.bytes_by_file: Counter[tuple[str, str]] = Counter()
        self.total_bytes_sent = 0
        self.peak_concurrency = 0  # most requests served at once (hub + CDN) since the counters were reset
        self._serving = 0
        self.server_errors: list[str] = []
        self._port, self._cdn_port = port, cdn_port
        self.cdn_front: str | None = None
        self.cdn_link_seconds: int | None = None  # how long a redirect to the CDN stays valid (None: for ever)
        self._servers: list[_Server] = []
        self._threads: list[threading.Thread] = []
        self._conns: set[socket.socket] = set()
        self._lock = threading.Lock()
        self._stopping = threading.Event()

    # -- lifecycle -------------------------------------------------------------------------------
    def start(self) -> LocalHub:
        if self._servers:
            return self
        self._stopping.clear()
        for role, port in (("hub", self._port), ("cdn", self._cdn_port)):
            srv = _Server((_LOOPBACK, port), self, role)
            thread = threading.Thread(
                target=srv.serve_forever, kwargs={"poll_interval": 0.05}, name=f"LocalHub-{role}", daemon=True
            )
            thread.start()
            self._servers.append(srv)
            self._threads.append(thread)
        return self

    def stop(self) -> None:
        if not self._servers:
            return
        self._stopping.set()
        for srv in self._servers:
            srv.shutdown()
        with self._lock:
            conns = list(self._conns)
        for conn in conns:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
        for srv in self._servers:
            srv.server_close()
        for thread in self._threads:
            thread.join(timeout=5)
        self._servers.clear()
        self._threads.clear()

    def __enter__(self) -> LocalHub:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    @property
    def url(self) -> str:
        """Base URL for HF_ENDPOINT and MODELSCOPE_ENDPOINT (no trailing slash)."""
        return self._base("hub")

    hf_endpoint = url
    ms_endpoint = url

    @property
    def cdn_url(self) -> str:
        """Where LFS redirects point: the CDN server, or `cdn_front` (a proxy in front of it) when set."""
        return self.cdn_front or self._base("cdn")

    def _base(self, role: str) -> str:
        for srv in self._servers:
            if srv.role == role:
                return f"http://{_LOOPBACK}:{srv.server_address[1]}"
        raise RuntimeError("LocalHub is not started")

    # -- repositories ----------------------------------------------------------------------------
    def add_repo(
        self,
        source: str,
        repo_id: str,
        files: Mapping[str, bytes | os.PathLike | str],
        *,
        branch: str | None = None,
        tags: Iterable[str] = (),
        gated: bool = False,
        private: bool = False,
    ) -> str:
        """Create the repo (or add a new commit whose tree is exactly ``files``). Returns the commit sha."""
        return self.store.commit(
            source, repo_id, files, branch=branch, tags=tags, gated=gated, private=private, replace=True
        )

    def commit(
        self,
        source: str,
        repo_id: str,
        files: Mapping[str, bytes | os.PathLike | str | None],
        *,
        branch: str | None = None,
        tags: Iterable[str] = (),
        message: str | None = None,
    ) -> str:
        """New commit on ``branch`` on top of its current tree (a ``None`` value deletes the path)."""
        return self.store.commit(source, repo_id, files, branch=branch, tags=tags, message=message)

    def tag(self, source: str, repo_id: str, tag: str, revision: str | None = None) -> str:
        return self.store.tag(source, repo_id, tag, revision)

    def repo(self, source: str, repo_id: str) -> Repo:
        repo = self.store.get(source, repo_id)
        if repo is None:
            raise KeyError((source, repo_id))
        return repo

    def file(self, source: str, repo_id: str, path: str, revision: str | None = None) -> FileEntry:
        commit = self.repo(source, repo_id).resolve(revision)
        if commit is None:
            raise KeyError(revision)
        return commit.files[path]

    def cdn_location(self, source: str, repo_id: str, entry: FileEntry) -> str:
        expires = 4102444800 if self.cdn_link_seconds is None else math.ceil(time.time()) + self.cdn_link_seconds
        return (
            f"{self.cdn_url}/_cdn/{entry.sha256}?source={source}&repo={quote(repo_id, safe='')}"
            f"&path={quote(entry.path, safe='')}&Expires={expires}"
        )

    # -- counters --------------------------------------------------------------------------------
    def _track(self, conn: socket.socket, *, add: bool) -> None:
        with self._lock:
            if add:
                self._conns.add(conn)
            else:
                self._conns.discard(conn)

    def _record(self, rec: RequestRecord, attribution: tuple[str, str] | None) -> None:
        with self._lock:
            self.requests[(rec.method, rec.route)] += 1
            self.log.append(rec)
            self.total_bytes_sent += rec.bytes_sent
            if attribution is not None:
                self.bytes_by_file[attribution] += rec.bytes_sent

    def _in_flight(self, delta: int) -> None:
        with self._lock:
            self._serving += delta
            self.peak_concurrency = max(self.peak_concurrency, self._serving)

    def count(self, route: str, method: str | None = None) -> int:
        with self._lock:
            return sum(n for (m, r), n in self.requests.items() if r == route and (method is None or m == method))

    def bytes_sent(self, repo_id: str | None = None, path: str | None = None) -> int:
        """Body bytes of file content sent (hub + CDN), optionally filtered by repo / path."""
        with self._lock:
            return sum(
                n
                for (r, p), n in self.bytes_by_file.items()
                if (repo_id is None or r == repo_id) and (path is None or p == path)
            )

    def reset_counters(self) -> None:
        with self._lock:
            self.requests.clear()
            self.log.clear()
            self.bytes_by_file.clear()
            self.total_bytes_sent = 0
            self.peak_concurrency = self._serving

    def reset(self) -> None:
        """Forget repos, faults and counters (the servers keep running)."""
        self.store.clear()
        self.faults.reset()
        self.reset_counters()
        self.server_errors.clear()

    def _sleep(self, seconds: float) -> None:
        self._stopping.wait(max(0.0, seconds))


def make_file(path: Path, size: int, *, seed: int = 0) -> Path:
    """Write a deterministic pseudo-random file of ``size`` bytes without holding it in memory."""
    import hashlib

    path.parent.mkdir(parents=True, exist_ok=True)
    block = hashlib.sha256(str(seed).encode()).digest() * 2048  # 64 KiB
    with open(path, "wb") as f:
        remaining, i = size, 0
        while remaining > 0:
            piece = bytes((b + i) & 0xFF for b in block[:64]) + block[64:]
            f.write(piece[:remaining])
            remaining -= len(piece[:remaining])
            i += 1
    return path

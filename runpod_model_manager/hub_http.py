"""HTTP for every request we send to a hub: sessions whose sockets obey a Deadline, bodies read as they
arrive, and metadata answers fetched whole under connect and read timeouts, one overall deadline and a size cap.

The hub libraries' metadata calls take at most a timeout per read and no limit on the body (an endless JSON
answer grows the process without end), so the downloaders fetch their metadata here and parse it themselves.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator, Mapping

import requests
import urllib3
from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool
from urllib3.poolmanager import ProxyManager

from . import deadline
from .errors import ModelError
from .remote import MalformedMetadata
from .settings import MetadataLimits


class _Watched:
    """Registers the connection's socket with the thread's Deadline: when it is opened, and when the headers
    of a response on a kept-alive connection are awaited."""

    def _new_conn(self):
        sock = super()._new_conn()
        deadline.watch(sock)
        return sock

    def getresponse(self, *args, **kwargs):
        deadline.watch(self.sock)
        return super().getresponse(*args, **kwargs)


class _WatchedHTTPConnection(_Watched, HTTPConnection):
    pass


class _WatchedHTTPSConnection(_Watched, HTTPSConnection):
    pass


class _HTTPPool(HTTPConnectionPool):
    ConnectionCls = _WatchedHTTPConnection


class _HTTPSPool(HTTPSConnectionPool):
    ConnectionCls = _WatchedHTTPSConnection


_POOLS = {"http": _HTTPPool, "https": _HTTPSPool}


class _Adapter(HTTPAdapter):
    def init_poolmanager(self, *args, **kwargs) -> None:
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = _POOLS

    def proxy_manager_for(self, proxy, **kwargs):
        manager = super().proxy_manager_for(proxy, **kwargs)
        if type(manager) is ProxyManager:  # a SOCKS manager keeps its own connection classes
            manager.pool_classes_by_scheme = _POOLS
        return manager


def new_session() -> requests.Session:
    """A requests session whose connections obey the thread's Deadline."""
    session = requests.Session()
    adapter = _Adapter()
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    return session


_ERRORS = (
    (urllib3.exceptions.ReadTimeoutError, requests.exceptions.ConnectionError),
    (urllib3.exceptions.SSLError, requests.exceptions.SSLError),
    (urllib3.exceptions.DecodeError, requests.exceptions.ContentDecodingError),
    (urllib3.exceptions.HTTPError, requests.exceptions.ChunkedEncodingError),
)


def body_chunks(response: requests.Response, size: int) -> Iterator[bytes]:
    """The body of a streamed response as it arrives: each chunk is what the connection had, up to `size`
    bytes, so that a caller sees a trickle (and can judge its rate) instead of waiting for a full chunk.
    Errors are raised as requests' exceptions, as iter_content raises them."""
    try:
        while chunk := response.raw.read1(size, decode_content=True):
            yield chunk
    except urllib3.exceptions.HTTPError as exc:
        raise next(ours for theirs, ours in _ERRORS if isinstance(exc, theirs))(exc) from exc


class HubUnreachable(Exception):
    """No complete answer: the message says why in a few words ("timed out", "ConnectionError")."""


class AnswerTooLarge(Exception):
    """The answer is larger than RPMM_METADATA_MAX_BYTES; the message is a sentence."""


_local = threading.local()


def _session() -> requests.Session:
    session = getattr(_local, "session", None)
    if session is None:
        session = _local.session = new_session()
    return session


def fetch(
    url: str,
    limits: MetadataLimits,
    params: Mapping[str, str] | None = None,
    headers: Mapping[str, str] | None = None,
) -> requests.Response:
    """GET a metadata answer whole. Its body is in `response.content` (whatever the status); raises
    HubUnreachable or AnswerTooLarge."""
    with deadline.Deadline(limits.deadline) as limit:
        try:
            response = _session().get(
                url,
                params=params,
                headers=dict(headers or {}),
                stream=True,
                timeout=(limits.connect_timeout, limits.read_timeout),
            )
            with response:
                response._content = _read(response, limits, limit)
            failure = None
        except requests.RequestException as exc:
            failure = "timed out" if isinstance(exc, requests.Timeout) else type(exc).__name__
    # checked even when all went well: a connection cut at the deadline can end the headers or body early
    if limit.expired:
        raise HubUnreachable(f"no whole answer within {limits.deadline:g} s, RPMM_METADATA_TIMEOUT")
    if failure:
        raise HubUnreachable(failure)
    return response


def fetch_for_model(
    model: str,
    url: str,
    limits: MetadataLimits,
    endpoint: tuple[str, str],
    params: Mapping[str, str] | None = None,
    headers: Mapping[str, str] | None = None,
) -> requests.Response:
    """`fetch` for one model's metadata: a hub that cannot be reached or answers too much fails that model
    (ModelError). `endpoint` is the hub's address and the variable that sets it, named in the error."""
    try:
        return fetch(url, limits, params=params, headers=headers)
    except HubUnreachable as exc:
        address, variable = endpoint
        raise ModelError(model, f"could not reach {address} ({exc}); check the network or {variable}.") from None
    except AnswerTooLarge as exc:
        raise ModelError(model, str(exc)) from None


def _read(response: requests.Response, limits: MetadataLimits, limit: deadline.Deadline) -> bytes:
    too_large = AnswerTooLarge(
        f"the hub's answer is larger than {limits.max_bytes:,} bytes (RPMM_METADATA_MAX_BYTES); refused."
    )
    declared = response.headers.get("Content-Length", "")
    if declared.isdigit() and int(declared) > limits.max_bytes:
        raise too_large
    body = bytearray()
    for chunk in body_chunks(response, 1 << 16):
        body += chunk
        if len(body) > limits.max_bytes:
            raise too_large
        if limit.expired:
            raise requests.Timeout()
    return bytes(body)


def json_of(response: requests.Response):
    """The JSON value of an answer; MalformedMetadata when it is not JSON."""
    try:
        return json.loads(response.content)
    except (ValueError, RecursionError):  # RecursionError: nested deeper than the parser goes
        raise MalformedMetadata("the answer is not JSON") from None

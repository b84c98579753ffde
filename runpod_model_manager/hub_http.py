"""HTTP for every request we send to a hub, straight through urllib3 (`Client`): connections whose sockets
obey a Deadline, file bodies read as they arrive, and metadata answers fetched whole under connect and read
timeouts, one overall deadline and a size cap.

The hub libraries' metadata calls take at most a timeout per read and no limit on the body (an endless JSON
answer grows the process without end), so the downloaders fetch their metadata here and parse it themselves.
"""

from __future__ import annotations

import http.client
import json
import os
import ssl
import threading
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import urlencode, urljoin, urlsplit

import urllib3
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool
from urllib3.poolmanager import PoolManager, ProxyManager

from . import deadline
from .errors import ModelError
from .remote import MalformedMetadata
from .settings import MetadataLimits

RESPONSE_BUFFER = 1 << 15


class _Response(http.client.HTTPResponse):
    """http.client's response, reading its socket through a 32 KiB buffer instead of 8 KiB: the headers and the
    body of a small file then come in one read and are written at once (with 8 KiB, a 20 KB file took two
    reads, two polls and two writes; each system call is also a hand-off of the GIL among the workers)."""

    def __init__(self, sock, *args, **kwargs):
        super().__init__(sock, *args, **kwargs)
        self.fp.close()  # nothing was read through it yet; the socket stays open
        self.fp = sock.makefile("rb", RESPONSE_BUFFER)


class _WatchedHTTPConnection(deadline.WatchedConnection, HTTPConnection):
    response_class = _Response


class _WatchedHTTPSConnection(deadline.WatchedConnection, HTTPSConnection):
    response_class = _Response


class _HTTPPool(HTTPConnectionPool):
    ConnectionCls = _WatchedHTTPConnection


class _HTTPSPool(HTTPSConnectionPool):
    ConnectionCls = _WatchedHTTPSConnection


_POOLS = {"http": _HTTPPool, "https": _HTTPSPool}


MAX_REDIRECTS = 10
_CREDENTIALS = ("authorization", "cookie")
HTTPError = urllib3.exceptions.HTTPError  # what a request or a body read raises when the exchange fails


class Refused(Exception):
    """A redirect or proxy the client will not follow; the message says which."""


class CertificateRefused(Refused):
    """A server whose TLS certificate is not trusted: no retry can help."""

    def __init__(self, origin: tuple[str, str, int | None], problem: str):
        scheme, host, port = origin
        super().__init__(
            f"the TLS certificate of {scheme}://{host}:{port} was refused ({problem}); "
            "set REQUESTS_CA_BUNDLE to the file of the certificate authorities to trust"
        )


class Client:
    """GET requests sent straight through urllib3: requests' Session costs about three times the CPU per
    request (merging settings, reading the proxy variables every time, wrapping answers), and importing it
    a sixth of a warm run's start-up.

    What requests gave is kept: every thread shares keep-alive connections that obey the thread's Deadline;
    proxies come from the environment as requests reads them (HTTP(S)_PROXY, ALL_PROXY, NO_PROXY), looked up
    once per origin; TLS is checked against the CA bundle requests uses (REQUESTS_CA_BUNDLE, CURL_CA_BUNDLE, else
    certifi's). Redirects are followed here, and credentials (Authorization, Cookie) go to the first URL's origin
    only. Bodies are decoded only when asked (`decode`): a file's bytes are checked against its checksum as the
    server sent them.
    """

    def __init__(self, connections: int):
        self.connections = connections  # kept per origin: at least the requests the caller has in flight
        self._managers: dict[tuple[str | None, str], PoolManager] = {}
        self._proxies: dict[tuple[str, str, int | None], str | None] = {}  # origin -> proxy
        self._timeouts: dict[tuple[float, float], urllib3.Timeout] = {}
        self._lock = threading.Lock()
        self._tls = None

    def get(self, url: str, headers: Mapping[str, str], timeout: tuple[float, float], decode: bool = False):
        """The answer to GET `url` (an urllib3 response, body unread, redirects followed) and the URL that gave
        it. Raises HTTPError when the exchange fails, Refused for a redirect it will not follow or a server
        certificate it does not trust."""
        first = origin = _origin(url)
        limits = self._timeout(timeout)
        for hop in range(MAX_REDIRECTS + 1):
            if hop:
                origin = _origin(url)
            sent = headers if origin == first else _without_credentials(headers)
            try:
                response = self._manager(url, origin).urlopen(
                    "GET",
                    url,
                    headers=sent,
                    redirect=False,
                    retries=False,
                    preload_content=False,
                    decode_content=decode,
                    timeout=limits,
                )
            except urllib3.exceptions.SSLError as exc:
                refused = next((a for a in exc.args if isinstance(a, ssl.SSLCertVerificationError)), None)
                if refused is None:
                    raise
                raise CertificateRefused(origin, refused.verify_message) from None
            location = response.get_redirect_location()
            if not location:
                return response, url
            if response.length_remaining is not None and response.length_remaining <= 1 << 16:
                response.drain_conn()  # a short body: the connection is kept for the next request
            discard(response)
            url = urljoin(url, location)
            if urlsplit(url).scheme not in ("http", "https"):
                raise Refused(f"redirected to {url.partition(':')[0]!r} URL, not http(s)")
        raise Refused(f"more than {MAX_REDIRECTS} redirects")

    def _timeout(self, timeout: tuple[float, float]) -> urllib3.Timeout:
        """One urllib3.Timeout per (connect, read) pair: checking its values costs more than the rest of a
        request's set-up (urllib3 copies it for each request; it is never changed)."""
        limits = self._timeouts.get(timeout)
        if limits is None:
            limits = self._timeouts[timeout] = urllib3.Timeout(connect=timeout[0], read=timeout[1])
        return limits

    def _manager(self, url: str, origin: tuple[str, str, int | None]) -> PoolManager:
        proxy = self._proxies.get(origin, False)  # every request after an origin's first: no lock
        if proxy is not False and (manager := self._managers.get((proxy, origin[0]))):
            return manager
        with self._lock:
            if origin not in self._proxies:
                self._proxies[origin] = _proxy_for(url)
            key = (self._proxies[origin], origin[0])
            if key not in self._managers:
                self._managers[key] = self._new_manager(*key)
            return self._managers[key]

    def _new_manager(self, proxy: str | None, scheme: str) -> PoolManager:
        options = {"num_pools": 32, "maxsize": self.connections, "block": False}
        if scheme == "https":
            options["ssl_context"] = self._tls_context()
        if proxy is None:
            manager = PoolManager(**options)
        elif proxy.lower().startswith("socks"):
            try:
                from urllib3.contrib.socks import SOCKSProxyManager
            except ImportError:
                raise Refused(f"the proxy {proxy.partition(':')[0]}:// needs PySocks (pip install pysocks)") from None
            return SOCKSProxyManager(proxy, **options)  # its own connection classes: not under a Deadline
        else:
            from requests.utils import get_auth_from_url

            user, password = get_auth_from_url(proxy)
            auth = urllib3.util.make_headers(proxy_basic_auth=f"{user}:{password}") if user else {}
            manager = ProxyManager(proxy, proxy_headers=auth, **options)
        manager.pool_classes_by_scheme = _POOLS
        return manager

    def _tls_context(self):
        """One context for every connection: loading the CA bundle takes ~20 ms, once, not per connection."""
        if self._tls is None:
            bundle = os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE")
            if not bundle:
                import certifi

                bundle = certifi.where()
            context = urllib3.util.ssl_.create_urllib3_context()
            if os.path.isdir(bundle):
                context.load_verify_locations(capath=bundle)
            else:
                context.load_verify_locations(cafile=bundle)
            self._tls = context
        return self._tls


def discard(response) -> None:
    """Done with an answer: its connection goes back to the pool, closed unless the whole body was read."""
    response.close()
    response.release_conn()


def _without_credentials(headers: Mapping[str, str]) -> dict[str, str]:
    return {k: v for k, v in headers.items() if k.lower() not in _CREDENTIALS}


def _origin(url: str) -> tuple[str, str, int | None]:
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    return scheme, (parts.hostname or ""), parts.port or {"http": 80, "https": 443}.get(scheme)


def _proxy_for(url: str) -> str | None:
    """The proxy requests would use for `url` given the environment (None: none); requests' own functions
    decide, imported only when a proxy is set."""
    if not any(scheme != "no" for scheme in urllib.request.getproxies()):
        return None
    from requests.utils import get_environ_proxies, prepend_scheme_if_needed, select_proxy

    proxy = select_proxy(url, get_environ_proxies(url))
    return prepend_scheme_if_needed(proxy, "http") if proxy else None


class HubUnreachable(Exception):
    """No complete answer: the message says why in a few words ("timed out", "no connection")."""


class AnswerTooLarge(Exception):
    """The answer is larger than RPMM_METADATA_MAX_BYTES; the message is a sentence."""


@dataclass(frozen=True)
class Answer:
    """A metadata answer, read whole (what the downloaders read of requests' Response)."""

    status_code: int
    headers: Mapping[str, str]  # case-insensitive
    content: bytes
    url: str  # the URL that gave it, after redirects

    @property
    def links(self) -> dict[str, dict[str, str]]:
        """The Link header by rel, as requests' Response.links: {"next": {"url": ..., "rel": "next"}, ...}."""
        value = self.headers.get("Link")
        if not value:
            return {}
        from requests.utils import parse_header_links  # imported only for a paginated answer

        return {link.get("rel") or link["url"]: link for link in parse_header_links(value)}


_metadata_client: Client | None = None
_metadata_lock = threading.Lock()


def _client() -> Client:
    global _metadata_client
    with _metadata_lock:
        if _metadata_client is None:
            _metadata_client = Client(connections=8)  # resolved 8 models at once (manager.RESOLVE_WORKERS)
        return _metadata_client


def fetch(
    url: str,
    limits: MetadataLimits,
    params: Mapping[str, str] | None = None,
    headers: Mapping[str, str] | None = None,
) -> Answer:
    """GET a metadata answer whole (whatever the status); raises HubUnreachable, CertificateRefused or
    AnswerTooLarge."""
    if params:
        url = f"{url}{'&' if urlsplit(url).query else '?'}{urlencode(params)}"
    sent = {"Accept-Encoding": "gzip, deflate", **(headers or {})}
    with deadline.Deadline(limits.deadline) as limit:
        try:
            response, answered = _client().get(url, sent, (limits.connect_timeout, limits.read_timeout), decode=True)
            try:
                answer = Answer(response.status, response.headers, _read(response, limits, limit), answered)
            finally:
                discard(response)
            failure = None
        except HTTPError as exc:
            failure = failure_reason(exc)
        except CertificateRefused:
            raise
        except Refused as exc:
            failure = str(exc)
    # checked even when all went well: a connection cut at the deadline can end the headers or body early
    if limit.expired:
        raise HubUnreachable(f"no whole answer within {limits.deadline:g} s, RPMM_METADATA_TIMEOUT")
    if failure:
        raise HubUnreachable(failure)
    return answer


def failure_reason(exc: HTTPError) -> str:
    """What went wrong with a connection, in a few words ("connection refused", "timed out", ...)."""
    # urllib3 makes NewConnectionError (and NameResolutionError under it) a ConnectTimeoutError: asked first, so
    # that a refused connection or an unknown name is not reported as a timeout.
    if isinstance(exc, urllib3.exceptions.NameResolutionError):
        return "its name does not resolve"
    if isinstance(exc, urllib3.exceptions.NewConnectionError):
        cause = exc.__cause__
        return cause.strerror.lower() if isinstance(cause, OSError) and cause.strerror else "no connection"
    if isinstance(exc, urllib3.exceptions.TimeoutError):
        return "timed out"
    return type(exc).__name__


def fetch_for_model(
    model: str,
    url: str,
    limits: MetadataLimits,
    endpoint: tuple[str, str],
    params: Mapping[str, str] | None = None,
    headers: Mapping[str, str] | None = None,
) -> Answer:
    """`fetch` for one model's metadata: a hub that cannot be reached or answers too much fails that model
    (ModelError). `endpoint` is the hub's address and the variable that sets it, named in the error."""
    address, variable = endpoint
    try:
        return fetch(url, limits, params=params, headers=headers)
    except CertificateRefused as exc:
        raise ModelError(model, f"{exc}, or check {variable}.") from None
    except HubUnreachable as exc:
        raise ModelError(model, f"could not reach {address} ({exc}); check the network or {variable}.") from None
    except AnswerTooLarge as exc:
        raise ModelError(model, str(exc)) from None


def _read(response, limits: MetadataLimits, limit: deadline.Deadline) -> bytes:
    too_large = AnswerTooLarge(
        f"the hub's answer is larger than {limits.max_bytes:,} bytes (RPMM_METADATA_MAX_BYTES); refused."
    )
    declared = response.headers.get("Content-Length", "")
    if declared.isdigit() and int(declared) > limits.max_bytes:
        raise too_large
    body = bytearray()
    # what the connection has, as it arrives: a trickle is measured against the deadline between pieces
    while (piece := response.read1(1 << 16)) and not limit.expired:
        body += piece
        if len(body) > limits.max_bytes:
            raise too_large
    return bytes(body)


def json_of(response: Answer):
    """The JSON value of an answer; MalformedMetadata when it is not JSON."""
    try:
        return json.loads(response.content)
    except (ValueError, RecursionError):  # RecursionError: nested deeper than the parser goes
        raise MalformedMetadata("the answer is not JSON") from None

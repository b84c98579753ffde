"""Download `audio_url` without becoming an SSRF proxy.

Only http(s) URLs are fetched. The host is resolved once, every address it resolves to must be public
(not loopback, private, link-local, shared, multicast or reserved, also when an IPv6 address carries an
IPv4 one: mapped, compatible, NAT64 or 6to4), and the connection goes to one of those checked addresses,
so a second DNS answer cannot swap in an internal one. Redirects are followed by hand, each hop checked
the same way. Size is bounded, and the whole fetch (DNS, connect, headers, body, every redirect) sits
under one deadline, however slowly a server sends.
"""

from __future__ import annotations

import http.client
import ipaddress
import os
import socket
import ssl
import threading
from urllib.parse import urljoin, urlsplit

from runpod_model_manager.deadline import Deadline, watch

from .audio import MAX_URL_AUDIO_BYTES
from .errors import InputError

# Testing only: "1" lets audio_url reach loopback/private addresses (a local test server).
ALLOW_PRIVATE_URLS_ENV = "HANDLER_ALLOW_PRIVATE_URLS"

MAX_URL_LENGTH = 2048
MAX_REDIRECTS = 3
SOCKET_TIMEOUT_SECONDS = 10.0  # connect, and each wait for data
DOWNLOAD_TIMEOUT_SECONDS = 120.0  # the whole download, redirects included (256 MB needs 2.2 MB/s)
READ_CHUNK_BYTES = 64 * 1024
REDIRECT_STATUSES = {301, 302, 303, 307, 308}
USER_AGENT = "runpod-model-manager-handler/1"


def private_urls_allowed() -> bool:
    return os.environ.get(ALLOW_PRIVATE_URLS_ENV) == "1"


NAT64_PREFIX = ipaddress.IPv6Network("64:ff9b::/96")  # RFC 6052: the IPv4 address is the last 32 bits


def embedded_ipv4(address: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 one leads to: IPv4-mapped (::ffff:a.b.c.d), IPv4-compatible (::a.b.c.d, which
    covers :: and ::1 too), NAT64 (64:ff9b::a.b.c.d) or 6to4 (2002:AABB:CCDD::)."""
    if address.ipv4_mapped:
        return address.ipv4_mapped
    if address.sixtofour:
        return address.sixtofour
    if int(address) >> 32 == 0 or address in NAT64_PREFIX:
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return None


def is_public_address(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    if isinstance(address, ipaddress.IPv6Address) and (ipv4 := embedded_ipv4(address)) is not None:
        address = ipv4
    return address.is_global and not address.is_multicast


def _split_url(url: str):
    if len(url) > MAX_URL_LENGTH:
        raise InputError(f"audio_url is longer than {MAX_URL_LENGTH} characters.")
    parts = urlsplit(url)
    if parts.scheme.lower() not in ("http", "https"):
        raise InputError("audio_url must be an http or https URL.")
    if not parts.hostname:
        raise InputError("audio_url has no host.")
    if parts.username or parts.password:
        raise InputError("audio_url must not contain credentials.")
    try:
        port = parts.port or (443 if parts.scheme.lower() == "https" else 80)
    except ValueError:
        raise InputError("audio_url has an invalid port.") from None
    return parts, port


def _getaddrinfo(host: str, port: int, deadline: Deadline) -> list:
    """socket.getaddrinfo, given up on at the deadline (the resolver has no timeout of its own to pass)."""
    answer: list = []

    def run() -> None:
        try:
            answer.append(socket.getaddrinfo(host, port, type=socket.SOCK_STREAM))
        except (OSError, UnicodeError) as exc:
            answer.append(exc)

    lookup = threading.Thread(target=run, name="audio-url-dns", daemon=True)
    lookup.start()
    lookup.join(deadline.remaining())
    if not answer:
        raise TimeoutError
    if isinstance(answer[0], BaseException):
        raise InputError(f"The host of audio_url ('{host}') could not be resolved.")
    return answer[0]


def resolve_checked_addresses(host: str, port: int, deadline: Deadline) -> list[str]:
    """Every address `host` resolves to, refused unless all of them are public."""
    infos = _getaddrinfo(host, port, deadline)
    addresses = list(dict.fromkeys(info[4][0] for info in infos))
    if not private_urls_allowed():
        for address in addresses:
            if not is_public_address(ipaddress.ip_address(address.split("%", 1)[0])):
                raise InputError(
                    "audio_url resolves to a loopback, private, link-local or reserved address, which is not allowed."
                )
    return addresses


def _connect(addresses: list[str], port: int, timeout: float) -> socket.socket:
    last_error: OSError | None = None
    for address in addresses:
        try:
            sock = socket.create_connection((address, port), timeout=timeout)
        except OSError as exc:
            last_error = exc
            continue
        watch(sock)  # shut down when the download's deadline passes, whatever it is waiting for
        return sock
    raise last_error or OSError("no address to connect to")


class _PinnedHTTPConnection(http.client.HTTPConnection):
    def __init__(self, host: str, port: int, addresses: list[str], timeout: float):
        super().__init__(host, port, timeout=timeout)
        self._addresses = addresses

    def connect(self):
        self.sock = _connect(self._addresses, self.port, self.timeout)


class _PinnedHTTPSConnection(http.client.HTTPSConnection):
    def __init__(self, host: str, port: int, addresses: list[str], timeout: float):
        self._tls = ssl.create_default_context()
        super().__init__(host, port, timeout=timeout, context=self._tls)
        self._addresses = addresses

    def connect(self):
        # Certificate and SNI use the URL's host name; the TCP connection goes to the checked address.
        self.sock = self._tls.wrap_socket(_connect(self._addresses, self.port, self.timeout), server_hostname=self.host)


def _read_body(response: http.client.HTTPResponse) -> bytes:
    too_large = f"The audio at audio_url is larger than the {MAX_URL_AUDIO_BYTES // 2**20} MB limit."
    declared = response.getheader("Content-Length")
    if declared and declared.isdigit() and int(declared) > MAX_URL_AUDIO_BYTES:
        raise InputError(too_large)
    body = bytearray()
    while chunk := response.read1(READ_CHUNK_BYTES):
        body += chunk
        if len(body) > MAX_URL_AUDIO_BYTES:
            raise InputError(too_large)
    return bytes(body)


def download(url: str) -> bytes:
    with Deadline(DOWNLOAD_TIMEOUT_SECONDS) as deadline:
        try:
            body = _download(url, deadline)
        except (TimeoutError, OSError, http.client.HTTPException, InputError) as exc:
            if deadline.expired or isinstance(exc, TimeoutError):
                raise InputError("Downloading audio_url timed out.") from None
            if isinstance(exc, InputError):
                raise
            reason = str(exc).splitlines()[0].rstrip(".") if str(exc) else type(exc).__name__
            raise InputError(f"Downloading audio_url failed ({reason}).") from None
    if deadline.expired:  # the connection was cut at the deadline: the headers or the body may have ended early
        raise InputError("Downloading audio_url timed out.")
    return body


def _download(url: str, deadline: Deadline) -> bytes:
    for _hop in range(MAX_REDIRECTS + 1):
        parts, port = _split_url(url)
        addresses = resolve_checked_addresses(parts.hostname, port, deadline)
        connection_type = _PinnedHTTPSConnection if parts.scheme.lower() == "https" else _PinnedHTTPConnection
        timeout = max(0.001, min(SOCKET_TIMEOUT_SECONDS, deadline.remaining()))
        connection = connection_type(parts.hostname, port, addresses, timeout)
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        try:
            connection.request("GET", target, headers={"User-Agent": USER_AGENT, "Accept": "*/*"})
            response = connection.getresponse()
            if response.status in REDIRECT_STATUSES and response.getheader("Location"):
                url = urljoin(url, response.getheader("Location"))
                continue
            if response.status != 200:
                raise InputError(f"Downloading audio_url failed with HTTP status {response.status}.")
            return _read_body(response)
        finally:
            connection.close()
    raise InputError(f"audio_url redirected more than {MAX_REDIRECTS} times.")

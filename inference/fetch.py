"""Download `audio_url` without becoming an SSRF proxy.

Only http(s) URLs are fetched. The host is resolved once, every address it resolves to must be public
(not loopback, private, link-local, shared, multicast or reserved), and the connection goes to one of
those checked addresses, so a second DNS answer cannot swap in an internal one. Redirects are
followed by hand, each hop checked the same way. Size and time are bounded.
"""

from __future__ import annotations

import http.client
import ipaddress
import os
import socket
import ssl
import time
from urllib.parse import urljoin, urlsplit

from .audio import MAX_AUDIO_BYTES
from .errors import InputError

# Testing only: "1" lets audio_url reach loopback/private addresses (a local test server).
ALLOW_PRIVATE_URLS_ENV = "HANDLER_ALLOW_PRIVATE_URLS"

MAX_URL_LENGTH = 2048
MAX_REDIRECTS = 3
SOCKET_TIMEOUT_SECONDS = 10.0  # connect, and each wait for data
DOWNLOAD_TIMEOUT_SECONDS = 60.0  # the whole download, redirects included
READ_CHUNK_BYTES = 64 * 1024
REDIRECT_STATUSES = {301, 302, 303, 307, 308}
USER_AGENT = "runpod-model-manager-handler/1"


def private_urls_allowed() -> bool:
    return os.environ.get(ALLOW_PRIVATE_URLS_ENV) == "1"


def is_public_address(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
        address = address.ipv4_mapped
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


def resolve_checked_addresses(host: str, port: int) -> list[str]:
    """Every address `host` resolves to, refused unless all of them are public."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError):
        raise InputError(f"The host of audio_url ('{host}') could not be resolved.") from None
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
            return socket.create_connection((address, port), timeout=timeout)
        except OSError as exc:
            last_error = exc
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


def _read_body(response: http.client.HTTPResponse, deadline: float) -> bytes:
    declared = response.getheader("Content-Length")
    if declared and declared.isdigit() and int(declared) > MAX_AUDIO_BYTES:
        raise InputError(f"The audio at audio_url is larger than the {MAX_AUDIO_BYTES // 2**20} MB limit.")
    body = bytearray()
    while chunk := response.read1(READ_CHUNK_BYTES):
        body += chunk
        if len(body) > MAX_AUDIO_BYTES:
            raise InputError(f"The audio at audio_url is larger than the {MAX_AUDIO_BYTES // 2**20} MB limit.")
        if time.monotonic() > deadline:
            raise TimeoutError
    return bytes(body)


def download(url: str) -> bytes:
    deadline = time.monotonic() + DOWNLOAD_TIMEOUT_SECONDS
    for _hop in range(MAX_REDIRECTS + 1):
        if time.monotonic() > deadline:
            raise InputError("Downloading audio_url timed out.")
        parts, port = _split_url(url)
        addresses = resolve_checked_addresses(parts.hostname, port)
        connection_type = _PinnedHTTPSConnection if parts.scheme.lower() == "https" else _PinnedHTTPConnection
        connection = connection_type(parts.hostname, port, addresses, SOCKET_TIMEOUT_SECONDS)
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        try:
            connection.request("GET", target, headers={"User-Agent": USER_AGENT, "Accept": "*/*"})
            response = connection.getresponse()
            if response.status in REDIRECT_STATUSES and response.getheader("Location"):
                url = urljoin(url, response.getheader("Location"))
                continue
            if response.status != 200:
                raise InputError(f"Downloading audio_url failed with HTTP status {response.status}.")
            return _read_body(response, deadline)
        except TimeoutError:
            raise InputError("Downloading audio_url timed out.") from None
        except (OSError, http.client.HTTPException) as exc:
            reason = str(exc).splitlines()[0].rstrip(".") if str(exc) else type(exc).__name__
            raise InputError(f"Downloading audio_url failed ({reason}).") from None
        finally:
            connection.close()
    raise InputError(f"audio_url redirected more than {MAX_REDIRECTS} times.")

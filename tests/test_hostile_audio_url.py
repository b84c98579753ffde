"""The handler's `audio_url` fetch against hostile servers: one deadline for the whole fetch however slowly a
server answers (DNS and headers included), and no private address reached through an IPv6 form of it."""

from __future__ import annotations

import ipaddress
import socket
import threading
import time
from collections.abc import Iterator

import pytest

from inference import fetch


class _HeaderDrip:
    """A server that answers the status line at once, then one header byte every `interval` seconds."""

    def __init__(self, interval: float = 0.2, count: int = 100):
        self.interval, self.count = interval, count
        self.sent = 0
        self.cut = threading.Event()  # set when the client hung up before the headers were complete
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._thread = threading.Thread(target=self._serve, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._listener.getsockname()[1]}/audio.wav"

    def _serve(self) -> None:
        conn, _ = self._listener.accept()
        with conn:
            conn.recv(65536)
            try:
                conn.sendall(b"HTTP/1.1 200 OK\r\nX-Slow: ")
                for _ in range(self.count):
                    time.sleep(self.interval)
                    conn.sendall(b"z")
                    self.sent += 1
                conn.sendall(b"\r\nContent-Length: 0\r\n\r\n")
            except OSError:
                self.cut.set()

    def __enter__(self) -> _HeaderDrip:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._listener.close()


@pytest.fixture
def private_urls(monkeypatch) -> Iterator[None]:
    monkeypatch.setenv(fetch.ALLOW_PRIVATE_URLS_ENV, "1")
    monkeypatch.setattr(fetch, "DOWNLOAD_TIMEOUT_SECONDS", 1.0)
    yield


def test_headers_dripping_past_the_deadline_are_cut_off(private_urls):
    with _HeaderDrip(interval=0.2, count=100) as server:  # 20 s of headers against a 1 s deadline
        with pytest.raises(fetch.InputError, match="timed out"):
            fetch.download(server.url)
        assert server.cut.wait(10), "the client kept the connection open"
        assert server.sent < 50


def test_a_resolver_that_never_answers_is_under_the_deadline(private_urls, monkeypatch):
    def slow_resolver(*args, **kwargs):
        time.sleep(10)
        raise socket.gaierror("no answer")

    monkeypatch.setattr(fetch.socket, "getaddrinfo", slow_resolver)
    result: list = []

    def fetch_it() -> None:
        try:
            fetch.download("http://audio.example.com/a.wav")
        except fetch.InputError as exc:
            result.append(str(exc))

    worker = threading.Thread(target=fetch_it, daemon=True)
    worker.start()
    worker.join(5)  # the deadline is 1 s; the resolver would answer after 10
    assert result == ["Downloading audio_url timed out."]


@pytest.mark.parametrize(
    "address",
    [
        "::127.0.0.1",  # IPv4-compatible
        "::a9fe:a9fe",  # ::169.254.169.254
        "::10.0.0.1",
        "64:ff9b::a9fe:a9fe",  # NAT64 of 169.254.169.254
        "64:ff9b::7f00:1",
        "64:ff9b::192.168.1.1",
        "2002:a9fe:a9fe::",  # 6to4 of 169.254.169.254
        "2002:7f00:1::1",
        "2002:0a00:0001::5",
        "::ffff:127.0.0.1",  # IPv4-mapped stays refused
        "::ffff:169.254.169.254",
    ],
)
def test_ipv6_forms_of_private_ipv4_addresses_are_not_public(address):
    assert not fetch.is_public_address(ipaddress.ip_address(address))


@pytest.mark.parametrize("address", ["64:ff9b::5db8:d822", "2002:5db8:d822::1", "::ffff:93.184.216.34"])
def test_ipv6_forms_of_public_ipv4_addresses_stay_public(address):
    assert fetch.is_public_address(ipaddress.ip_address(address))


def test_an_audio_url_naming_a_nat64_loopback_is_refused_before_connecting():
    with pytest.raises(fetch.InputError, match="not allowed"):
        fetch.download("http://[64:ff9b::7f00:1]:9/a.wav")

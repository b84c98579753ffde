"""The engine sends its file requests straight through urllib3 (runpod_model_manager.hub_http.Client), not
through requests: what requests gave must hold all the same. Proxies come from the environment (and NO_PROXY
exempts the hosts it names), a hub dripping its headers is cut by the exchange's deadline, and
credentials reach the hub alone, not the CDN it redirects to, with either source's headers."""

from __future__ import annotations

import contextlib
import datetime
import http.client
import socket
import socketserver
import ssl
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from tests.cli_helpers import assert_one_line_error, run_cli, wait_until
from tests.hub import HF, MS

MiB = 1 << 20
HOP_BY_HOP = {"connection", "keep-alive", "proxy-connection", "proxy-authorization", "transfer-encoding", "te"}


class ForwardProxy(ThreadingHTTPServer):
    """A plain-HTTP forward proxy on loopback that records the absolute URL of every request it relays."""

    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Relay)
        self.seen: list[str] = []
        threading.Thread(target=self.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class _Relay(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        self.server.seen.append(self.path)
        target = urlsplit(self.path)
        upstream = http.client.HTTPConnection(target.hostname, target.port, timeout=30)
        headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP_BY_HOP}
        upstream.request("GET", target.path + (f"?{target.query}" if target.query else ""), headers=headers)
        answer = upstream.getresponse()
        body = answer.read()
        self.send_response(answer.status)
        for key, value in answer.getheaders():
            if key.lower() not in HOP_BY_HOP and key.lower() != "content-length":
                self.send_header(key, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
        upstream.close()

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def proxy():
    server = ForwardProxy()
    yield server
    server.shutdown()
    server.server_close()


def test_proxy_from_the_environment_and_no_proxy(hub_env, proxy, tmp_path):
    """HTTP_PROXY carries the requests to the hub (called `localhost` here); NO_PROXY=127.0.0.1 exempts the CDN
    the hub redirects to (at 127.0.0.1), as requests reads these variables."""
    hub = hub_env.hub
    big = bytes(range(256)) * (3 * MiB // 256)
    hub.add_repo(HF, "org/proxied", {"config.json": b'{"a": 1}', "model.safetensors": big})
    endpoint = hub.url.replace("127.0.0.1", "localhost")
    env = {**hub_env.env, "HF_ENDPOINT": endpoint}
    env.update({name: proxy.url for name in ("HTTP_PROXY", "http_proxy")})
    env.update({name: "127.0.0.1" for name in ("NO_PROXY", "no_proxy")})
    hub.reset_counters()
    result = run_cli(env, "hf:org/proxied", "--cache-dir", str(tmp_path / "c"), "--lock-file", str(tmp_path / "no"))
    assert result.returncode == 0, result.stderr
    relayed = [url for url in proxy.seen if "/resolve/" in url]
    assert sorted(url.rsplit("/", 1)[-1] for url in relayed) == ["config.json", "model.safetensors"]
    assert all(url.startswith(endpoint) for url in proxy.seen), proxy.seen  # the CDN was reached directly
    assert hub.count("cdn.blob", "GET") >= 1
    blobs = tmp_path / "c" / "huggingface" / "hub" / "models--org--proxied" / "blobs"
    assert sorted(p.read_bytes() for p in blobs.iterdir()) == sorted([b'{"a": 1}', big])


def test_headers_dripping_in_are_cut_by_the_deadline_and_retried(hub_env, tmp_path):
    """Bytes every few milliseconds never trip a socket timeout: the deadline over the exchange does."""
    hub = hub_env.hub
    data = b"d" * 50_000
    hub.add_repo(HF, "org/dripheaders", {"data.txt": data})
    hub.faults.drip("data.txt", bytes_per_second=2, headers=True, times=1)  # ~300 header bytes: minutes
    env = {**hub_env.env, "RPMM_CONNECT_TIMEOUT": "1", "RPMM_STALL_TIMEOUT": "1", "RPMM_RETRY_BACKOFF": "0.01"}
    args = ("hf:org/dripheaders", "--cache-dir", str(tmp_path / "c"), "--lock-file", str(tmp_path / "no"))
    result = run_cli(env, *args, timeout=60)  # unless the connection is cut, the headers alone take longer
    assert result.returncode == 0, result.stderr
    assert "no complete headers within 2 s" in result.stderr
    # the hub logs the cut request once it notices (its next byte): waited for, so no later test counts it
    wait_until(lambda: len([r for r in hub.log if "data.txt" in r.path]) == 2, what="the dripping request to end")
    snapshot = next((tmp_path / "c" / "huggingface" / "hub" / "models--org--dripheaders" / "snapshots").iterdir())
    assert (snapshot / "data.txt").read_bytes() == data


@pytest.mark.parametrize("source", [HF, MS])
def test_credentials_go_to_the_hub_and_never_to_the_cdn(hub_env, tmp_path, source):
    """Hugging Face sends Authorization, ModelScope also a Cookie: both stay off the redirect to the CDN."""
    hub = hub_env.hub
    data = bytes(range(256)) * (MiB // 256)
    hub.add_repo(source, "acme/private-ish", {"w.safetensors": data})
    hub.reset_counters()
    spec = f"{'hf' if source == HF else 'ms'}:acme/private-ish"
    result = run_cli(hub_env.env, spec, "--token", hub.token, "--cache-dir", str(tmp_path), "--lock-file", "none")
    assert result.returncode == 0, result.stderr
    ours = [r for r in hub.log if "private-ish" in r.path]
    assert any(r.server == "cdn" for r in ours) and any(r.server == "hub" for r in ours)
    assert all(r.credentials == (r.server == "hub") for r in ours), [(r.route, r.credentials) for r in ours]


class TLSFront(socketserver.ThreadingTCPServer):
    """TLS on loopback in front of the hub: each connection is decrypted here and relayed to the hub as is."""

    daemon_threads = True

    def __init__(self, upstream: tuple[str, int], cert: Path, key: Path) -> None:
        super().__init__(("127.0.0.1", 0), _TLSRelay)
        self.upstream = upstream
        self.context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self.context.load_cert_chain(cert, key)
        self.connections = 0
        threading.Thread(target=self.serve_forever, daemon=True).start()


class _TLSRelay(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        self.server.connections += 1
        try:
            client = self.server.context.wrap_socket(self.request, server_side=True)
        except (ssl.SSLError, OSError):
            return  # the client refused our certificate
        upstream = socket.create_connection(self.server.upstream)
        threading.Thread(target=_pump, args=(upstream, client), daemon=True).start()
        _pump(client, upstream)

    def finish(self) -> None:
        self.request.close()


def _pump(source: socket.socket, sink: socket.socket) -> None:
    with contextlib.suppress(OSError):
        while data := source.recv(1 << 16):
            sink.sendall(data)
    with contextlib.suppress(OSError):
        sink.shutdown(socket.SHUT_WR)


def _self_signed(folder: Path, name: str) -> tuple[Path, Path]:
    """A certificate for the host `name` (a DNS name) signed by its own key: its own CA."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = folder / "cert.pem", folder / "key.pem"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return cert_file, key_file


def _tls_front(url: str, folder: Path):
    cert, key = _self_signed(folder, "localhost")
    server = urlsplit(url)
    return TLSFront((server.hostname, server.port), cert, key), cert


@pytest.fixture
def tls_hub(hub_env, tmp_path):
    front, cert = _tls_front(hub_env.hub.url, tmp_path)
    yield front, cert
    front.shutdown()
    front.server_close()


@pytest.fixture
def tls_cdn(hub_env, tmp_path):
    """The hub's LFS redirects point at https://localhost:PORT, a TLS front of its CDN."""
    front, cert = _tls_front(hub_env.hub.cdn_url, tmp_path)
    hub_env.hub.cdn_front = f"https://localhost:{front.server_address[1]}"
    yield front, cert
    hub_env.hub.cdn_front = None
    front.shutdown()
    front.server_close()


def test_tls_certificates_are_checked_against_the_ca_bundle(hub_env, tls_hub, tmp_path):
    """An https hub whose certificate no trusted CA signed is refused in one line, and so is a certificate
    for another host name; with the CA in REQUESTS_CA_BUNDLE the same hub serves the model."""
    front, cert = tls_hub
    hub_env.hub.add_repo(HF, "org/tls", {"config.json": b'{"tls": true}'})
    port = front.server_address[1]
    base = {**hub_env.env, "HF_ENDPOINT": f"https://localhost:{port}"}
    base = {k: v for k, v in base.items() if k not in ("REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE", "SSL_CERT_FILE")}
    args = ("hf:org/tls", "--lock-file", str(tmp_path / "no"))

    untrusted = run_cli(base, *args, "--cache-dir", str(tmp_path / "a"))
    assert_one_line_error(untrusted, 1, "org/tls", "certificate", "REQUESTS_CA_BUNDLE")
    assert not list((tmp_path / "a").rglob("config.json"))

    wrong_host = {**base, "REQUESTS_CA_BUNDLE": str(cert), "HF_ENDPOINT": f"https://127.0.0.1:{port}"}
    assert_one_line_error(run_cli(wrong_host, *args, "--cache-dir", str(tmp_path / "b")), 1, "org/tls", "certificate")

    trusted = run_cli({**base, "REQUESTS_CA_BUNDLE": str(cert)}, *args, "--cache-dir", str(tmp_path / "c"))
    assert trusted.returncode == 0, trusted.stderr
    (config,) = (tmp_path / "c").rglob("config.json")
    assert config.read_bytes() == b'{"tls": true}'


def test_a_cdn_certificate_that_is_not_trusted_fails_the_file_at_once(hub_env, tls_cdn, tmp_path):
    """Retrying cannot make a certificate trusted: one TLS handshake, one line; the CA in REQUESTS_CA_BUNDLE
    then lets the same redirect through."""
    front, cert = tls_cdn
    weights = bytes(range(256)) * (2 * MiB // 256)  # LFS: the hub redirects to the CDN
    hub_env.hub.add_repo(HF, "org/tls-cdn", {"config.json": b"{}", "model.safetensors": weights})
    base = {k: v for k, v in hub_env.env.items() if k not in ("REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE")}
    args = ("hf:org/tls-cdn", "--lock-file", str(tmp_path / "no"), "--connections", "1")

    refused = run_cli(base, *args, "--cache-dir", str(tmp_path / "a"))
    assert_one_line_error(refused, 1, "model.safetensors", "TLS certificate of https://localhost", "REQUESTS_CA_BUNDLE")
    assert "retry" not in refused.stderr
    assert front.connections == 1
    assert not list((tmp_path / "a").rglob("model.safetensors"))

    trusted = run_cli({**base, "REQUESTS_CA_BUNDLE": str(cert)}, *args, "--cache-dir", str(tmp_path / "b"))
    assert trusted.returncode == 0, trusted.stderr
    (stored,) = (tmp_path / "b").rglob("snapshots/*/model.safetensors")
    assert stored.read_bytes() == weights

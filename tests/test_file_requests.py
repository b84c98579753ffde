"""The engine sends its file requests straight through urllib3 (runpod_model_manager.hub_http.Client), not
through requests: what requests gave must hold all the same. Proxies come from the environment (and NO_PROXY
exempts the hosts it names), a hub dripping its headers is cut by the exchange's deadline, and
credentials reach the hub alone, not the CDN it redirects to, with either source's headers."""

from __future__ import annotations

import http.client
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

import pytest

from tests.cli_helpers import run_cli
from tests.hub import HF, MS
from tests.test_reliability import wait_until

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

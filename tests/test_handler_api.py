"""handler.py under the real RunPod SDK: its local API (`--rp_serve_api`) in a subprocess, POST /runsync."""

from __future__ import annotations

import base64
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from tests.test_handler import DATA, REPO_ROOT, TOLERANCE_SECONDS, build_model_cache

STARTUP_TIMEOUT_SECONDS = 60


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _post(url: str, payload: dict) -> dict:
    request = urllib.request.Request(
        url, data=json.dumps(payload).encode(), headers={"Content-Type": "application/json"}, method="POST"
    )
    with urllib.request.urlopen(request, timeout=60) as response:
        return json.loads(response.read())


@pytest.fixture(scope="module")
def model_cache(tmp_path_factory) -> Path:
    return build_model_cache(tmp_path_factory.mktemp("handler-api-models"))


@pytest.fixture(scope="module")
def api_url(tmp_path_factory, model_cache) -> Iterator[str]:
    root = tmp_path_factory.mktemp("handler-api")
    port = _free_port()
    env = {**os.environ, "MODEL_CACHE_DIR": str(model_cache), "HF_HUB_OFFLINE": "1", "UVICORN_LOG_LEVEL": "warning"}
    command = [sys.executable, "handler.py", "--rp_serve_api", "--rp_api_host", "127.0.0.1", "--rp_api_port", str(port)]
    log_path = root / "worker.log"
    with log_path.open("wb") as log:
        worker = subprocess.Popen(command, cwd=REPO_ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
        try:
            _wait_until_listening(worker, port, log_path)
            yield f"http://127.0.0.1:{port}"
        finally:
            # Ctrl+C: uvicorn shuts down gracefully, then the SDK's SIGINT handler exits with status 0.
            worker.send_signal(signal.SIGINT)
            try:
                worker.wait(timeout=15)
            except subprocess.TimeoutExpired:
                worker.kill()
                worker.wait()
    assert worker.returncode == 0, log_path.read_text()


def _wait_until_listening(worker: subprocess.Popen, port: int, log_path: Path) -> None:
    deadline = time.monotonic() + STARTUP_TIMEOUT_SECONDS
    while time.monotonic() < deadline:
        if worker.poll() is not None:
            pytest.fail(f"handler.py exited with {worker.returncode}:\n{log_path.read_text()}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.2)
    pytest.fail(f"handler.py did not listen on port {port}:\n{log_path.read_text()}")


def test_runsync_diarization(api_url):
    truth = json.loads((DATA / "two_speakers.json").read_text())
    audio = base64.b64encode((DATA / "two_speakers.wav").read_bytes()).decode()

    reply = _post(f"{api_url}/runsync", {"input": {"task": "speaker_diarization", "audio_base64": audio}})

    assert reply["status"] == "COMPLETED", reply
    output = reply["output"]
    assert output["num_speakers"] == 2
    assert len(output["segments"]) == len(truth["segments"])
    for got, want in zip(output["segments"], truth["segments"], strict=True):
        assert abs(got["start"] - want["start"]) <= TOLERANCE_SECONDS
    by_truth: dict[str, set[str]] = {}
    for got, want in zip(output["segments"], truth["segments"], strict=True):
        by_truth.setdefault(want["speaker"], set()).add(got["speaker"])
    assert sorted(len(labels) for labels in by_truth.values()) == [1, 1]
    assert by_truth["alice"] != by_truth["bob"]


def test_runsync_bad_input_fails_and_worker_keeps_serving(api_url):
    failed = _post(f"{api_url}/runsync", {"input": {"task": "vad", "audio_base64": "not base64!"}})
    served = _post(
        f"{api_url}/runsync",
        {"input": {"task": "vad", "audio_base64": base64.b64encode((DATA / "two_speakers.wav").read_bytes()).decode()}},
    )

    assert failed["status"] == "FAILED"
    assert failed["error"] == "audio_base64 is not valid base64."
    assert served["status"] == "COMPLETED" and served["output"]["segments"], served


class _RunPodResults(BaseHTTPRequestHandler):
    """Where a RunPod worker sends results and progress updates (RUNPOD_WEBHOOK_POST_OUTPUT): keeps them."""

    received: list[tuple[str, dict]] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.received.append((self.path, json.loads(body)))
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args) -> None:
        pass


# One job through handler.handler as RunPod's worker loop calls it; then the SDK's progress threads finish.
ONE_JOB = """
import json, sys, threading
import handler
result = handler.handler({"id": "job-7", "input": json.load(sys.stdin)})
for thread in threading.enumerate():
    if "_thread_target" in thread.name:  # runpod.serverless.progress_update's (the SDK keeps one thread running)
        thread.join(timeout=30)
print(json.dumps(result))
"""


@pytest.mark.parametrize("interval", ["0", "3600", "soon"])
def test_on_runpod_a_request_reports_its_progress_every_interval(model_cache, interval):
    server = ThreadingHTTPServer(("127.0.0.1", 0), _RunPodResults)
    _RunPodResults.received = []
    threading.Thread(target=server.serve_forever, daemon=True).start()
    env = {
        **os.environ,
        "MODEL_CACHE_DIR": str(model_cache),
        "HF_HUB_OFFLINE": "1",
        "RUNPOD_WEBHOOK_POST_OUTPUT": f"http://127.0.0.1:{server.server_port}/output?job=$ID",
        "RPMM_PROGRESS_INTERVAL": interval,
    }
    audio = base64.b64encode((DATA / "two_speakers.wav").read_bytes()).decode()
    job_input = json.dumps({"task": "speaker_diarization", "audio_base64": audio})
    try:
        done = subprocess.run(
            [sys.executable, "-c", ONE_JOB],
            input=job_input.encode(),
            cwd=REPO_ROOT,
            env=env,
            capture_output=True,
            timeout=120,
        )
    finally:
        server.shutdown()
    assert done.returncode == 0, done.stderr.decode()
    result = json.loads(done.stdout.decode().splitlines()[-1])
    updates = _RunPodResults.received

    if interval == "soon":
        assert result == {"error": "RPMM_PROGRESS_INTERVAL must be a number from 0 to 3600, got 'soon'."}
        assert updates == []
    elif interval == "3600":  # the request ends long before the first update is due
        assert result["num_speakers"] == 2 and updates == []
    else:
        assert result["num_speakers"] == 2
        assert {path for path, _ in updates} == {"/output?job=job-7&isStream=false"}
        assert all(update["status"] == "IN_PROGRESS" for _, update in updates)
        # Every piece of both stages, once each (the SDK posts each update from a thread of its own: in any order).
        pieces = sorted((u["output"]["stage"], u["output"]["done"], u["output"]["total"]) for _, u in updates)
        totals = {stage: total for stage, _, total in pieces}
        assert set(totals) == {"segmentation", "voices"}
        assert pieces == sorted((stage, done, total) for stage, total in totals.items() for done in range(1, total + 1))

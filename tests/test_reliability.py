"""Fault injection: the real CLI (a subprocess) against the LocalHub, with the hub misbehaving, the process
killed, two processes on one cache, a full disk and hostile metadata.

Everything is asserted through behaviour and the hub's request / byte counters, never through durations.
Retry delays are made tiny through the engine's environment settings (RPMM_RETRY_BACKOFF, ...).
"""

from __future__ import annotations

import dataclasses
import fcntl
import hashlib
import os
import re
import resource
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from runpod_model_manager.cache import CacheRoot
from runpod_model_manager.manager import ModelManager
from runpod_model_manager.specs import parse_model_spec
from runpod_model_manager.transfer import EngineSettings
from tests.cli_helpers import (
    REPO_ROOT,
    assert_locking_as_asked,
    assert_one_line_error,
    content,
    ctrl_c_delivered,
    kill9,
    recorded_bytes,
    run_cli,
    run_python,
    wait_until,
)
from tests.hub import HF, MS, LocalHub, make_file

MiB = 1 << 20
BIG = 200 * MiB  # the kill -9 tests: big enough that the kill lands mid-way, throttled below
STATE = ".runpod-model-manager"
NEEDED_VS_FREE = re.compile(r"needs [\d.]+ [kKMGTP]?B\b.* [\d.]+ [kKMGTP]?B (is )?free")
FILE_ROUTES = ("hf.resolve", "ms.download", "cdn.blob")

FAST_RETRIES = {
    "RPMM_RETRY_BACKOFF": "0.01",
    "RPMM_RETRY_BACKOFF_MAX": "0.05",
    "RPMM_STALL_TIMEOUT": "20",
    "RPMM_RECORD_INTERVAL": "0.5",
}


# -- helpers -------------------------------------------------------------------------------------------
@pytest.fixture
def env(hub_env) -> dict[str, str]:
    return {**hub_env.env, **FAST_RETRIES}


@pytest.fixture(scope="module")
def big_file(tmp_path_factory) -> Iterator[Path]:
    folder = tmp_path_factory.mktemp("big")
    yield make_file(folder / "big.bin", BIG, seed=7)
    shutil.rmtree(folder, ignore_errors=True)  # pytest keeps the last runs' tmp dirs: not these bytes


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(8 * MiB):
            h.update(block)
    return h.hexdigest()


def spec(source: str, repo: str) -> str:
    return f"{'hf' if source == HF else 'ms'}:{repo}"


def final_path(cache: Path, hub: LocalHub, source: str, repo: str, path: str) -> Path:
    """Where the finished bytes of a file live: the HF blob, or the ModelScope snapshot file."""
    if source == HF:
        blobs = cache / "huggingface" / "hub" / f"models--{repo.replace('/', '--')}" / "blobs"
        return blobs / hub.file(HF, repo, path).etag
    return cache / "modelscope" / "models" / repo.replace("/", "--") / "snapshots" / "master" / path


def record_dir(cache: Path, source: str, repo: str) -> Path:
    return cache / STATE / "models" / source / repo


def manifest(cache: Path, source: str, repo: str, commit: str) -> Path:
    """The completion record: HF pins the commit; a ModelScope download is recorded under its branch name."""
    return record_dir(cache, source, repo) / "manifests" / f"{commit if source == HF else 'master'}.json"


def incomplete(cache: Path) -> list[Path]:
    folder = cache / STATE / "incomplete"
    return sorted(folder.iterdir()) if folder.exists() else []


def file_requests(hub: LocalHub, repo: str, path: str, route: str | None = None) -> list:
    """The hub's log of GETs of one file (hf.resolve / ms.download hops and CDN hops)."""
    return [
        r
        for r in list(hub.log)
        if r.method == "GET"
        and r.route in FILE_ROUTES
        and (route is None or r.route == route)
        and repo in r.path
        and path in r.path
    ]


def first_hop(source: str) -> str:
    return "hf.resolve" if source == HF else "ms.download"


_STARTED: list[subprocess.Popen] = []


@pytest.fixture(autouse=True)
def _no_cli_outlives_its_test() -> Iterator[None]:
    yield
    while _STARTED:
        proc = _STARTED.pop()
        if proc.poll() is None:
            kill9(proc)


def start_cli(env: dict[str, str], *args: str, log: Path, **kwargs) -> subprocess.Popen:
    with open(log, "w") as out:
        proc = subprocess.Popen(
            [sys.executable, str(REPO_ROOT / "download_models.py"), *args],
            env={**env, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))},
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=REPO_ROOT,
            preexec_fn=ctrl_c_delivered,
            **kwargs,
        )
    _STARTED.append(proc)
    return proc


def completed_bytes(hub: LocalHub, repo: str, path: str) -> int:
    """Body bytes of the file's GETs that the hub finished sending. A killed client's requests end (and are
    logged, as aborted) whenever the hub notices, maybe after a reset_counters(): they are left out."""
    return sum(r.bytes_sent for r in file_requests(hub, repo, path) if r.status in (200, 206) and not r.aborted)


def resumed_from(request, size: int) -> int:
    """The first byte a Range request for the rest of a `size`-byte file asked for."""
    match = re.fullmatch(rf"bytes=(\d+)-{size - 1}", request.range or "")
    assert match, request.range
    return int(match.group(1))


def _size(path: Path) -> int | None:
    try:
        return path.stat().st_size
    except FileNotFoundError:  # renamed meanwhile
        return None


def assert_lock_free(cache: Path) -> None:
    """Lock files stay behind a killed process, but none is held: a later run takes them at once."""
    locks = sorted((cache / STATE / "locks").glob("*.lock"))
    assert locks
    for lock in locks:
        with open(lock, "a") as f:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)  # raises BlockingIOError if held
            fcntl.flock(f, fcntl.LOCK_UN)


# -- 1. retries --------------------------------------------------------------------------------------
@pytest.mark.parametrize("source", [HF, MS])
def test_5xx_twice_then_ok(hub, env, tmp_path, source):
    data = content(300_000, 1)
    hub.add_repo(source, "org/r503", {"config.json": b"{}", "data.txt": data})
    hub.faults.fail("data.txt", 503, times=2)
    result = run_cli(env, spec(source, "org/r503"), "--cache-dir", str(tmp_path / "c"))
    assert result.returncode == 0, result.stderr
    assert final_path(tmp_path / "c", hub, source, "org/r503", "data.txt").read_bytes() == data
    assert len(file_requests(hub, "org/r503", "data.txt", first_hop(source))) == 3
    assert result.stderr.count("HTTP 503; retry") == 2


def test_429_retry_after_is_honoured(hub, env, tmp_path):
    data = content(100_000, 2)
    hub.add_repo(HF, "org/r429", {"data.txt": data})
    hub.faults.fail("data.txt", 429, times=1, retry_after=1)
    result = run_cli(env, "hf:org/r429", "--cache-dir", str(tmp_path / "c"))
    assert result.returncode == 0, result.stderr
    assert len(file_requests(hub, "org/r429", "data.txt", "hf.resolve")) == 2
    # the backoff is 0.01 s here: the 1 s delay can only come from the hub's Retry-After
    assert "HTTP 429; retry 1/6 in 1.0s" in result.stderr
    assert final_path(tmp_path / "c", hub, HF, "org/r429", "data.txt").read_bytes() == data


@pytest.mark.parametrize("source", [HF, MS])
def test_dropped_connection_resumes_with_range(hub, env, tmp_path, source):
    size, drop_at = 6 * MiB, 5 * MiB // 2
    data = content(size, 3)
    hub.add_repo(source, "org/drop", {"w.safetensors": data})
    hub.faults.drop("w.safetensors", after_bytes=drop_at, times=1)
    result = run_cli(env, spec(source, "org/drop"), "--cache-dir", str(tmp_path / "c"))
    assert result.returncode == 0, result.stderr
    assert final_path(tmp_path / "c", hub, source, "org/drop", "w.safetensors").read_bytes() == data
    bodies = file_requests(hub, "org/drop", "w.safetensors", "cdn.blob")
    assert len(bodies) == 2 and bodies[0].range == f"bytes=0-{size - 1}"
    assert bodies[0].bytes_sent == drop_at and bodies[0].aborted
    kept = resumed_from(bodies[1], size)
    assert 0 < kept <= drop_at  # the retry asks for the rest: what was on disk is neither lost nor claimed beyond
    # only what was not on disk is sent again
    assert hub.bytes_sent("org/drop", "w.safetensors") == size + drop_at - kept


def test_stalled_connection_is_dropped_and_retried(hub, env, tmp_path):
    size = 4 * MiB
    data = content(size, 4)
    hub.add_repo(HF, "org/stall", {"w.safetensors": data})
    hub.faults.stall("w.safetensors", after_bytes=3 * MiB // 2, seconds=6, times=1)
    result = run_cli({**env, "RPMM_STALL_TIMEOUT": "2"}, "hf:org/stall", "--cache-dir", str(tmp_path / "c"))
    assert result.returncode == 0, result.stderr
    assert final_path(tmp_path / "c", hub, HF, "org/stall", "w.safetensors").read_bytes() == data
    # the stalled request is logged when the hub wakes up and finds the client gone
    wait_until(lambda: len(file_requests(hub, "org/stall", "w.safetensors", "cdn.blob")) == 2, what="the stall")
    first, retry = sorted(file_requests(hub, "org/stall", "w.safetensors", "cdn.blob"), key=lambda r: r.range)
    assert first.range == f"bytes=0-{size - 1}"
    assert 0 < resumed_from(retry, size) <= 3 * MiB // 2  # resumed after the bytes on disk, none beyond them
    assert "connection lost" in result.stderr


def test_an_expired_cdn_link_is_asked_of_the_hub_again(hub_env, tmp_path):
    """The engine reuses a file's redirect for its later parts; once the signed link expires (403 from the
    CDN), it asks the hub for a new one instead of failing the file."""
    from downloaders.factory import get_downloader_class

    hub = hub_env.hub
    data = content(6 * MiB, 29)
    hub.add_repo(HF, "org/expiring", {"model.safetensors": data})
    hub.cdn_link_seconds = 1  # valid for 1-2 s
    hub.faults.bandwidth = MiB  # 16 parts of 384 KiB, 2 at a time: 3 s in all, the last parts after 2 s
    settings = EngineSettings(min_part_size=256 * 1024, connections=2)
    (tmp_path / "cache").mkdir()
    manager = ModelManager(CacheRoot(tmp_path / "cache", "test"), get_downloader_class, settings=settings)
    [result] = manager.download([parse_model_spec("hf:org/expiring")])
    assert result.status == "downloaded", result.error
    assert final_path(tmp_path / "cache", hub, HF, "org/expiring", "model.safetensors").read_bytes() == data

    def cdn(status: int) -> list:
        return [r for r in list(hub.log) if r.route == "cdn.blob" and r.status == status]

    wait_until(lambda: len(cdn(206)) == 16, what="the hub to log the last answers")  # each part fetched once
    expired = cdn(403)
    asked_again = [r for r in list(hub.log) if r.route == "hf.resolve" and r.method == "GET"]
    assert expired and len(asked_again) >= len(expired) + 1  # each 403 sent its part back to the hub
    assert hub.bytes_sent("org/expiring", "model.safetensors") == len(data)  # no byte fetched twice


def test_invalid_setting_is_one_line(hub, env, tmp_path):
    hub.add_repo(HF, "org/set", {"a.txt": b"a"})
    result = run_cli({**env, "RPMM_STALL_TIMEOUT": "soon"}, "hf:org/set", "--cache-dir", str(tmp_path / "c"))
    assert_one_line_error(result, 2, "RPMM_STALL_TIMEOUT", "'soon'")


@pytest.mark.parametrize("source", [HF, MS])
def test_persistent_500_gives_up_after_bounded_retries(hub, env, tmp_path, source):
    cache = tmp_path / "c"
    hub.add_repo(source, "org/dead", {"config.json": b"{}", "data.txt": content(200_000, 5)})
    hub.faults.fail("data.txt", 500, times=1000)
    result = run_cli({**env, "RPMM_RETRIES": "3"}, spec(source, "org/dead"), "--cache-dir", str(cache), "-q")
    line = assert_one_line_error(result, 1, "org/dead", "data.txt", "HTTP 500", "gave up after 4 attempts")
    assert line.count("\n") == 0
    assert len(file_requests(hub, "org/dead", "data.txt", first_hop(source))) == 4  # 1 + RPMM_RETRIES
    assert not final_path(cache, hub, source, "org/dead", "data.txt").exists()
    assert not record_dir(cache, source, "org/dead").exists()
    assert incomplete(cache) == []  # nothing worth resuming is kept


def test_persistent_500_on_a_multipart_file_stops_every_part(hub, env, tmp_path):
    """One part giving up stops the others, so the run ends instead of finishing the rest of the file."""
    cache = tmp_path / "c"
    hub.add_repo(HF, "org/deadbig", {"w.safetensors": content(64 * MiB, 6)})
    hub.faults.fail("w.safetensors", 500, times=10_000)
    result = run_cli({**env, "RPMM_RETRIES": "2"}, "hf:org/deadbig", "--cache-dir", str(cache), "-q")
    assert_one_line_error(result, 1, "org/deadbig", "w.safetensors", "HTTP 500", "gave up after 3 attempts")
    attempts = len(file_requests(hub, "org/deadbig", "w.safetensors", "hf.resolve"))
    assert 3 <= attempts <= 4 * 3  # 4 parts of 16 MiB, at most 3 attempts each
    assert hub.bytes_sent("org/deadbig") == 0
    assert incomplete(cache) == []


def test_a_failed_part_stops_the_parts_in_flight(hub, env, tmp_path):
    """A part that cannot succeed (here HTTP 403) ends the file at once: the other parts are not finished."""
    cache, size = tmp_path / "c", 64 * MiB
    hub.add_repo(HF, "org/forbidden", {"w.safetensors": content(size, 16)})
    hub.faults.bandwidth = 2 * MiB  # finishing the three other 16 MiB parts would take 8 s
    hub.faults.fail("w.safetensors", 403, times=1)
    result = run_cli(env, "hf:org/forbidden", "--cache-dir", str(cache), "-q")
    assert_one_line_error(result, 1, "org/forbidden", "w.safetensors", "HTTP 403")
    # the other parts were abandoned: none of their requests ran to its end
    assert completed_bytes(hub, "org/forbidden", "w.safetensors") == 0
    assert not final_path(cache, hub, HF, "org/forbidden", "w.safetensors").exists()


# -- 2. resume after kill -9 ---------------------------------------------------------------------------
@pytest.mark.parametrize("source", [HF, MS])
def test_resume_after_kill9(hub, env, tmp_path, big_file, source):
    cache, repo, name = tmp_path / "c", "org/big", "model.safetensors"
    commit = hub.add_repo(source, repo, {"config.json": b'{"a": 1}', name: big_file})
    hub.faults.bandwidth = 4 * MiB  # per connection: about 6 s for the whole file over 8 connections
    proc = start_cli(env, spec(source, repo), "--cache-dir", str(cache), log=tmp_path / "run1.log")
    try:
        wait_until(lambda: recorded_bytes(cache) >= 0.4 * BIG, proc, what="40% of the file in the resume record")
    finally:
        kill9(proc)
    assert not final_path(cache, hub, source, repo, name).exists()
    assert not record_dir(cache, source, repo).exists()
    kept = recorded_bytes(cache)
    assert_lock_free(cache)

    hub.reset_counters()
    hub.faults.bandwidth = None
    result = run_cli(env, spec(source, repo), "--cache-dir", str(cache))
    assert result.returncode == 0, result.stderr
    resent = completed_bytes(hub, repo, name)
    print(f"{source}: kept {kept / BIG:.0%} after kill -9, sent again {resent} bytes ({resent / BIG:.0%})")
    assert resent == BIG - kept < 0.7 * BIG
    assert "resuming at" in result.stderr
    final = final_path(cache, hub, source, repo, name)
    assert sha256(final) == hub.file(source, repo, name).sha256
    assert incomplete(cache) == []
    assert manifest(cache, source, repo, commit).exists()

    if source == HF:
        model_dir = cache / "huggingface" / "hub" / "models--org--big"
        snapshot = model_dir / "snapshots" / commit
        assert (snapshot / name).is_symlink() and (snapshot / name).resolve() == final
        assert (model_dir / "refs" / "main").read_text() == commit
        hub.reset_counters()
        offline = {**env, "HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(cache / "huggingface" / "hub")}
        code = f"from huggingface_hub import hf_hub_download; print(hf_hub_download('{repo}', '{name}'))"
        loaded = run_python(offline, code)
        assert loaded.returncode == 0, loaded.stderr
        assert Path(loaded.stdout.strip()) == snapshot / name
        assert [r for r in list(hub.log) if "org/big" in r.path] == []  # nothing asked of the hub
    shutil.rmtree(cache)  # 200 MB


def interrupted(proc: subprocess.Popen, log: Path, ready, what: str, settle: float = 0.0) -> str:
    """Ctrl-C once `ready()` (and `settle` seconds more): the run must end within 10 s, with exit status 130
    and a sentence. The text of its `log`."""
    try:
        wait_until(ready, proc, what=what)
        time.sleep(settle)
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=10)
    finally:
        if proc.poll() is None:
            kill9(proc)
    text = log.read_text()
    assert proc.returncode == 130, text
    assert "Traceback" not in text and "error: interrupted" in text
    return text


def test_ctrl_c_stops_the_transfers_and_keeps_their_progress(hub, env, tmp_path):
    """SIGINT ends the run now (not once every file in flight is done), and a later run resumes."""
    cache, size = tmp_path / "c", 64 * MiB
    data = content(size, 17)
    hub.add_repo(HF, "org/ctrlc", {"config.json": b"{}", "model.safetensors": data})
    hub.faults.bandwidth = MiB  # 16 s for the whole file over its 4 connections
    proc = start_cli(env, "hf:org/ctrlc", "--cache-dir", str(cache), log=tmp_path / "run.log")
    # the transfers stop at their next chunk; finishing would take > 10 s
    log = tmp_path / "run.log"
    interrupted(proc, log, lambda: recorded_bytes(cache) >= 0.1 * size, "10% of the file in the resume record")
    kept = recorded_bytes(cache)
    assert 0.1 * size <= kept < size
    assert not final_path(cache, hub, HF, "org/ctrlc", "model.safetensors").exists()

    hub.reset_counters()
    hub.faults.bandwidth = None
    result = run_cli(env, "hf:org/ctrlc", "--cache-dir", str(cache))
    assert result.returncode == 0, result.stderr
    assert final_path(cache, hub, HF, "org/ctrlc", "model.safetensors").read_bytes() == data
    assert completed_bytes(hub, "org/ctrlc", "model.safetensors") == size - kept


@pytest.mark.parametrize(
    "fault, match, pending",
    [
        pytest.param("stall", "model.safetensors", "stall", id="file-body-stalls"),
        pytest.param("hang", "model.safetensors", "answer", id="file-headers-never-come"),
        pytest.param("hang", "api/models/org/silent", "answer", id="metadata-never-comes"),
    ],
)
def test_ctrl_c_does_not_wait_for_a_silent_hub(hub, env, tmp_path, fault, match, pending):
    """A thread blocked on a socket checks for Ctrl-C only when its read returns: without the sockets shut
    down on Ctrl-C, the run would end only at the stall timeout (20 s here) or the metadata deadline."""
    cache, data = tmp_path / "c", content(4 * MiB, 23)
    hub.add_repo(HF, "org/silent", {"config.json": b"{}", "model.safetensors": data})
    getattr(hub.faults, fault)(match, seconds=60)
    env = {**env, "RPMM_METADATA_TIMEOUT": "60"}
    proc = start_cli(env, "hf:org/silent", "--cache-dir", str(cache), log=tmp_path / "run.log")
    silent = "the hub to go silent"  # then the client waits for it
    log = interrupted(proc, tmp_path / "run.log", lambda: hub.faults.pending[pending] == 0, silent, settle=0.2)
    assert "retry" not in log  # the cut connection is not taken for the hub's failure

    hub.faults.reset()
    result = run_cli(env, "hf:org/silent", "--cache-dir", str(cache))
    assert result.returncode == 0, result.stderr
    assert final_path(cache, hub, HF, "org/silent", "model.safetensors").read_bytes() == data


# -- 3. two processes on one cache ---------------------------------------------------------------------
def test_two_concurrent_runs_fetch_each_file_once(hub, env, locking, tmp_path):
    env = locking(env)
    cache = tmp_path / "c"
    files = {
        "config.json": b'{"x": 1}',
        "tokenizer.json": content(400_000, 7),
        "extra/vocab.txt": content(2 * MiB, 8),
        "model.safetensors": content(48 * MiB, 9),
    }
    hub.add_repo(HF, "org/shared", files)
    hub.add_repo(MS, "org/shared-ms", {"config.json": b"{}", "w.bin": content(3 * MiB, 10)})
    hub.faults.bandwidth = 6 * MiB  # the big file takes about 3 s over its 3 connections
    models = ("hf:org/shared", "ms:org/shared-ms")
    procs = [start_cli(env, *models, "--cache-dir", str(cache), log=tmp_path / f"run{i}.log") for i in (1, 2)]
    for proc in procs:
        assert proc.wait(timeout=120) == 0, proc.args
    logs = "".join((tmp_path / f"run{i}.log").read_text() for i in (1, 2))
    assert "Traceback" not in logs
    assert "another process is downloading it" in logs
    for path, data in files.items():
        assert hub.bytes_sent("org/shared", path) == len(data), path  # exactly once, over both processes
        assert final_path(cache, hub, HF, "org/shared", path).read_bytes() == data
    assert hub.bytes_sent("org/shared-ms", "w.bin") == 3 * MiB
    assert hub.bytes_sent("org/shared-ms", "config.json") == 2
    assert incomplete(cache) == []
    assert_locking_as_asked(env)


def test_waiting_run_takes_over_from_a_killed_one(hub, env, locking, tmp_path):
    """Pod A dies mid-download while pod B waits for its lock: B gets the lock and resumes A's bytes."""
    env = locking(env)
    cache, size = tmp_path / "c", 48 * MiB
    data = content(size, 11)
    hub.add_repo(HF, "org/takeover", {"model.safetensors": data})
    hub.faults.bandwidth = 3 * MiB
    first = start_cli(env, "hf:org/takeover", "--cache-dir", str(cache), log=tmp_path / "a.log")
    second = None
    try:
        wait_until(lambda: recorded_bytes(cache) >= 0.2 * size, first, what="A's progress")
        second = start_cli(env, "hf:org/takeover", "--cache-dir", str(cache), log=tmp_path / "b.log")
        wait_until(
            lambda: "another process is downloading it" in (tmp_path / "b.log").read_text(),
            second,
            what="B waiting for A's lock",
        )
        kill9(first)
        hub.faults.bandwidth = None
        assert second.wait(timeout=120) == 0, (tmp_path / "b.log").read_text()
    finally:
        for proc in (first, second):
            if proc is not None and proc.poll() is None:
                kill9(proc)
    log = (tmp_path / "b.log").read_text()
    assert "resuming at" in log and "Traceback" not in log
    assert final_path(cache, hub, HF, "org/takeover", "model.safetensors").read_bytes() == data
    assert hub.bytes_sent("org/takeover", "model.safetensors") < 1.8 * size
    assert incomplete(cache) == []
    assert_locking_as_asked(env)
    if "RPMM_TEST_FLOCK_CALLS" in env:  # A's marker names a process of this host that is gone
        assert "taking over the lock" in log and "its process is gone" in log


# -- 4. atomicity --------------------------------------------------------------------------------------
@pytest.mark.parametrize("source", [HF, MS])
def test_nothing_final_appears_before_it_is_complete(hub, env, tmp_path, source):
    cache, repo, big = tmp_path / "c", "org/atomic", "model.safetensors"
    commit = hub.add_repo(source, repo, {"config.json": b"{}", "a.txt": b"a" * 1000, big: content(40 * MiB, 12)})
    hub.faults.bandwidth = 5 * MiB
    final = final_path(cache, hub, source, repo, big)
    record = manifest(cache, source, repo, commit)
    snapshot_link = cache / "huggingface" / "hub" / "models--org--atomic" / "snapshots" / commit / big
    proc = start_cli(env, spec(source, repo), "--cache-dir", str(cache), log=tmp_path / "run.log")
    seen_in_flight = 0
    try:
        while proc.poll() is None:
            # read the final paths first: the .part goes away (rename) before any of them may appear
            visible = {p: p.exists() or p.is_symlink() for p in (final, record, snapshot_link)}
            in_flight = any(p.suffix == ".part" and _size(p) == 40 * MiB for p in incomplete(cache))
            if in_flight:
                seen_in_flight += 1
                assert not any(visible.values()), visible
            time.sleep(0.05)
    finally:
        if proc.poll() is None:
            kill9(proc)
    assert proc.returncode == 0, (tmp_path / "run.log").read_text()
    assert seen_in_flight >= 5  # the download was watched for a while
    assert final.exists() and record.exists()
    assert source == MS or snapshot_link.resolve() == final


# -- 5. disk space -------------------------------------------------------------------------------------
def _fake_size_entry(hub: LocalHub, source: str, repo: str, path: str, size: int) -> None:
    """Make the hub list `path` with a size no disk has (the listing is all the pre-check reads)."""
    commit = hub.repo(source, repo).resolve(None)
    commit.files[path] = dataclasses.replace(commit.files[path], size=size)


@pytest.mark.parametrize("source", [HF, MS])
def test_model_bigger_than_free_space_is_refused_before_writing(hub, env, tmp_path, source):
    cache = tmp_path / "c"
    hub.add_repo(source, "org/huge", {"config.json": b"{}", "model.safetensors": b"x" * 1000})
    _fake_size_entry(hub, source, "org/huge", "model.safetensors", 1 << 50)
    result = run_cli(env, spec(source, "org/huge"), "--cache-dir", str(cache), "-q")
    line = assert_one_line_error(result, 2, "not enough disk space", "nothing was written")
    assert result.stderr.strip() == line
    assert NEEDED_VS_FREE.search(line), line
    assert file_requests(hub, "org/huge", "") == []
    written = [p for p in cache.rglob("*") if p.is_file()]
    assert written == [], written


def _tmpfs(path: Path, size: str) -> bool:
    path.mkdir()
    if os.geteuid() != 0 or not shutil.which("mount"):
        return False
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], capture_output=True)
    return done.returncode == 0


def test_small_tmpfs_refuses_before_writing(hub, env, tmp_path):
    volume = tmp_path / "volume"
    if not _tmpfs(volume, "4m"):
        pytest.skip("needs root and `mount -t tmpfs` (the fake-size test covers the check everywhere)")
    try:
        hub.add_repo(HF, "org/toobig", {"config.json": b"{}", "model.safetensors": content(6 * MiB, 13)})
        result = run_cli(env, "hf:org/toobig", "--cache-dir", str(volume / "models"), "-q")
        line = assert_one_line_error(result, 2, "not enough disk space")
        assert NEEDED_VS_FREE.search(line), line
        assert hub.bytes_sent("org/toobig") == 0
        assert [p for p in volume.rglob("*") if p.is_file()] == []
    finally:
        subprocess.run(["umount", str(volume)], check=True)


def _limit_file_size(limit: int):
    def preexec() -> None:  # Python ignores SIGXFSZ: a write past the limit fails with EFBIG
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    return preexec


def test_no_space_for_a_file_is_found_before_its_bytes_are_sent(hub, env, tmp_path):
    """With preallocation (the default) the full size is reserved first: a full disk costs no transfer."""
    cache, size = tmp_path / "c", 12 * MiB
    data = content(size, 14)
    hub.add_repo(HF, "org/full", {"config.json": b"{}", "model.safetensors": data})
    args = ("hf:org/full", "--cache-dir", str(cache), "-q")
    result = run_cli(env, *args, preexec_fn=_limit_file_size(4 * MiB))
    line = assert_one_line_error(result, 2, "no space for org/full: model.safetensors", "free up space")
    assert result.stderr.strip() == line
    assert hub.bytes_sent("org/full", "model.safetensors") == 0
    assert not final_path(cache, hub, HF, "org/full", "model.safetensors").exists()
    assert not record_dir(cache, HF, "org/full").exists()
    assert incomplete(cache) == []  # the reservation was given back

    hub.reset_counters()
    result = run_cli(env, *args)
    assert result.returncode == 0, result.stderr
    assert final_path(cache, hub, HF, "org/full", "model.safetensors").read_bytes() == data
    assert hub.bytes_sent("org/full", "model.safetensors") == size


@pytest.mark.parametrize("source", [HF, MS])
def test_write_failure_midway_then_resume(hub, env, tmp_path, source):
    """Without preallocation (RPMM_PREALLOCATE=0) the disk fills up mid-file: clear error, then resume."""
    cache, size, limit = tmp_path / "c", 12 * MiB, 6 * MiB
    data = content(size, 15)
    hub.add_repo(source, "org/midway", {"config.json": b"{}", "model.safetensors": data})
    args = (spec(source, "org/midway"), "--cache-dir", str(cache), "-q")
    env = {**env, "RPMM_PREALLOCATE": "0"}
    result = run_cli(env, *args, preexec_fn=_limit_file_size(limit))
    line = assert_one_line_error(result, 2, "disk full while writing org/midway: model.safetensors", "run again")
    assert result.stderr.strip() == line
    final = final_path(cache, hub, source, "org/midway", "model.safetensors")
    assert not final.exists()
    assert not record_dir(cache, source, "org/midway").exists()
    kept = recorded_bytes(cache)  # what was written before the failure, as the resume record counts it
    assert 0 < kept <= limit
    [part] = [p for p in incomplete(cache) if p.suffix == ".part"]
    assert part.read_bytes()[:kept] == data[:kept]  # the recorded bytes are there, and right

    hub.reset_counters()
    result = run_cli(env, *args)
    assert result.returncode == 0, result.stderr
    assert final.read_bytes() == data
    assert hub.bytes_sent("org/midway", "model.safetensors") == size - kept  # the rest, from the recorded bytes
    assert incomplete(cache) == []


# -- 6. hostile hub data -------------------------------------------------------------------------------
def _inject(hub: LocalHub, source: str, repo: str, name: str) -> None:
    """Serve a file name that the LocalHub's own validation refuses: a hostile hub's listing."""
    hub.add_repo(source, repo, {"config.json": b"{}", "placeholder.txt": b"pwned"})
    commit = hub.repo(source, repo).resolve(None)
    entry = commit.files.pop("placeholder.txt")
    commit.files[name] = dataclasses.replace(entry, path=name)


@pytest.mark.parametrize("source", [HF, MS])
@pytest.mark.parametrize("kind", ["parent", "absolute", "nested-parent", "backslash"])
def test_hostile_file_names_are_refused(hub, env, tmp_path, source, kind):
    cache = tmp_path / "deep" / "c"
    outside = tmp_path / "pwned.txt"
    name = {
        "parent": "../../../../../../pwned.txt",
        "absolute": str(outside),
        "nested-parent": "sub/../../../../../../../pwned.txt",
        "backslash": "sub\\..\\..\\pwned.txt",
    }[kind]
    _inject(hub, source, "org/hostile", name)
    result = run_cli(env, spec(source, "org/hostile"), "--cache-dir", str(cache), "-q")
    assert_one_line_error(result, 1, "org/hostile", "malformed metadata", "outside the model folder")
    assert file_requests(hub, "org/hostile", "") == []
    assert not outside.exists()
    assert [p for p in tmp_path.rglob("pwned*")] == []
    assert not record_dir(cache, source, "org/hostile").exists()


@pytest.mark.parametrize("source", [HF])  # ModelScope downloads use the branch name; see test_lock_and_verify
def test_hostile_commit_id_is_refused(hub, env, tmp_path, source):
    """A commit id names folders (HF snapshots/<commit>, our manifests/<commit>.json): it must be one name."""
    cache = tmp_path / "deep" / "c"
    hub.add_repo(source, "org/badcommit", {"a.txt": b"a"})
    repo = hub.repo(source, "org/badcommit")
    head = repo.resolve(None)
    bad = "../../../../../../../pwned"
    repo.commits[bad] = dataclasses.replace(head, sha=bad)
    repo.branches[repo.default_branch] = bad
    result = run_cli(env, spec(source, "org/badcommit"), "--cache-dir", str(cache), "-q")
    assert_one_line_error(result, 1, "org/badcommit", "malformed metadata", "commit id")
    assert [p for p in tmp_path.rglob("pwned*")] == []
    assert file_requests(hub, "org/badcommit", "") == []


def test_hostile_checksum_is_refused(hub, env, tmp_path):
    """HF blobs are named after the hub's sha256: one with path characters must never name a file."""
    cache = tmp_path / "deep" / "c"
    hub.add_repo(HF, "org/badsum", {"w.safetensors": b"x" * 100})
    commit = hub.repo(HF, "org/badsum").resolve(None)
    commit.files["w.safetensors"] = dataclasses.replace(commit.files["w.safetensors"], sha256="../../../../pwned")
    result = run_cli(env, "hf:org/badsum", "--cache-dir", str(cache), "-q")
    assert_one_line_error(result, 1, "org/badsum", "w.safetensors", "malformed metadata", "checksum")
    assert [p for p in tmp_path.rglob("pwned*")] == []
    assert hub.bytes_sent("org/badsum") == 0

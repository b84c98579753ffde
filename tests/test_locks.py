"""runpod_model_manager.locks: kernel flock where it works, heartbeat markers where flock fails (Lustre, CIFS).

In-process tests switch the module to markers by making its flock fail; the end-to-end tests run the real CLI in
a subprocess whose fcntl.flock fails with ENOLCK, downloading through the real engine from the local hub.
"""

from __future__ import annotations

import errno
import hashlib
import logging
import os
import threading
import time
from pathlib import Path

import pytest

from runpod_model_manager import locks
from runpod_model_manager.locks import Lock, LockBusy, LockCancelled, remove_if_free
from tests.cli_helpers import assert_one_line_error, no_flock_env, run_cli
from tests.hub import HF

STATE = ".runpod-model-manager"


def flock_fails(monkeypatch) -> None:
    def fails(fd, operation):
        raise OSError(errno.ENOLCK, "No locks available")

    monkeypatch.setattr(locks.fcntl, "flock", fails)
    monkeypatch.setattr(locks, "_FLOCK_WORKS", {})


@pytest.fixture(params=["flock", "markers"])
def mode(request, monkeypatch) -> str:
    if request.param == "markers":
        flock_fails(monkeypatch)
    monkeypatch.setenv("RPMM_LOCK_STALE", "0.6")  # markers beat every 0.1 s
    return request.param


@pytest.fixture
def markers(monkeypatch) -> None:
    flock_fails(monkeypatch)


def busy(path: Path, shared: bool = False) -> bool:
    lock = Lock(path, shared=shared)
    try:
        lock.acquire(blocking=False)
    except LockBusy:
        return True
    lock.release()
    return False


def test_an_exclusive_lock_excludes_and_its_file_goes_with_it(mode, tmp_path):
    path = tmp_path / "locks" / "a.lock"
    holder = Lock(path)
    holder.acquire()
    assert busy(path) and busy(path, shared=True)
    time.sleep(1.0)  # longer than RPMM_LOCK_STALE: only the heartbeat keeps a marker
    assert busy(path)
    holder.release()
    assert not path.exists()
    assert not busy(path)
    assert list(path.parent.iterdir()) == []


def test_shared_locks_coexist_and_keep_an_exclusive_one_out(mode, tmp_path):
    path = tmp_path / "model.lock"
    first, second = Lock(path, shared=True), Lock(path, shared=True)
    first.acquire(blocking=False)
    second.acquire(blocking=False)
    assert busy(path)
    first.release()
    assert busy(path)
    second.release()
    assert not busy(path)
    exclusive = Lock(path)
    exclusive.acquire(blocking=False)
    assert busy(path, shared=True)
    exclusive.release()
    assert list(tmp_path.iterdir()) == []


def test_a_blocking_wait_ends_when_cancelled(mode, tmp_path):
    holder = Lock(tmp_path / "a.lock")
    holder.acquire()
    cancel = threading.Event()
    threading.Timer(0.3, cancel.set).start()
    with pytest.raises(LockCancelled):
        Lock(tmp_path / "a.lock").acquire(cancel=cancel)
    holder.release()


def marker_of(host: str, pid: int, beat: int = 3) -> str:
    return f"{host} {pid} {'ab' * 8} {beat}\n"


def test_a_marker_left_on_another_host_is_taken_over_once_stale(markers, monkeypatch, tmp_path, caplog):
    monkeypatch.setenv("RPMM_LOCK_STALE", "0.5")
    path = tmp_path / "a.lock"
    path.write_text(marker_of("other-pod/4026531836", 4242))
    waiter = Lock(path)
    with caplog.at_level(logging.WARNING, logger="runpod_model_manager.locks"):
        with pytest.raises(LockBusy):  # at first sight a marker is held: it is watched for RPMM_LOCK_STALE
            waiter.acquire(blocking=False)
        assert caplog.text == ""
        waiter.acquire()
    assert "taking over the lock" in caplog.text and "process 4242 on other-pod" in caplog.text
    assert "not refreshed for" in caplog.text
    waiter.release()


def test_a_marker_of_a_dead_process_on_this_host_is_taken_over_at_once(markers, monkeypatch, tmp_path, caplog):
    monkeypatch.setenv("RPMM_LOCK_STALE", "3600")
    path = tmp_path / "a.lock"
    path.write_text(marker_of(locks.HOST, 2**22 + 12345))  # above pid_max: no such process
    with caplog.at_level(logging.WARNING, logger="runpod_model_manager.locks"):
        lock = Lock(path)
        lock.acquire(blocking=False)
    assert "its process is gone" in caplog.text
    lock.release()


def test_a_holder_that_lost_its_marker_says_so(markers, monkeypatch, tmp_path, caplog):
    monkeypatch.setenv("RPMM_LOCK_STALE", "0.6")
    path = tmp_path / "a.lock"
    holder = Lock(path)
    holder.acquire()
    path.write_text(marker_of("other-pod/1", 7))  # what a taker writes after finding it stale
    with caplog.at_level(logging.WARNING, logger="runpod_model_manager.locks"):
        deadline = time.monotonic() + 5
        while "lost the lock" not in caplog.text and time.monotonic() < deadline:
            time.sleep(0.05)
    assert "lost the lock" in caplog.text
    holder.release()
    assert path.read_text() == marker_of("other-pod/1", 7)  # the new holder's marker stays


def test_remove_if_free_spares_held_and_young_lock_files(mode, tmp_path):
    held, young, old = tmp_path / "held.lock", tmp_path / "young.lock", tmp_path / "old.lock"
    holder = Lock(held)
    holder.acquire()
    young.write_text("")
    old.write_text(marker_of("other-pod/1", 9))
    for path in (held, old):
        os.utime(path, (time.time() - 3600, time.time() - 3600))
    if mode == "markers":
        time.sleep(0.3)  # the holder's heartbeat refreshes its marker
    assert not remove_if_free(young, 60) and young.exists()
    assert not remove_if_free(held, 60) and held.exists()
    assert remove_if_free(old, 60) and not old.exists()
    holder.release()


def test_bad_stale_setting_is_one_line(hub_env, tmp_path):
    hub_env.hub.add_repo(HF, "org/x", {"a.txt": b"a"})
    result = run_cli({**hub_env.env, "RPMM_LOCK_STALE": "0"}, "hf:org/x", "--cache-dir", str(tmp_path / "c"))
    assert_one_line_error(result, 2, "RPMM_LOCK_STALE", "'0'")


# -- end to end: the CLI where flock fails ----------------------------------------------------------
def test_a_run_that_died_on_another_pod_does_not_block_the_next(hub_env, tmp_path):
    """The issue's measurement: with flock failing, a lock left by a run that died on another host blocked a
    run for ever. Now its marker, never refreshed, is taken over after RPMM_LOCK_STALE, and the run says so."""
    cache, data = tmp_path / "c", b"w" * 300_000
    hub_env.hub.add_repo(HF, "org/orphan", {"w.bin": data})
    blob = (
        cache
        / "huggingface"
        / "hub"
        / "models--org--orphan"
        / "blobs"
        / hub_env.hub.file(HF, "org/orphan", "w.bin").etag
    )
    lock = cache / STATE / "locks" / f"{hashlib.sha256(str(blob).encode()).hexdigest()[:40]}.lock"
    lock.parent.mkdir(parents=True)
    lock.write_text(marker_of("other-pod/4026531836", 77))
    env = {**no_flock_env(hub_env.env, tmp_path / "no-flock"), "RPMM_LOCK_STALE": "1"}
    result = run_cli(env, "hf:org/orphan", "--cache-dir", str(cache), timeout=60)
    assert result.returncode == 0, result.stderr
    assert blob.read_bytes() == data
    assert "taking over the lock" in result.stderr and "process 77 on other-pod" in result.stderr
    assert (tmp_path / "no-flock" / "flock-calls").read_text()
    assert not lock.exists()

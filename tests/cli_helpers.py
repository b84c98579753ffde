"""Running the real CLI as a user does: a subprocess of `python download_models.py`, plain output."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]


def ctrl_c_delivered() -> None:
    """A Popen preexec_fn: the child takes SIGINT as Ctrl-C even when this process ignores it (a test run started
    in the background by a non-interactive shell ignores SIGINT, and an ignored signal stays ignored in children:
    Python then installs no KeyboardInterrupt handler)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def run_cli(env: dict[str, str], *args: str, timeout: float = 120, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(REPO_ROOT / "download_models.py"), *args],
        env={**env, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))},
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=kwargs.pop("cwd", REPO_ROOT),
        **kwargs,
    )


def run_python(env: dict[str, str], code: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=timeout, cwd=REPO_ROOT
    )


def assert_one_line_error(result: subprocess.CompletedProcess, code: int, *fragments: str) -> str:
    """Exit code as given, no traceback, and the error is one line holding every fragment."""
    assert result.returncode == code, (result.returncode, result.stdout, result.stderr)
    assert "Traceback" not in result.stderr + result.stdout
    lines = [line for line in result.stderr.splitlines() if line.startswith(("error:", "FAILED"))]
    assert lines, result.stderr
    for fragment in fragments:
        assert any(fragment in line for line in lines), (fragment, result.stderr)
    return "\n".join(lines)


NO_FLOCK = """\
import errno, fcntl, os

def _flock_fails(fd, operation):  # as on Lustre or CIFS mounts: the filesystem has no flock
    with open(os.environ["RPMM_TEST_FLOCK_CALLS"], "a") as calls:
        calls.write(".")
    raise OSError(errno.ENOLCK, "No locks available")

fcntl.flock = _flock_fails
"""


def no_flock_env(env: dict[str, str], folder: Path) -> dict[str, str]:
    """`env` for Python subprocesses in which fcntl.flock fails with ENOLCK (a sitecustomize on PYTHONPATH);
    every call is counted in `folder`/flock-calls, so that a test can check the failing flock was reached."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "sitecustomize.py").write_text(NO_FLOCK)
    return {
        **env,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(folder), env.get("PYTHONPATH")])),
        "RPMM_TEST_FLOCK_CALLS": str(folder / "flock-calls"),
    }


def assert_locking_as_asked(env: dict[str, str]) -> None:
    """Where `env` makes flock fail, the CLI did try it (and so ran on heartbeat markers)."""
    if "RPMM_TEST_FLOCK_CALLS" in env:
        assert Path(env["RPMM_TEST_FLOCK_CALLS"]).read_text()


def recorded_bytes(cache: Path) -> int:
    """Bytes the resume records in the cache's incomplete/ say are on disk."""
    total = 0
    for record in (cache / ".runpod-model-manager" / "incomplete").glob("*.json"):
        with contextlib.suppress(OSError, ValueError, KeyError):  # replaced under our feet: next time
            total += sum(done for _, _, done in json.loads(record.read_text())["parts"])
    return total


def content(n: int, seed: int = 0) -> bytes:
    """`n` bytes that differ with `seed`."""
    block = hashlib.sha256(f"{seed}".encode()).digest()
    return (block * (n // len(block) + 1))[:n]


def wait_until(condition, proc: subprocess.Popen | None = None, what: str = "", timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"the process exited ({proc.returncode}) before {what}")
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


def kill9(proc: subprocess.Popen) -> None:
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)

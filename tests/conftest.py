"""Shared fixtures: a loopback LocalHub that the real huggingface_hub / modelscope clients talk to.

huggingface_hub reads HF_ENDPOINT, HF_HUB_CACHE, HF_HUB_OFFLINE, HF_HUB_DISABLE_XET ... once, at import
time, and modelscope_hub freezes MODELSCOPE_ENDPOINT / MODELSCOPE_CACHE / token in a process-wide default
config on first use. So the session hub is started and the environment is pointed at it in
``pytest_configure``, before any test module imports a client: nothing in the test session can reach
huggingface.co or modelscope.cn, and no user cache or token is touched.

In-process client calls should still pass ``cache_dir=`` explicitly (per-test dirs from ``hub_env``);
subprocesses (CLIs, HF_HUB_OFFLINE=1 checks) get the per-test environment from ``hub_env.env``.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.cli_helpers import no_flock_env
from tests.hub import LocalHub
from tests.hub.client_env import CLEARED_VARS, client_env

_SESSION: dict = {}


def _env_for(hub: LocalHub, root: Path) -> dict[str, str]:
    return client_env(hub.url, root)


def pytest_configure(config: pytest.Config) -> None:
    if _SESSION:
        return
    hub = LocalHub().start()
    root = Path(tempfile.mkdtemp(prefix="localhub-session-"))
    saved = {k: os.environ.get(k) for k in (*CLEARED_VARS, *_env_for(hub, root))}
    for k in CLEARED_VARS:
        os.environ.pop(k, None)
    os.environ.update(_env_for(hub, root))
    _SESSION.update(hub=hub, root=root, saved=saved)


def pytest_unconfigure(config: pytest.Config) -> None:
    if not _SESSION:
        return
    _SESSION["hub"].stop()
    for k, v in _SESSION["saved"].items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v
    shutil.rmtree(_SESSION["root"], ignore_errors=True)
    _SESSION.clear()


def _session_hub() -> LocalHub:
    if not _SESSION:  # conftest imported without pytest_configure (should not happen)
        pytest_configure(None)  # type: ignore[arg-type]
    return _SESSION["hub"]


@pytest.fixture
def hub() -> Iterator[LocalHub]:
    """The session LocalHub, emptied (repos, faults, counters) and with default settings for each test."""
    h = _session_hub()
    h.reset()
    h.token = "hub-test-token"
    h.hf_lfs_redirect = True
    h.ms_lfs_redirect = True
    h.hf_tree_page_size = 1000
    h.hf_siblings_limit = None
    h.ms_files_limit = 3000
    yield h
    h.faults.reset()
    errors = list(h.server_errors)
    h.server_errors.clear()
    assert not errors, "LocalHub raised:\n" + "\n".join(errors)


@dataclass
class HubEnv:
    hub: LocalHub
    root: Path
    hf_home: Path
    hf_cache: Path  # pass as cache_dir= to huggingface_hub
    ms_cache: Path  # pass as cache_dir= to modelscope
    env: dict[str, str]  # full environment for subprocesses (CLIs, offline checks)

    @property
    def url(self) -> str:
        return self.hub.url


@pytest.fixture
def hub_env(hub: LocalHub, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> HubEnv:
    """Per-test cache/home dirs in tmp_path, endpoints -> hub, tokens cleared, telemetry/xet off."""
    root = tmp_path / "hubenv"
    values = _env_for(hub, root)
    for k in CLEARED_VARS:
        monkeypatch.delenv(k, raising=False)
    for k, v in values.items():
        monkeypatch.setenv(k, v)
    for d in ("HF_HUB_CACHE", "MODELSCOPE_CACHE", "MODELSCOPE_HOME"):
        Path(values[d]).mkdir(parents=True, exist_ok=True)
    return HubEnv(
        hub=hub,
        root=root,
        hf_home=Path(values["HF_HOME"]),
        hf_cache=Path(values["HF_HUB_CACHE"]),
        ms_cache=Path(values["MODELSCOPE_CACHE"]),
        env=dict(os.environ),
    )


@pytest.fixture(params=["flock", "markers"])
def locking(request, tmp_path: Path):
    """`locking(env)`: a CLI environment as it is (kernel flock), or where flock fails: heartbeat markers, with
    RPMM_LOCK_STALE=1, far below the time a holder keeps a lock in these tests, so only the heartbeat keeps it."""

    def apply(env: dict[str, str]) -> dict[str, str]:
        if request.param == "flock":
            return env
        return {**no_flock_env(env, tmp_path / "no-flock"), "RPMM_LOCK_STALE": "1"}

    return apply

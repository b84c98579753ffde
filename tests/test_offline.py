"""The handler's model lookup (runpod_model_manager.offline): our cache root first, then RunPod's model cache
(a Serverless endpoint's "Model", at /runpod-volume/huggingface-cache/hub), found offline by huggingface_hub."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

from tests.cli_helpers import run_cli, run_python
from tests.hub import HF


def lookup(env: dict[str, str], repo: str = "org/served"):
    """local_model_path in a fresh process, as the handler calls it."""
    code = (
        "from runpod_model_manager.offline import local_model_path\n"
        "from runpod_model_manager.specs import ModelSpec\n"
        f"print(local_model_path(ModelSpec('huggingface', {repo!r})))\n"
    )
    return run_python(env, code)


def test_runpods_cached_model_is_found_after_our_cache(hub_env, tmp_path):
    hub = hub_env.hub
    runpod_commit = hub.add_repo(HF, "org/served", {"config.json": b'{"v": 1}'})
    runpod = tmp_path / "runpod-volume" / "huggingface-cache" / "hub"
    fill = {**hub_env.env, "HF_HUB_CACHE": str(runpod)}  # RunPod fills it with the standard layout
    hf = str(Path(sys.executable).parent / "hf")
    subprocess.run([hf, "download", "org/served"], env=fill, check=True, capture_output=True, timeout=120)
    ours = tmp_path / "models"
    env = {**hub_env.env, "MODEL_CACHE_DIR": str(ours), "RPMM_RUNPOD_HF_CACHE": str(runpod), "HF_HUB_OFFLINE": "1"}
    snapshot = runpod / "models--org--served" / "snapshots" / runpod_commit

    found = lookup(env)
    assert found.returncode == 0, found.stderr
    assert Path(found.stdout.strip()) == snapshot

    shutil.rmtree(runpod / "models--org--served" / "refs")  # RunPod's docs show snapshots/<hash> only
    assert Path(lookup(env).stdout.strip()) == snapshot

    our_commit = hub.commit(HF, "org/served", {"config.json": b'{"v": 2}'})
    assert run_cli(hub_env.env, "hf:org/served", "--cache-dir", str(ours)).returncode == 0
    assert (
        Path(lookup(env).stdout.strip())
        == ours / "huggingface" / "hub" / "models--org--served" / "snapshots" / our_commit
    )

    missing = lookup(env, "org/elsewhere")
    assert missing.returncode != 0 and "Error" in missing.stderr
    gone = lookup({**env, "RPMM_RUNPOD_HF_CACHE": str(tmp_path / "none")}, "org/elsewhere")
    assert gone.returncode != 0 and "Error" in gone.stderr


def test_env_says_where_runpods_cached_model_is(hub_env, tmp_path):
    result = run_cli({**hub_env.env, "RPMM_RUNPOD_HF_CACHE": "/somewhere/hub"}, "env", "--cache-dir", str(tmp_path))
    assert result.returncode == 0, result.stderr
    assert "# HF_HUB_CACHE=/somewhere/hub to load it" in result.stdout
    assert "one model per endpoint" in result.stdout

"""models.lock (reproducible revisions) and `verify` (integrity of what is on disk), through the real CLI."""

from __future__ import annotations

import dataclasses
import json
import textwrap
from pathlib import Path

import pytest

from tests.cli_helpers import assert_one_line_error, run_cli

MODELS = (("huggingface", "acme/locked"), ("modelscope", "iic/locked"))


@pytest.fixture
def project_env(hub_env, tmp_path):
    """A third-party project (through an entry point) with one model from each hub; the hub serves both."""
    site = tmp_path / "site"
    (site / "lockproj").mkdir(parents=True)
    (site / "lockproj" / "__init__.py").write_text(
        textwrap.dedent(
            """
            from projects.base import BaseProject, huggingface, modelscope

            class LockProject(BaseProject):
                name = "lockproj"
                models = (huggingface("acme/locked"), modelscope("iic/locked"))
            """
        )
    )
    dist = site / "lockproj-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: lockproj\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text("[runpod_model_manager.projects]\nlockproj = lockproj:LockProject\n")
    commits = {
        repo_id: hub_env.hub.add_repo(source, repo_id, {"config.json": b'{"v": 1}', "w.bin": b"\x01" * 5000})
        for source, repo_id in MODELS
    }
    env = {**hub_env.env, "PYTHONPATH": str(site)}
    return env, commits, tmp_path / "models.lock", tmp_path / "cache"


def args(lock: Path, cache: Path, *more: str) -> list[str]:
    return [*more, "--project", "lockproj", "--lock-file", str(lock), "--cache-dir", str(cache)]


def test_lock_pins_commits_and_frozen_downloads_them_without_resolution(hub_env, project_env):
    env, commits, lock, cache = project_env
    result = run_cli(env, "lock", *args(lock, cache))
    assert result.returncode == 0, result.stderr
    data = json.loads(lock.read_text())
    entries = {m["id"]: m for m in data["models"]}
    assert entries["acme/locked"]["commit"] == commits["acme/locked"]
    files = {f["path"]: f for f in entries["acme/locked"]["files"]}
    assert files["w.bin"]["size"] == 5000 and files["w.bin"]["checksum"].startswith("sha256:")

    # the branches move on; the lock keeps the old commits
    for source, repo_id in MODELS:
        hub_env.hub.commit(source, repo_id, {"config.json": b'{"v": 2}'})
    hub_env.hub.reset_counters()
    result = run_cli(env, *args(lock, cache, "--frozen", "--json"))
    assert result.returncode == 0, result.stderr
    assert hub_env.hub.count("hf.revision") + hub_env.hub.count("ms.files") + hub_env.hub.count("ms.revisions") == 0
    snapshot = cache / "huggingface" / "hub" / "models--acme--locked" / "snapshots" / commits["acme/locked"]
    assert (snapshot / "config.json").read_bytes() == b'{"v": 1}'
    ms_folder = cache / "modelscope" / "models" / "iic--locked" / "snapshots" / "master"
    assert (ms_folder / "config.json").read_bytes() == b'{"v": 1}'

    hub_env.hub.reset_counters()
    warm = run_cli(env, *args(lock, cache, "--frozen", "--json"))
    assert {m["status"] for m in json.loads(warm.stdout)["models"]} == {"complete"}
    assert sum(hub_env.hub.requests.values()) == 0  # a warm, locked run sends no request at all

    upgraded = run_cli(env, "lock", "--upgrade", "--project", "lockproj", "--lock-file", str(lock))
    assert upgraded.returncode == 0, upgraded.stderr
    entries = {m["id"]: m for m in json.loads(lock.read_text())["models"]}
    assert entries["acme/locked"]["commit"] != commits["acme/locked"]


def test_frozen_without_lock_fails(project_env):
    env, _, lock, cache = project_env
    assert_one_line_error(run_cli(env, *args(lock, cache, "--frozen")), 2, "--frozen needs a lock file")


def test_frozen_with_stale_lock_fails_without_requests(hub_env, project_env):
    env, _, lock, cache = project_env
    lock.write_text(json.dumps({"version": 1, "models": []}))
    result = run_cli(env, *args(lock, cache, "--frozen"))
    assert_one_line_error(result, 1, "not in the lock file")
    assert sum(hub_env.hub.requests.values()) == 0


def test_locked_commit_gone_from_the_hub(hub_env, project_env):
    env, _, lock, cache = project_env
    assert run_cli(env, "lock", "--project", "lockproj", "--lock-file", str(lock)).returncode == 0
    hub_env.hub.reset()
    hub_env.hub.add_repo("huggingface", "acme/locked", {"other.txt": b"rewritten history"})
    hub_env.hub.add_repo("modelscope", "iic/locked", {"other.txt": b"rewritten history"})
    result = run_cli(env, *args(lock, cache, "--frozen"))
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert "FAILED huggingface:acme/locked" in result.stderr and "404" in result.stderr


def test_verify_finds_and_repairs_a_corrupted_file(hub_env, project_env):
    env, commits, lock, cache = project_env
    assert run_cli(env, *args(lock, cache)).returncode == 0
    assert run_cli(env, "verify", "--project", "lockproj", "--cache-dir", str(cache)).returncode == 0

    blob = (
        cache / "huggingface" / "hub" / "models--acme--locked" / "snapshots" / commits["acme/locked"] / "w.bin"
    ).resolve()
    blob.write_bytes(b"\x02" * 5000)  # same size, other bytes: only a hash can tell
    ms_file = cache / "modelscope" / "models" / "iic--locked" / "snapshots" / "master" / "config.json"
    ms_file.write_bytes(b'{"v": 9}')
    result = run_cli(env, "verify", "--project", "lockproj", "--cache-dir", str(cache), "--json")
    assert result.returncode == 1
    problems = {m["model"]: m["problems"] for m in json.loads(result.stdout)["models"]}
    assert list(problems["acme/locked"]) == ["w.bin"] and list(problems["iic/locked"]) == ["config.json"]

    hub_env.hub.reset_counters()
    repaired = run_cli(env, "verify", "--project", "lockproj", "--cache-dir", str(cache), "--repair")
    assert repaired.returncode == 0, repaired.stderr
    assert "repaired" in repaired.stdout
    assert hub_env.hub.bytes_sent() == 5000 + len(b'{"v": 1}')  # only the two bad files
    assert blob.read_bytes() == b"\x01" * 5000
    assert run_cli(env, "verify", "--project", "lockproj", "--cache-dir", str(cache)).returncode == 0


def test_lock_refuses_a_hostile_modelscope_commit_id(hub_env, project_env, tmp_path):
    """Pinning asks the hub which commit a branch is on: an answer that is a path must name nothing."""
    env, _, lock, cache = project_env
    repo = hub_env.hub.repo("modelscope", "iic/locked")
    bad = "../../../../../../../pwned"
    repo.commits[bad] = dataclasses.replace(repo.resolve(None), sha=bad)
    repo.branches[repo.default_branch] = bad
    result = run_cli(env, "lock", "--project", "lockproj", "--lock-file", str(lock))
    assert_one_line_error(result, 1, "iic/locked", "malformed metadata", "commit id")
    assert list(tmp_path.rglob("pwned*")) == []
    assert "iic/locked" not in lock.read_text()

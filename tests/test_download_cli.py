"""End to end through the real CLI (a subprocess, as a user runs it) against the local hub."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import stat
from pathlib import Path

import pytest

from tests.cli_helpers import assert_one_line_error, run_cli, run_python
from tests.hub import make_file

HF_ID = "acme/tiny-model"
MS_ID = "iic/tiny-model"
BIG = 40 * 1024 * 1024  # above two engine parts: fetched with several Range connections


@pytest.fixture(scope="module")
def big_file(tmp_path_factory) -> Path:
    return make_file(tmp_path_factory.mktemp("big") / "model.safetensors", BIG, seed=7)


def repo_files(big_file: Path) -> dict[str, bytes | Path]:
    return {
        "config.json": b'{"hidden_size": 8}',
        "README.md": b"# tiny\n",
        "tokenizer/vocab.txt": b"a\nb\nc\n",
        "nested/deeper/weights.bin": os.urandom(300_000),
        "données/modèle_é.txt": b"non-ASCII name",
        "model.safetensors": big_file,
    }


@pytest.fixture
def repos(hub, big_file):
    files = repo_files(big_file)
    hf_commit = hub.add_repo("huggingface", HF_ID, files)
    ms_commit = hub.add_repo("modelscope", MS_ID, files)
    return {"files": files, "hf_commit": hf_commit, "ms_commit": ms_commit}


def content(value: bytes | Path) -> bytes:
    return value.read_bytes() if isinstance(value, Path) else value


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def assert_same_files(folder: Path, files: dict[str, bytes | Path]) -> None:
    for name, value in files.items():
        assert (folder / name).read_bytes() == content(value), name


def offline_env(hub_env, cache: Path) -> dict[str, str]:
    env = dict(hub_env.env)
    env.update(
        HF_HUB_OFFLINE="1",
        HF_HOME=str(cache / "huggingface"),
        MODELSCOPE_CACHE=str(cache / "modelscope"),
        HF_ENDPOINT="http://127.0.0.1:9",  # nothing listens there: any request would fail
        MODELSCOPE_ENDPOINT="http://127.0.0.1:9",
    )
    env.pop("HF_HUB_CACHE")
    return env


def test_huggingface_model_lands_in_native_cache_and_loads_offline(hub_env, repos, tmp_path):
    cache = tmp_path / "cache"
    result = run_cli(hub_env.env, HF_ID, "--cache-dir", str(cache))
    assert result.returncode == 0, result.stderr
    repo_dir = cache / "huggingface" / "hub" / "models--acme--tiny-model"
    snapshot = repo_dir / "snapshots" / repos["hf_commit"]
    assert_same_files(snapshot, repos["files"])
    assert (repo_dir / "refs" / "main").read_text() == repos["hf_commit"]
    assert (snapshot / "config.json").is_symlink()
    assert (repo_dir / "blobs" / digest(snapshot / "model.safetensors")).is_file()
    # several Range requests for the big file, and no leftovers
    assert not list((cache / ".runpod-model-manager" / "incomplete").iterdir())

    code = (
        "from huggingface_hub import snapshot_download, hf_hub_download\n"
        f"p = snapshot_download({HF_ID!r}, local_files_only=True)\n"
        f"f = hf_hub_download({HF_ID!r}, 'données/modèle_é.txt')\n"
        "print(p); print(f)\n"
    )
    offline = run_python(offline_env(hub_env, cache), code)
    assert offline.returncode == 0, offline.stderr
    assert offline.stdout.splitlines() == [str(snapshot), str(snapshot / "données/modèle_é.txt")]


def test_big_file_uses_parallel_range_requests(hub_env, repos, tmp_path):
    result = run_cli(hub_env.env, HF_ID, "--cache-dir", str(tmp_path), "--include", "model.safetensors")
    assert result.returncode == 0, result.stderr
    ranged = [r for r in hub_env.hub.log if r.path.startswith("/_cdn/") and r.range]
    assert len(ranged) >= 2
    assert hub_env.hub.bytes_sent(HF_ID, "model.safetensors") == BIG


def test_modelscope_model_lands_in_native_cache_and_loads_offline(hub_env, repos, tmp_path):
    cache = tmp_path / "cache"
    result = run_cli(hub_env.env, MS_ID, "--cache-dir", str(cache))
    assert result.returncode == 0, result.stderr
    folder = cache / "modelscope" / "models" / "iic--tiny-model" / "snapshots" / "master"
    assert_same_files(folder, repos["files"])
    code = (
        "from modelscope import snapshot_download\n"
        "from modelscope.hub.file_download import model_file_download\n"
        f"print(snapshot_download({MS_ID!r}, local_files_only=True))\n"
        f"print(model_file_download({MS_ID!r}, 'nested/deeper/weights.bin', local_files_only=True))\n"
    )
    offline = run_python(offline_env(hub_env, cache), code)
    assert offline.returncode == 0, offline.stderr
    assert offline.stdout.splitlines()[-2:] == [str(folder), str(folder / "nested/deeper/weights.bin")]


def test_explicit_revisions_commit_and_tag(hub_env, repos, tmp_path):
    hub = hub_env.hub
    old = repos["hf_commit"]
    new = hub.commit("huggingface", HF_ID, {"config.json": b'{"hidden_size": 16}'}, tags=["v2"])
    cache = tmp_path / "cache"
    result = run_cli(hub_env.env, f"{HF_ID}@{old}", f"hf:{HF_ID}@v2", "--cache-dir", str(cache), "--include", "*.json")
    assert result.returncode == 0, result.stderr
    snapshots = cache / "huggingface" / "hub" / "models--acme--tiny-model" / "snapshots"
    assert (snapshots / old / "config.json").read_bytes() == b'{"hidden_size": 8}'
    assert (snapshots / new / "config.json").read_bytes() == b'{"hidden_size": 16}'
    refs = cache / "huggingface" / "hub" / "models--acme--tiny-model" / "refs"
    assert (refs / "v2").read_text() == new


def test_modelscope_revision_tag(hub_env, repos, tmp_path):
    hub_env.hub.tag("modelscope", MS_ID, "v1.0.0")
    hub_env.hub.commit("modelscope", MS_ID, {"config.json": b"{}"})
    cache = tmp_path / "cache"
    result = run_cli(hub_env.env, f"{MS_ID}@v1.0.0", "--cache-dir", str(cache), "--include", "config.json")
    assert result.returncode == 0, result.stderr
    folder = cache / "modelscope" / "models" / "iic--tiny-model" / "snapshots" / "v1.0.0"
    assert (folder / "config.json").read_bytes() == b'{"hidden_size": 8}'


def test_include_exclude(hub_env, repos, tmp_path):
    result = run_cli(
        hub_env.env,
        HF_ID,
        "--cache-dir",
        str(tmp_path),
        "--include",
        "*.json",
        "--include",
        "nested/*",
        "--exclude",
        "*.bin",
        "--json",
    )
    assert result.returncode == 0, result.stderr
    [model] = json.loads(result.stdout)["models"]
    snapshot = Path(model["path"])
    assert sorted(str(p.relative_to(snapshot)) for p in snapshot.rglob("*") if not p.is_dir()) == ["config.json"]
    assert hub_env.hub.count("cdn.blob") + hub_env.hub.count("hf.resolve") == 1


def test_partial_download_rerun_fetches_only_what_is_missing(hub_env, repos, tmp_path):
    cache = tmp_path / "cache"
    assert run_cli(hub_env.env, HF_ID, "--cache-dir", str(cache)).returncode == 0
    snapshot = cache / "huggingface" / "hub" / "models--acme--tiny-model" / "snapshots" / repos["hf_commit"]
    # a partial download as the original tool left it: the folder is non-empty but a file is missing
    (snapshot / "nested/deeper/weights.bin").resolve().unlink()
    hub_env.hub.reset_counters()

    listing = json.loads(run_cli(hub_env.env, "list", "--cache-dir", str(cache), "--json").stdout)
    assert listing["cache"] == str(cache)

    result = run_cli(hub_env.env, HF_ID, "--cache-dir", str(cache), "--json")
    assert result.returncode == 0, result.stderr
    [model] = json.loads(result.stdout)["models"]
    assert model["status"] == "downloaded"
    assert model["downloaded_files"] == ["nested/deeper/weights.bin"]
    assert model["missing_files"] == []  # nothing is missing after the run
    assert hub_env.hub.bytes_sent(HF_ID) == 300_000
    assert_same_files(snapshot, repos["files"])

    hub_env.hub.reset_counters()
    again = run_cli(hub_env.env, HF_ID, "--cache-dir", str(cache), "--json")
    assert json.loads(again.stdout)["models"][0]["status"] == "complete"
    assert hub_env.hub.bytes_sent() == 0
    assert sum(hub_env.hub.requests.values()) == 1  # one metadata request, no file request


def test_dry_run_writes_nothing(hub_env, repos, tmp_path):
    cache = tmp_path / "cache"
    result = run_cli(hub_env.env, HF_ID, MS_ID, "--cache-dir", str(cache), "--dry-run")
    assert result.returncode == 0, result.stderr
    assert "would download huggingface:acme/tiny-model" in result.stdout
    assert "données/modèle_é.txt" in result.stdout
    total = sum(len(content(v)) for v in repos["files"].values())
    assert f"{total / 1e6 * 2:.1f} MB" in result.stdout
    assert not cache.exists()
    assert hub_env.hub.bytes_sent() == 0


def test_force_downloads_again(hub_env, repos, tmp_path):
    args = (HF_ID, "--cache-dir", str(tmp_path), "--include", "config.json")
    assert run_cli(hub_env.env, *args).returncode == 0
    hub_env.hub.reset_counters()
    assert run_cli(hub_env.env, *args, "--force").returncode == 0
    assert hub_env.hub.bytes_sent(HF_ID, "config.json") == len(b'{"hidden_size": 8}')


def test_plain_output_when_not_a_tty(hub_env, repos, tmp_path):
    result = run_cli(hub_env.env, HF_ID, "--cache-dir", str(tmp_path))
    assert result.returncode == 0
    assert "\x1b" not in result.stdout + result.stderr
    assert f"cache: {tmp_path} (--cache-dir)" in result.stderr
    assert "downloading acme/tiny-model: model.safetensors" in result.stderr
    lines = result.stderr.splitlines()  # worker threads write at once: each line stays whole
    prefixes = ("cache: ", "to download: 6 files, ", "downloading ", "done ", "progress: ")
    assert all(line.startswith(prefixes) for line in lines), lines
    assert sum(line.startswith("done ") for line in lines) == len(repo_files(Path("big")))
    assert f"downloaded huggingface:{HF_ID}" in result.stdout


def test_gated_repo_needs_a_token_and_the_token_is_never_printed(hub_env, big_file, tmp_path):
    hub = hub_env.hub
    hub.add_repo("huggingface", "acme/gated", {"config.json": b"{}"}, gated=True)
    denied = run_cli(hub_env.env, "acme/gated", "--cache-dir", str(tmp_path))
    assert_one_line_error(denied, 1, "acme/gated", "gated", "--token")
    ok = run_cli(hub_env.env, "acme/gated", "--cache-dir", str(tmp_path), "--token", hub.token, "-v")
    assert ok.returncode == 0, ok.stderr
    env = {**hub_env.env, "HF_TOKEN": hub.token}
    assert run_cli(env, "acme/gated", "--cache-dir", str(tmp_path / "2")).returncode == 0
    assert hub.token not in ok.stdout + ok.stderr


def test_one_failure_does_not_stop_the_others(hub_env, repos, tmp_path):
    result = run_cli(hub_env.env, "acme/missing", HF_ID, "--cache-dir", str(tmp_path), "--include", "*.json")
    assert result.returncode == 1
    assert f"downloaded huggingface:{HF_ID}" in result.stdout
    assert "FAILED huggingface:acme/missing: repository not found" in result.stderr
    assert "1 of 2 models failed" in result.stderr


@pytest.mark.parametrize(
    ("args", "code", "fragments"),
    [
        (["acme/does-not-exist"], 1, ["acme/does-not-exist", "not found"]),
        (["iic/does-not-exist"], 1, ["iic/does-not-exist", "not found"]),
        ([f"{HF_ID}@no-such-branch"], 1, ["no-such-branch", "not found"]),
        ([f"{MS_ID}@no-such-tag"], 1, ["no-such-tag", "not found"]),
        (["not a model id"], 2, ["not a valid model ID"]),
        (["--source", "nowhere", HF_ID], 2, ["unknown source 'nowhere'"]),
        (["nowhere:org/name"], 2, ["unknown source 'nowhere'"]),
        (["--project", "no_such_project"], 2, ["unknown project 'no_such_project'"]),
        ([], 2, ["nothing to download"]),
    ],
)
def test_bad_input_is_one_sentence(hub_env, repos, tmp_path, args, code, fragments):
    result = run_cli(hub_env.env, *args, "--cache-dir", str(tmp_path))
    assert_one_line_error(result, code, *fragments)


def test_unwritable_cache_dir(hub_env, repos, tmp_path):
    locked = tmp_path / "ro"
    locked.mkdir()
    locked.chmod(stat.S_IRUSR | stat.S_IXUSR)
    target = locked / "cache" if os.geteuid() != 0 else Path("/proc/rpmm-cache")  # root ignores modes
    result = run_cli(hub_env.env, HF_ID, "--cache-dir", str(target))
    assert_one_line_error(result, 2, "cannot write to the cache directory", "--cache-dir")


def test_hub_unreachable(hub_env, tmp_path):
    env = {**hub_env.env, "HF_ENDPOINT": "http://127.0.0.1:9", "MODELSCOPE_ENDPOINT": "http://127.0.0.1:9"}
    result = run_cli(env, HF_ID, MS_ID, "--cache-dir", str(tmp_path))
    assert_one_line_error(result, 1, "could not reach http://127.0.0.1:9 (connection refused)", "HF_ENDPOINT")
    assert "MODELSCOPE_ENDPOINT" in result.stderr and "timed out" not in result.stderr


def test_json_output_is_machine_readable(hub_env, repos, tmp_path):
    result = run_cli(hub_env.env, HF_ID, "acme/missing", "--cache-dir", str(tmp_path), "--json")
    assert result.returncode == 1
    models = {m["model"]: m for m in json.loads(result.stdout)["models"]}
    assert models[HF_ID]["status"] == "downloaded"
    assert models[HF_ID]["commit"] == repos["hf_commit"]
    assert models[HF_ID]["total_bytes"] == sum(len(content(v)) for v in repos["files"].values())
    assert models[HF_ID]["missing_files"] == []
    assert sorted(models[HF_ID]["downloaded_files"]) == sorted(repos["files"])
    assert models["acme/missing"]["status"] == "failed"
    assert "not found" in models["acme/missing"]["error"]


def test_env_prints_what_a_consumer_needs(hub_env, tmp_path):
    result = run_cli(hub_env.env, "env", "--cache-dir", str(tmp_path))
    assert result.returncode == 0
    assert f"export HF_HOME={tmp_path}/huggingface" in result.stdout.splitlines()
    assert f"export MODELSCOPE_CACHE={tmp_path}/modelscope" in result.stdout.splitlines()
    assert "export HF_HUB_OFFLINE=1" in result.stdout.splitlines()


def test_help_and_list_do_not_import_hub_libraries(hub_env, tmp_path):
    code = (
        "import sys\n"
        "from click.testing import CliRunner\n"
        "from download_models import cli\n"
        "for args in (['--help'], ['list', '--cache-dir', sys.argv[1]], ['download', '--help']):\n"
        "    assert CliRunner().invoke(cli, args).exit_code == 0, args\n"
        "heavy = ('huggingface_hub', 'modelscope', 'modelscope_hub')\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in heavy))\n"
    )
    result = run_python(hub_env.env, code.replace("sys.argv[1]", repr(str(tmp_path))))
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_modelscope_branch_that_moved_replaces_changed_files_of_equal_size(hub_env, repos, tmp_path):
    cache = tmp_path / "cache"
    assert run_cli(hub_env.env, MS_ID, "--cache-dir", str(cache), "--include", "*.json").returncode == 0
    hub_env.hub.commit("modelscope", MS_ID, {"config.json": b'{"hidden_size": 9}'})  # same size, new bytes
    result = run_cli(hub_env.env, MS_ID, "--cache-dir", str(cache), "--include", "*.json", "--json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["models"][0]["downloaded_files"] == ["config.json"]
    folder = cache / "modelscope" / "models" / "iic--tiny-model" / "snapshots" / "master"
    assert (folder / "config.json").read_bytes() == b'{"hidden_size": 9}'


def test_parts_reuse_the_redirect_and_never_send_the_token_to_the_cdn(hub_env, big_file, tmp_path):
    hub = hub_env.hub
    hub.add_repo("huggingface", "acme/gated-big", {"model.safetensors": big_file}, gated=True)
    args = ("--cache-dir", str(tmp_path), "--token", hub.token, "--connections", "1")  # parts one after another
    result = run_cli(hub_env.env, "acme/gated-big", *args)
    assert result.returncode == 0, result.stderr
    cdn = [r for r in hub.log if r.server == "cdn"]
    assert len(cdn) >= 2  # several Range parts
    assert hub.count("hf.resolve") == 1  # one redirect, then straight to the CDN
    assert not any(r.credentials for r in cdn)
    assert all(r.credentials for r in hub.log if r.server == "hub")


@pytest.mark.parametrize("source", ["huggingface", "modelscope"])
def test_bytes_that_do_not_match_the_published_checksum_are_never_kept(hub_env, big_file, tmp_path, source):
    """Checked while they arrive (several parts) or at the end (one request): a mismatch keeps nothing."""
    hub = hub_env.hub
    hub.hf_lfs_redirect = hub.ms_lfs_redirect = False  # served by path, so the listing can lie
    repo_id = "acme/lying" if source == "huggingface" else "iic/lying"
    hub.add_repo(source, repo_id, {"model.safetensors": big_file, "small.txt": b"small file"})
    commit = hub.repo(source, repo_id).resolve(None)
    for name, entry in list(commit.files.items()):
        commit.files[name] = dataclasses.replace(entry, sha256="0" * 64, git_sha1="0" * 40)
    cache = tmp_path / "cache"
    result = run_cli(hub_env.env, f"{source}:{repo_id}", "--cache-dir", str(cache))
    assert result.returncode == 1
    assert "do not match the hub's checksum" in result.stderr and "Traceback" not in result.stderr
    assert hub.bytes_sent(repo_id, "model.safetensors") == BIG  # all of it arrived, and was refused
    assert not [p for p in cache.rglob("*") if p.is_file() and "locks" not in p.parts]

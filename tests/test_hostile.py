"""Hostile input, through the real CLI (a subprocess) against a LocalHub playing a malicious mirror: revisions
and lock files that point outside the cache, planted symlinks, hubs that hang, drip or never end, malformed
answers, and bad command-line or environment values. Nothing outside the cache is ever written or deleted,
no request waits forever, memory stays bounded, one broken model never stops the others, and every error is
one sentence.
"""

from __future__ import annotations

import json
import os
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.cli_helpers import REPO_ROOT, assert_one_line_error, run_cli
from tests.hub import HF, MS, LocalHub

STATE = ".runpod-model-manager"
FAST = {
    "RPMM_RETRY_BACKOFF": "0.01",
    "RPMM_RETRY_BACKOFF_MAX": "0.05",
    "RPMM_CONNECT_TIMEOUT": "2",
    "RPMM_STALL_TIMEOUT": "2",
}
METADATA_ROUTE = {HF: "hf.revision", MS: "ms.files"}
SHORT = {HF: "hf", MS: "ms"}


@pytest.fixture
def env(hub_env) -> dict[str, str]:
    return {**hub_env.env, **FAST}


def spec(source: str, repo: str) -> str:
    return f"{SHORT[source]}:{repo}"


def everything_under(folder: Path) -> list[Path]:
    return sorted(folder.rglob("*")) if folder.exists() else []


def limit_memory(limit: int = 4 << 30):
    """A guard for the tests of unbounded answers: a regression fails the test instead of filling the machine."""

    def preexec() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))

    return preexec


def logged(hub: LocalHub, fragment: str, count: int = 1) -> list:
    """The hub's records of requests whose path holds `fragment`, once there are `count` of them: a request
    the client gave up on is logged when the hub next writes to the closed connection."""
    deadline = time.monotonic() + 30
    while len(records := [r for r in list(hub.log) if fragment in r.path]) < count:
        assert time.monotonic() < deadline, f"the hub logged {len(records)} requests for {fragment}, not {count}"
        time.sleep(0.05)
    return records


def good_model(hub: LocalHub, source: str = HF) -> str:
    """A well-behaved model to run next to a broken one: it must complete whatever happens to the other."""
    repo = "org/good"
    hub.add_repo(source, repo, {"good.txt": b"good"})
    return spec(source, repo)


def assert_good_model_done(result: subprocess.CompletedProcess, source: str = HF) -> None:
    assert f"downloaded {'huggingface' if source == HF else 'modelscope'}:org/good" in result.stdout, result.stdout


# -- 1. revisions are checked before any path is built from them -------------------------------------------
OUT = "../" * 12 + "tmp/rpmm-pwned"


@pytest.mark.parametrize(
    ("source", "how", "revision"),
    [
        (HF, "@", "main/" + OUT),
        (HF, "--revision", "{tmp}/pwned"),
        (HF, "--revision", "main/../../../../../../../../pwned"),
        (HF, "--revision", "v1\\..\\..\\pwned"),
        (HF, "--revision", "v1\x1b[2Jpwned"),
        (MS, "@", "x/" + OUT),
        (MS, "--revision", "{tmp}/pwned"),
    ],
    ids=["hf-at-dotdot", "hf-absolute", "hf-dotdot", "hf-backslash", "hf-control", "ms-at-dotdot", "ms-absolute"],
)
def test_a_revision_that_leaves_its_folder_is_refused(hub, env, tmp_path, source, how, revision):
    """A mirror answering 200 for any revision would otherwise make us write refs/<revision>, the ModelScope
    snapshot folder and our records outside the cache."""
    hub.add_repo(source, "org/rev", {"config.json": b"{}"})
    hub.repo(source, "org/rev").any_revision = True
    revision = revision.replace("{tmp}", str(tmp_path))
    cache = tmp_path / "a" / "b" / "c" / "cache"
    args = [spec(source, "org/rev") + "@" + revision] if how == "@" else [spec(source, "org/rev"), how, revision]
    result = run_cli(env, *args, "--cache-dir", str(cache))
    assert_one_line_error(result, 2, "the revision", "give a branch, tag or commit name")
    assert sum(hub.requests.values()) == 0
    assert [p for p in everything_under(tmp_path) if "pwned" in p.name] == []
    assert not Path("/tmp/rpmm-pwned").exists()


def test_branch_names_with_slashes_still_work(hub, env, tmp_path):
    commit = hub.add_repo(HF, "org/pr", {"config.json": b"{}"}, branch="refs/pr/1")
    cache = tmp_path / "cache"
    result = run_cli(env, "hf:org/pr@refs/pr/1", "--cache-dir", str(cache))
    assert result.returncode == 0, result.stderr
    ref = cache / "huggingface" / "hub" / "models--org--pr" / "refs" / "refs" / "pr" / "1"
    assert ref.read_text() == commit


# -- 2. every value of a lock file is checked, on every command ----------------------------------------------
def _file_checksum(hub: LocalHub, source: str, repo: str, path: str) -> str:
    entry = hub.file(source, repo, path)
    return f"sha256:{entry.sha256}" if source == MS or entry.lfs else f"git-sha1:{entry.blob_id}"


def _lock_entry(hub: LocalHub, source: str, repo: str) -> dict:
    commit = hub.repo(source, repo).resolve(None)
    files = [
        {"path": path, "size": entry.size, "checksum": _file_checksum(hub, source, repo, path)}
        for path, entry in commit.files.items()
    ]
    return {"source": source, "id": repo, "revision": None, "commit": commit.sha, "files": files}


def _blob_dir(cache: Path) -> Path:
    return cache / "huggingface" / "hub" / "models--acme--locked" / "blobs"


def _ms_snapshot(cache: Path) -> Path:
    return cache / "modelscope" / "models" / "iic--locked" / "snapshots" / "master"


def _hostile_path(entry: dict, victim: Path, cache: Path) -> str:
    entry["files"][0]["path"] = os.path.relpath(victim, _ms_snapshot(cache))
    entry["files"][0]["size"] = 1
    return json.dumps(entry["files"][0]["path"])


def _hostile_checksum(entry: dict, victim: Path, cache: Path) -> str:
    entry["files"][0]["checksum"] = "sha256:" + os.path.relpath(victim, _blob_dir(cache))
    return json.dumps(entry["files"][0]["checksum"])


def _set(model_key: str | None = None, file_key: str | None = None, value=None):
    def mutate(entry: dict, victim: Path, cache: Path) -> str:
        (entry["files"][0] if file_key else entry)[file_key or model_key] = value
        return f'"{file_key or model_key}": {json.dumps(value)}'

    return mutate


ALL_COMMANDS = (
    ("verify", "--repair", "hf:acme/locked", "ms:iic/locked"),
    ("verify", "hf:acme/locked", "ms:iic/locked"),
    ("download", "hf:acme/locked", "ms:iic/locked", "--frozen"),
    ("download", "hf:acme/locked", "ms:iic/locked"),
    ("list",),
)
HOSTILE_LOCKS = {
    "path-outside": (MS, _hostile_path, ALL_COMMANDS),
    "checksum-outside": (HF, _hostile_checksum, ALL_COMMANDS),
    "size-not-a-number": (HF, _set(file_key="size", value="zz"), ALL_COMMANDS[2:]),
    "commit-is-a-path": (MS, _set(model_key="commit", value="../../../pwned"), ALL_COMMANDS[2:3]),
    "revision-absolute": (HF, _set(model_key="revision", value="/tmp/pwned"), ALL_COMMANDS[2:3]),
    "negative-size": (HF, _set(file_key="size", value=-5), ALL_COMMANDS[2:3]),
    "id-with-dotdot": (HF, _set(model_key="id", value="../../pwned"), ALL_COMMANDS[2:3]),
}


@pytest.mark.parametrize("case", list(HOSTILE_LOCKS))
def test_a_hostile_lock_file_is_refused_whole_naming_its_line(hub, env, tmp_path, case):
    source, mutate, commands = HOSTILE_LOCKS[case]
    for src, repo in ((HF, "acme/locked"), (MS, "iic/locked")):
        hub.add_repo(src, repo, {"config.json": b'{"v": 1}', "w.bin": b"\x01" * 100})
    cache, lock = tmp_path / "deep" / "er" / "cache", tmp_path / "models.lock"
    victim = tmp_path / "victim.txt"
    victim.write_text("not yours")
    entries = [_lock_entry(hub, HF, "acme/locked"), _lock_entry(hub, MS, "iic/locked")]
    bad_value = mutate(entries[0 if source == HF else 1], victim, cache)
    text = json.dumps({"version": 1, "models": entries}, indent=2, sort_keys=True) + "\n"
    lock.write_text(text)
    line = text[: text.index(bad_value)].count("\n") + 1
    for command in commands:
        result = run_cli(env, *command, "--lock-file", str(lock), "--cache-dir", str(cache))
        assert_one_line_error(result, 2, f"{lock} line {line}:", "download-models lock")
        assert victim.read_text() == "not yours", command
        assert [p for p in everything_under(tmp_path) if "pwned" in p.name] == []
    assert sum(hub.requests.values()) == 0


# -- 3. nothing is written through a symlink that leads out of the cache ------------------------------------
PLANTED = {
    "hf-blobs": (HF, "huggingface/hub/models--org--sym/blobs"),
    "hf-snapshots": (HF, "huggingface/hub/models--org--sym/snapshots"),
    "hf-refs": (HF, "huggingface/hub/models--org--sym/refs"),
    "ms-snapshots": (MS, "modelscope/models/org--sym/snapshots"),
    "our-records": (HF, f"{STATE}/models/huggingface/org/sym"),
}


@pytest.mark.parametrize("case", list(PLANTED))
def test_a_planted_symlink_out_of_the_cache_is_never_written_through(hub, env, tmp_path, case):
    source, folder = PLANTED[case]
    hub.add_repo(source, "org/sym", {"config.json": b"{}", "w.bin": b"\x02" * 1000})
    cache, outside = tmp_path / "cache", tmp_path / "outside"
    outside.mkdir()
    (cache / folder).parent.mkdir(parents=True)
    (cache / folder).symlink_to(outside)
    result = run_cli(env, spec(source, "org/sym"), good_model(hub, source), "--cache-dir", str(cache))
    assert_one_line_error(result, 1, "org/sym", "outside")
    assert_good_model_done(result, source)
    assert everything_under(outside) == []


def test_verify_repair_never_deletes_through_a_planted_symlink(hub, env, tmp_path):
    hub.add_repo(HF, "org/sym", {"config.json": b"{}"})
    cache, outside = tmp_path / "cache", tmp_path / "outside"
    assert run_cli(env, "hf:org/sym", "--cache-dir", str(cache)).returncode == 0
    blobs = cache / "huggingface" / "hub" / "models--org--sym" / "blobs"
    (victim,) = blobs.iterdir()
    outside.mkdir()
    (outside / victim.name).write_text("not yours, and not the blob")
    shutil.rmtree(blobs)
    blobs.symlink_to(outside)
    result = run_cli(env, "verify", "--repair", "hf:org/sym", "--cache-dir", str(cache))
    assert result.returncode == 1
    assert "outside" in result.stdout
    assert (outside / victim.name).read_text() == "not yours, and not the blob"


# -- 4. metadata requests have deadlines and a size cap ------------------------------------------------------
ENDLESS_START = {HF: b'{"sha": "' + b"a" * 40 + b'", "siblings": [', MS: b'{"Code": 200, "Data": {"Files": ['}
ENDLESS_ITEM = {HF: b'{"rfilename": "x.txt", "size": 1, "blobId": "' + b"b" * 40 + b'"}, ', MS: b'{"Path": "x"}, '}


@pytest.mark.parametrize("source", [HF, MS])
@pytest.mark.parametrize("fault", ["hang", "drip-body", "drip-headers"])
def test_a_metadata_answer_that_never_completes_fails_alone(hub, env, tmp_path, source, fault):
    hub.add_repo(source, "org/slow", {"config.json": b"{}"})
    route = f"org/slow/{'revision' if source == HF else 'repo/files'}"
    if fault == "hang":
        hub.faults.hang(route, seconds=60)
    else:
        hub.faults.drip(route, bytes_per_second=5, headers=fault == "drip-headers")
    env = {**env, "RPMM_METADATA_TIMEOUT": "3", "RPMM_STALL_TIMEOUT": "1"}
    result = run_cli(env, spec(source, "org/slow"), good_model(hub, source), "--cache-dir", str(tmp_path), timeout=40)
    expected = "timed out" if fault == "hang" else "no whole answer within 3 s"
    assert_one_line_error(result, 1, "org/slow", "could not reach", expected)
    assert_good_model_done(result, source)


@pytest.mark.parametrize("source", [HF, MS])
def test_an_endless_metadata_answer_is_cut_at_the_cap(hub, env, tmp_path, source):
    hub.add_repo(source, "org/endless", {"config.json": b"{}"})
    route = f"org/endless/{'revision' if source == HF else 'repo/files'}"
    hub.faults.endless(route, start=ENDLESS_START[source], repeat=ENDLESS_ITEM[source])
    env = {**env, "RPMM_METADATA_MAX_BYTES": str(1 << 20)}
    result = run_cli(
        env,
        spec(source, "org/endless"),
        good_model(hub, source),
        "--cache-dir",
        str(tmp_path),
        timeout=60,
        preexec_fn=limit_memory(),
    )
    assert_one_line_error(result, 1, "org/endless", "larger than 1,048,576 bytes", "RPMM_METADATA_MAX_BYTES")
    assert_good_model_done(result, source)
    (endless,) = logged(hub, "org/endless")
    assert endless.bytes_sent < 64 << 20  # the cap, plus what the sockets' buffers held


# -- 5. a body trickling in under the speed floor is a stall ------------------------------------------------
@pytest.mark.parametrize("source", [HF, MS])
def test_a_file_dripping_under_the_speed_floor_is_retried_then_fails(hub, env, tmp_path, source):
    hub.add_repo(source, "org/drip", {"data.txt": b"d" * 200_000})
    hub.faults.drip("data.txt", bytes_per_second=100, times=10)
    env = {**env, "RPMM_STALL_TIMEOUT": "1", "RPMM_RETRIES": "1", "RPMM_MIN_SPEED": "1024"}
    result = run_cli(env, spec(source, "org/drip"), good_model(hub, source), "--cache-dir", str(tmp_path), timeout=60)
    assert_one_line_error(result, 1, "org/drip: data.txt", "slower than 1024 bytes/s", "gave up after 2 attempts")
    assert_good_model_done(result, source)
    assert len(logged(hub, "data.txt", 2)) == 2


# -- 8. a malformed answer fails its model alone, with what is wrong ----------------------------------------
def _siblings(fn):
    def tamper(payload):
        for sibling in payload["siblings"]:
            fn(sibling)
        return payload

    return tamper


def _files(fn):
    def tamper(payload):
        for entry in payload["Data"]["Files"]:
            fn(entry)
        return payload

    return tamper


MALFORMED = {
    "hf-sha-null": (HF, lambda p: {**p, "sha": None}, "sha is missing"),
    "hf-sha-not-a-hash": (HF, lambda p: {**p, "sha": "main"}, "not a 40-digit commit hash"),
    "hf-siblings-not-a-list": (HF, lambda p: {**p, "siblings": "x"}, "siblings is 'x', not a list"),
    "hf-no-size": (HF, _siblings(lambda s: s.pop("size")), "siblings[0].size is missing"),
    "hf-size-big": (HF, _siblings(lambda s: s.update(size="big")), "siblings[0].size is 'big', not a whole number"),
    "hf-rfilename-5": (HF, _siblings(lambda s: s.update(rfilename=5)), "siblings[0].rfilename is 5, not a string"),
    "hf-size-negative": (HF, _siblings(lambda s: s.update(size=-1)), "the size -1 is not a number of bytes"),
    "hf-answer-a-list": (HF, lambda p: [p], "the answer is [{"),
    "ms-files-not-a-list": (MS, lambda p: {**p, "Data": {"Files": "notalist"}}, "Data.Files is 'notalist'"),
    "ms-size-big": (MS, _files(lambda e: e.update(Size="big")), "Size is 'big', not a whole number"),
    "ms-path-null": (MS, _files(lambda e: e.update(Path=None)), "Data.Files[0].Path is missing"),
}


@pytest.mark.parametrize("case", list(MALFORMED))
def test_malformed_metadata_fails_its_model_alone(hub, env, tmp_path, case):
    source, tamper, what = MALFORMED[case]
    hub.add_repo(source, "org/bad", {"config.json": b"{}", "w.bin": b"w" * 10})
    hub.faults.tamper(f"org/bad/{'revision' if source == HF else 'repo/files'}", tamper)
    result = run_cli(env, spec(source, "org/bad"), good_model(hub, source), "--cache-dir", str(tmp_path))
    assert_one_line_error(result, 1, "the hub sent malformed metadata for org/bad (", what)
    assert_good_model_done(result, source)
    assert "unexpected" not in result.stderr


# -- 9. bad command-line and environment values are one sentence with the right exit code -------------------
@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("RPMM_STALL_TIMEOUT", "inf"),
        ("RPMM_STALL_TIMEOUT", "0"),
        ("RPMM_CONNECT_TIMEOUT", "1e309"),
        ("RPMM_RETRIES", "nan"),
        ("RPMM_METADATA_MAX_BYTES", "-1"),
        ("RPMM_MIN_SPEED", "fast"),
    ],
)
def test_a_setting_out_of_range_is_one_line(hub, env, tmp_path, variable, value):
    hub.add_repo(HF, "org/set", {"a.txt": b"a"})
    result = run_cli({**env, variable: value}, "hf:org/set", "--cache-dir", str(tmp_path))
    assert_one_line_error(result, 2, variable, repr(value), "from")
    assert sum(hub.requests.values()) == 0


def test_a_non_utf8_cache_dir_is_refused(hub, env, tmp_path):
    hub.add_repo(HF, "org/m", {"a.txt": b"a"})
    cache = os.fsencode(tmp_path) + b"/caf\xe9"
    for command in (["hf:org/m"], ["list"], ["verify", "hf:org/m"]):
        result = subprocess.run(
            [sys.executable, str(REPO_ROOT / "download_models.py"), *command, "--cache-dir", cache],
            env=env,
            capture_output=True,
            text=True,
            cwd=REPO_ROOT,
            timeout=60,
        )
        assert_one_line_error(result, 2, "not a UTF-8 path", "--cache-dir")
    assert not os.path.exists(cache)


def test_a_lock_file_under_a_file_is_one_line(hub, env, tmp_path):
    hub.add_repo(HF, "org/m", {"a.txt": b"a"})
    (tmp_path / "plain").write_text("")
    lock = tmp_path / "plain" / "models.lock"
    result = run_cli(env, "lock", "--lock-file", str(lock), "--cache-dir", str(tmp_path / "c"))
    assert_one_line_error(result, 2, f"cannot write the lock file {lock}", "--lock-file")


def test_a_token_that_cannot_be_sent_is_one_line(hub, env, tmp_path):
    hub.add_repo(HF, "org/m", {"a.txt": b"a"})
    bad = os.fsdecode(b"hf_secret\xff")
    result = run_cli(env, "hf:org/m", "--token", bad, "--cache-dir", str(tmp_path))
    assert_one_line_error(result, 2, "--token is not a valid token")
    result = run_cli({**env, "HF_TOKEN": "hf_secret with spaces"}, "hf:org/m", "--cache-dir", str(tmp_path))
    assert_one_line_error(result, 1, "HF_TOKEN is not a valid token")
    assert "secret" not in result.stdout + result.stderr
    assert sum(hub.requests.values()) == 0


def test_a_huge_model_id_is_a_usage_error(hub, env, tmp_path):
    result = run_cli(env, "org/" + "x" * 5000, "--cache-dir", str(tmp_path))
    line = assert_one_line_error(result, 2, "is not a valid model ID", "at most 96")
    assert len(line) < 300
    assert sum(hub.requests.values()) == 0


@pytest.mark.parametrize("command", [["list"], ["env"], ["verify"]])
def test_a_cache_dir_that_is_a_file_is_refused(env, tmp_path, command):
    plain = tmp_path / "plain"
    plain.write_text("")
    result = run_cli({**env, "MODEL_CACHE_DIR": str(plain)}, *command)
    assert_one_line_error(result, 2, f"{plain}", "is a file, not a folder")


def test_verify_reads_a_read_only_cache(hub, env, tmp_path):
    hub.add_repo(HF, "org/ro", {"config.json": b"{}", "w.bin": b"w" * 1000})
    cache = tmp_path / "cache"
    assert run_cli(env, "hf:org/ro", "--cache-dir", str(cache)).returncode == 0
    command = [sys.executable, str(REPO_ROOT / "download_models.py"), "verify", "hf:org/ro", "--cache-dir", str(cache)]
    if os.geteuid() == 0:  # root writes through file modes: mount the cache read-only in a namespace of its own
        if shutil.which("unshare") is None:
            pytest.skip("needs unshare to make a read-only mount as root")
        mount = f'mount --bind "{cache}" "{cache}" && mount -o remount,ro,bind "{cache}" && exec "$@"'
        command = ["unshare", "-m", "sh", "-c", mount, "sh", *command]
    else:
        for folder, _, _ in os.walk(cache):
            os.chmod(folder, 0o555)
    result = subprocess.run(command, env=env, capture_output=True, text=True, cwd=REPO_ROOT, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "ok       huggingface:org/ro (2 files checked)" in result.stdout
    assert "cannot write" not in result.stderr


# -- issue 10's papercuts that live in the downloaders -------------------------------------------------------
def test_the_consumers_offline_flags_do_not_stop_the_downloader(hub, env, tmp_path):
    """`eval "$(download_models.py env)"` exports HF_HUB_OFFLINE=1 for the consumers of the cache."""
    hub.add_repo(HF, "org/on", {"a.txt": b"a"})
    hub.add_repo(MS, "org/on", {"a.txt": b"a"})
    env = {**env, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    result = run_cli(env, "hf:org/on", "ms:org/on", "--cache-dir", str(tmp_path))
    assert result.returncode == 0, result.stderr
    assert "downloaded huggingface:org/on" in result.stdout and "downloaded modelscope:org/on" in result.stdout


@pytest.mark.parametrize("quiet", [["-q"], []])
def test_hub_library_logs_stay_silent_without_verbose(env, tmp_path, quiet):
    env = {**env, "HF_ENDPOINT": "http://127.0.0.1:9", "MODELSCOPE_ENDPOINT": "http://127.0.0.1:9"}
    result = run_cli(env, "ms:org/none", "hf:org/none", *quiet, "--cache-dir", str(tmp_path))
    assert_one_line_error(result, 1, "could not reach http://127.0.0.1:9")
    ours = ("FAILED ", "error:", "2 of 2 models failed", "cache:")
    assert [line for line in result.stderr.splitlines() if not line.startswith(ours)] == []


# -- listings the hubs cut short ----------------------------------------------------------------------------
def test_a_large_huggingface_repo_is_listed_from_its_paginated_tree(hub, env, tmp_path):
    """huggingface.co may cut `siblings` short in a repo of more than 1000 files: the tree listing has them all."""
    hub.add_repo(HF, "org/many", {f"d/f{i:04d}.txt": f"{i}".encode() for i in range(1100)})
    hub.hf_siblings_limit, hub.hf_tree_page_size = 1050, 400
    result = run_cli(env, "hf:org/many", "--include", "d/f1099.txt", "--cache-dir", str(tmp_path), "--json")
    assert result.returncode == 0, result.stderr
    (model,) = json.loads(result.stdout)["models"]
    assert model["files"] == 1
    snapshot = Path(model["path"])
    assert (snapshot / "d" / "f1099.txt").read_bytes() == b"1099"
    assert hub.count("hf.tree") == 3  # 1101 entries (a folder and 1100 files), 400 a page


def test_a_modelscope_listing_cut_at_3000_entries_is_walked_per_folder(hub, env, tmp_path):
    files = {f"{folder}/f{i:04d}.txt": f"{folder}{i}".encode() for folder in ("a", "b") for i in range(1600)}
    hub.add_repo(MS, "org/many", files)
    result = run_cli(env, "ms:org/many", "--include", "b/f1599.txt", "--cache-dir", str(tmp_path), "--json")
    assert result.returncode == 0, result.stderr
    (model,) = json.loads(result.stdout)["models"]
    assert model["files"] == 1
    snapshot = tmp_path / "modelscope" / "models" / "org--many" / "snapshots" / "master"
    assert (snapshot / "b" / "f1599.txt").read_bytes() == b"b1599"
    assert hub.count("ms.files") == 4  # the whole tree (cut), the top folder, then each sub-folder whole

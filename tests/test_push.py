"""`push`: models from the local cache to an S3 store, through the real CLI (a subprocess, as a user runs it),
against a real S3 server (moto) behind a proxy that behaves like RunPod's S3 API (tests/s3)."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from runpod_model_manager.errors import TransferError, UserError
from runpod_model_manager.push.settings import MAX_PARTS, PART_LIMIT
from runpod_model_manager.push.target import parse_target
from runpod_model_manager.push.uploader import part_layout
from tests.cli_helpers import REPO_ROOT, assert_one_line_error, run_cli, run_python
from tests.hub import make_file
from tests.s3 import ACCESS_KEY, SECRET_KEY, Limits, S3Server
from tests.test_deploy_files import OFFLINE_CHECK, _spec_json, fake_repo_files, serve_specs
from tests.test_download_cli import offline_env
from tests.test_reliability import interrupted, start_cli

HF_ID = "acme/tiny-model"
MS_ID = "iic/tiny-model"
PART = 1 << 20  # parts and the PutObject threshold are small here, so that a few MB make a multipart upload
BIG = 5 * PART + 12345  # six parts
NO_LOCK = "--lock-file=/nonexistent/models.lock"


@pytest.fixture(scope="module")
def s3_server():
    with S3Server() as server:
        yield server


@pytest.fixture
def s3(s3_server):
    s3_server.proxy.reset()
    yield s3_server
    s3_server.proxy.release()
    assert s3_server.proxy.count("DeleteObjects") == 0 and s3_server.proxy.count("Presigned") == 0


@pytest.fixture(scope="module")
def big_file(tmp_path_factory) -> Path:
    return make_file(tmp_path_factory.mktemp("big") / "model.safetensors", BIG, seed=11)


@pytest.fixture
def repos(hub, big_file):
    files = {
        "config.json": b'{"hidden_size": 8}',
        "tokenizer/vocab.txt": b"a\nb\nc\n",
        "données/modèle_é.txt": b"non-ASCII name",
        "model.safetensors": big_file,
    }
    return {
        "files": files,
        "hf_commit": hub.add_repo("huggingface", HF_ID, files),
        "ms_commit": hub.add_repo("modelscope", MS_ID, files),
    }


@pytest.fixture
def env(hub_env, s3, tmp_path) -> dict[str, str]:
    home = tmp_path / "home"
    home.mkdir()
    return s3.client_env(hub_env.env, home) | {
        "RPMM_PUSH_PART_SIZE": str(PART),
        "RPMM_PUSH_PUT_MAX": str(PART),
        "RPMM_PUSH_VERIFY_WAIT": "0.05",
        "RPMM_RETRY_BACKOFF": "0.05",
    }


def push(env, s3, to: str, cache: Path, *args: str, expect: int | None = 0) -> subprocess.CompletedProcess:
    """`push --to s3://BUCKET[/PREFIX]` through the proxy; whatever happens, no output holds the credentials."""
    target = ("--to", to if to.startswith("s3://") else f"s3://{to}", "--endpoint-url", s3.url)
    result = run_cli(env, "push", *target, "--cache-dir", str(cache), NO_LOCK, *args)
    assert ACCESS_KEY not in result.stdout + result.stderr and SECRET_KEY not in result.stdout + result.stderr
    if expect is not None:
        assert result.returncode == expect, (result.returncode, result.stdout, result.stderr)
    return result


def models_json(result: subprocess.CompletedProcess) -> dict[str, dict]:
    return {m["model"] + "@" + m["source"]: m for m in json.loads(result.stdout)["models"]}


def content(value: bytes | Path) -> bytes:
    return value.read_bytes() if isinstance(value, Path) else value


def uploaded_bytes(s3) -> int:
    return s3.proxy.body_bytes("PutObject", "UploadPart")


def big_key(commit: str) -> str:
    return f"models/huggingface/hub/models--acme--tiny-model/snapshots/{commit}/model.safetensors"


# ------------------------------------------------------------------------------------------------------
# Where things go, and that a pod can use them
# ------------------------------------------------------------------------------------------------------
def test_push_all_then_a_copy_of_the_volume_loads_offline_and_is_complete(hub_env, env, s3, repos, tmp_path):
    from projects.loader import load_projects

    project_specs = [s for p in load_projects().values() for s in p.model_specs()]
    expected = serve_specs(hub_env.hub, project_specs, fake_repo_files)
    bucket, cache = s3.new_bucket(), tmp_path / "cache"

    first = push(env, s3, bucket, cache, "--all", HF_ID, MS_ID, "--json")
    models = models_json(first)
    assert len(models) == len(project_specs) + 2 and {m["status"] for m in models.values()} == {"pushed"}
    assert models[f"{HF_ID}@huggingface"]["url"] == (
        f"s3://{bucket}/models/huggingface/hub/models--acme--tiny-model/snapshots/{repos['hf_commit']}"
    )
    assert s3.proxy.count("CompleteMultipartUpload") == 2  # the big file of each source, in parts
    keys = set(s3.objects(bucket))
    assert all(k.startswith("models/") for k in keys)
    assert not [k for k in keys if "/blobs/" in k or "/incomplete/" in k or "/locks/" in k or "/push/" in k]
    assert "models/huggingface/hub/models--acme--tiny-model/refs/main" in keys
    assert "models/modelscope/models/iic--tiny-model/snapshots/master/données/modèle_é.txt" in keys
    assert not s3.uploads(bucket)

    # what a pod mounting the volume sees at /workspace/models
    volume = s3.copy_down(bucket, "models", tmp_path / "volume")
    snapshot = volume / "huggingface/hub/models--acme--tiny-model/snapshots" / repos["hf_commit"]
    for name, value in repos["files"].items():
        assert (snapshot / name).read_bytes() == content(value)
    offline = offline_env(hub_env, volume) | {"MODEL_CACHE_DIR": str(volume)}
    checked = [_spec_json(s) | {"files": expected[s]} for s in project_specs]
    proc = run_python(offline, OFFLINE_CHECK.replace("json.loads(sys.argv[1])", repr(checked).replace("null", "None")))
    assert proc.returncode == 0 and f"offline ok {sum(len(m['files']) for m in checked)}" in proc.stdout, proc.stderr
    code = (
        "from huggingface_hub import snapshot_download\n"
        "from modelscope import snapshot_download as ms_snapshot_download\n"
        f"print(snapshot_download({HF_ID!r}, local_files_only=True))\n"
        f"print(ms_snapshot_download({MS_ID!r}, local_files_only=True))\n"
    )
    proc = run_python(offline, code)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines()[-2] == str(snapshot)

    # `list` and `verify` there need no network; `--all` then downloads nothing and leaves the files as they are
    listing = run_cli(offline, "list", "--json", "--cache-dir", str(volume), NO_LOCK)
    assert {m["status"] for m in json.loads(listing.stdout)["models"]} == {"complete"}, listing.stdout
    verify = run_cli(offline, "verify", "--cache-dir", str(volume), NO_LOCK, HF_ID, MS_ID)
    assert verify.returncode == 0 and verify.stdout.count("ok ") >= 2, verify.stdout + verify.stderr
    hub_env.hub.reset_counters()
    again = run_cli(hub_env.env, "--all", HF_ID, MS_ID, "--cache-dir", str(volume), NO_LOCK, "--json")
    assert again.returncode == 0, again.stderr
    assert {m["status"] for m in json.loads(again.stdout)["models"]} == {"complete"}
    assert hub_env.hub.bytes_sent() == 0
    assert not (snapshot / "model.safetensors").is_symlink() and (snapshot / "config.json").read_bytes()


def test_second_push_sends_no_bodies_and_aborts_uploads_left_for_complete_files(env, s3, repos, tmp_path):
    bucket, cache = s3.new_bucket(), tmp_path / "cache"
    push(env, s3, bucket, cache, HF_ID, MS_ID)
    left = s3.client().create_multipart_upload(Bucket=bucket, Key=big_key(repos["hf_commit"]))["UploadId"]
    s3.proxy.reset()

    again = push(env, s3, bucket, cache, HF_ID, MS_ID, "--json")
    assert {m["status"] for m in models_json(again).values()} == {"unchanged"}
    assert uploaded_bytes(s3) == 0 and s3.proxy.count("CreateMultipartUpload") == 0
    assert s3.proxy.count("AbortMultipartUpload") == 1 and not s3.uploads(bucket), left
    plain = push(env, s3, bucket, cache, HF_ID, MS_ID)
    assert f"unchanged huggingface:{HF_ID}" in plain.stdout
    assert "2 models, 13 objects: 0 sent (0 B), 13 unchanged" in plain.stdout
    assert "to upload" not in plain.stderr


def test_a_store_without_metadata_is_compared_by_etag(env, s3, repos, tmp_path):
    bucket, cache = s3.new_bucket(), tmp_path / "cache"
    s3.proxy.reset(Limits(keep_metadata=False))
    push(env, s3, bucket, cache, HF_ID)
    first = uploaded_bytes(s3)
    s3.proxy.reset(Limits(keep_metadata=False))
    push(env, s3, bucket, cache, HF_ID)
    assert first > BIG and uploaded_bytes(s3) == 0


def test_objects_that_differ_are_replaced_and_dry_run_names_them(env, s3, repos, tmp_path):
    bucket, cache = s3.new_bucket(), tmp_path / "cache"
    push(env, s3, bucket, cache, HF_ID)
    config = f"models/huggingface/hub/models--acme--tiny-model/snapshots/{repos['hf_commit']}/config.json"
    vocab = config.replace("config.json", "tokenizer/vocab.txt")
    s3.client().put_object(Bucket=bucket, Key=config, Body=b"{}")  # wrong size
    s3.client().put_object(Bucket=bucket, Key=vocab, Body=b"x\ny\nz\n")  # same size, other bytes, no metadata
    s3.client().put_object(Bucket=bucket, Key=big_key(repos["hf_commit"]), Body=b"0" * BIG, Metadata={"sha256": "0"})
    s3.proxy.reset()

    dry = push(env, s3, bucket, cache, HF_ID, MS_ID, "--dry-run")
    assert "would download then push modelscope:iic/tiny-model" in dry.stdout  # not in the local cache yet
    assert sorted(line.strip() for line in dry.stdout.splitlines() if line.startswith("    ")) == sorted(
        [config, vocab, big_key(repos["hf_commit"])]
    )
    assert "would push huggingface:acme/tiny-model" in dry.stdout and uploaded_bytes(s3) == 0
    assert {c.op for c in s3.proxy.calls} <= {"HeadBucket", "HeadObject"}

    result = push(env, s3, bucket, cache, HF_ID)
    assert "to upload: 3 files, " in result.stderr  # what the store lacks, announced before the first byte
    objects = s3.objects(bucket)
    assert objects[config] == repos["files"]["config.json"] and objects[vocab] == b"a\nb\nc\n"
    assert objects[big_key(repos["hf_commit"])] == repos["files"]["model.safetensors"].read_bytes()
    assert uploaded_bytes(s3) == BIG + len(b'{"hidden_size": 8}') + 6


# ------------------------------------------------------------------------------------------------------
# RunPod's limits and faults
# ------------------------------------------------------------------------------------------------------
def test_502s_dropped_connections_lost_answers_and_late_objects_are_survived(env, s3, repos, tmp_path):
    bucket, cache = s3.new_bucket(), tmp_path / "cache"
    lost = ("CompleteMultipartUpload", "PutObject")  # done by the store, the answer never arrives
    s3.proxy.reset(Limits(fail_every=4, drop_every=3, lag_heads=2, lose_answers=lost))
    push(env, s3, bucket, cache, HF_ID, MS_ID)
    statuses = [c.status for c in s3.proxy.calls]
    assert statuses.count(502) >= 5 and statuses.count(0) >= 3  # 0: a connection dropped in the middle of a body
    assert s3.proxy.count("HeadObject", 404) > s3.proxy.count("PutObject", 200)  # answered 404 after the write
    assert s3.proxy.count("CreateMultipartUpload", 200) == 2  # both big files: one upload each, never restarted
    objects = s3.objects(bucket)
    assert objects[big_key(repos["hf_commit"])] == repos["files"]["model.safetensors"].read_bytes()
    assert objects["models/modelscope/models/iic--tiny-model/snapshots/master/config.json"] == b'{"hidden_size": 8}'


def test_an_object_the_store_never_shows_fails_its_model_which_is_not_announced(env, s3, repos, tmp_path):
    bucket, cache = s3.new_bucket(), tmp_path / "cache"
    s3.proxy.reset(Limits(lag_heads=1000))  # every HeadObject after the upload: 404
    result = push(env, s3, bucket, cache, HF_ID, "--include", "config.json", expect=1)
    assert "config.json: the store accepted it, but HeadObject does not show it (gave up after 3" in result.stderr
    assert s3.proxy.count("PutObject", 200) == 3 and "refs/main" not in " ".join(s3.keys(bucket))


def test_a_full_volume_stops_the_push_with_one_sentence(env, s3, repos, tmp_path):
    bucket, cache = s3.new_bucket(), tmp_path / "cache"
    s3.proxy.reset(Limits(full=True))
    result = push(env, s3, bucket, cache, HF_ID, expect=None)
    assert_one_line_error(result, 2, "the volume is full", "make it larger")


def test_a_store_refusing_a_large_put_gets_the_file_in_parts(env, s3, repos, tmp_path):
    bucket, cache = s3.new_bucket(), tmp_path / "cache"
    s3.proxy.reset(Limits(put_limit=PART))
    bigger_puts = env | {"RPMM_PUSH_PUT_MAX": str(8 * PART)}
    push(bigger_puts, s3, f"s3://{bucket}/other/prefix", cache, HF_ID, "--include", "model.safetensors")
    assert s3.proxy.count("PutObject", 400) == 1 and s3.proxy.count("CompleteMultipartUpload", 200) == 1
    key = big_key(repos["hf_commit"]).replace("models/", "other/prefix/", 1)
    assert s3.objects(bucket)[key] == repos["files"]["model.safetensors"].read_bytes()


def test_killed_push_resumes_the_multipart_upload_sending_only_missing_parts(env, s3, repos, tmp_path):
    bucket, cache = s3.new_bucket(), tmp_path / "cache"
    assert run_cli(env, HF_ID, "--include", "model.safetensors", "--cache-dir", str(cache)).returncode == 0
    s3.proxy.reset(Limits(hold_parts_after=2))
    args = ("push", HF_ID, "--include", "model.safetensors", "--to", f"s3://{bucket}", "--endpoint-url", s3.url)
    proc = subprocess.Popen(
        [sys.executable, str(REPO_ROOT / "download_models.py"), *args, "--cache-dir", str(cache), NO_LOCK],
        env=env | {"PYTHONPATH": str(REPO_ROOT)},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 60
        while s3.proxy.held < 1 and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
        assert s3.proxy.held >= 1, "the push never reached its third part"
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    s3.proxy.release()
    [upload] = s3.uploads(bucket)
    held = s3.client().list_parts(Bucket=bucket, Key=upload["Key"], UploadId=upload["UploadId"]).get("Parts", [])
    assert len(held) == 2 and upload["Key"] == big_key(repos["hf_commit"])
    s3.proxy.reset()

    push(env, s3, bucket, cache, HF_ID, "--include", "model.safetensors")
    parts_total = len(part_layout(BIG, PART))
    assert s3.proxy.count("CreateMultipartUpload") == 0  # the same upload, continued
    resent = s3.proxy.body_bytes("UploadPart", key=upload["Key"])
    assert resent <= (parts_total - len(held) + 1) * PART
    assert resent == BIG - sum(p["Size"] for p in held)
    assert s3.objects(bucket)[upload["Key"]] == repos["files"]["model.safetensors"].read_bytes()
    assert not s3.uploads(bucket) and not list((cache / ".runpod-model-manager" / "push").iterdir())


def test_ctrl_c_while_the_store_stalls_ends_at_once_and_the_upload_resumes(env, s3, repos, tmp_path):
    """A store that never answers a part: Ctrl-C ends the push now, not after the read timeout, and the next
    push continues the same multipart upload."""
    bucket, cache = s3.new_bucket(), tmp_path / "cache"
    assert run_cli(env, HF_ID, "--include", "model.safetensors", "--cache-dir", str(cache)).returncode == 0
    s3.proxy.reset(Limits(hold_parts_after=2))
    args = ("push", HF_ID, "--include", "model.safetensors", "--to", f"s3://{bucket}", "--endpoint-url", s3.url)
    log = tmp_path / "push.log"
    proc = start_cli(env | {"RPMM_PUSH_READ_TIMEOUT": "120"}, *args, "--cache-dir", str(cache), NO_LOCK, log=log)
    interrupted(proc, log, lambda: s3.proxy.held >= 1, "a part held by the store", settle=0.2)
    s3.proxy.release()
    [upload] = s3.uploads(bucket)
    s3.proxy.reset()
    push(env, s3, bucket, cache, HF_ID, "--include", "model.safetensors")
    assert s3.proxy.count("CreateMultipartUpload") == 0  # the same upload, continued
    assert s3.objects(bucket)[upload["Key"]] == repos["files"]["model.safetensors"].read_bytes()


def test_part_sizes_stay_within_runpods_limits():
    for size in (1, 4 * 10**12, 4 << 40, MAX_PARTS * PART_LIMIT):
        layout = part_layout(size, 32 << 20)
        assert len(layout) <= MAX_PARTS and max(p.length for p in layout) <= PART_LIMIT
        assert sum(p.length for p in layout) == size and layout[-1].offset + layout[-1].length == size
    with pytest.raises(TransferError):
        part_layout(MAX_PARTS * PART_LIMIT + 1, 32 << 20)


# ------------------------------------------------------------------------------------------------------
# Failures: one model does not stop the others; usage errors are one sentence; credentials stay secret
# ------------------------------------------------------------------------------------------------------
def test_a_failed_model_does_not_stop_the_others(env, s3, repos, tmp_path):
    bucket, cache = s3.new_bucket(), tmp_path / "cache"
    result = push(env, s3, bucket, cache, "acme/missing", HF_ID, "-v", expect=1)
    assert f"pushed    huggingface:{HF_ID}" in result.stdout
    assert "FAILED huggingface:acme/missing: repository not found" in result.stderr
    assert "1 of 2 models failed" in result.stderr and "Traceback" not in result.stderr


@pytest.mark.parametrize(
    ("args", "fragments"),
    [
        (["--to", "s3://"], ["is not s3://VOLUME_ID"]),
        (["--to", "http://vol"], ["is not s3://VOLUME_ID"]),
        (["--to", "s3://vol/../x"], ["plain folder path"]),
        (["--to", "s3://vol", "--datacenter", "EU RO 1"], ["not a RunPod datacenter ID"]),
        (["--to", "s3://vol"], ["--datacenter", "--endpoint-url"]),
        (["--to", "s3://vol", "--endpoint-url", "ftp://x"], ["not an http(s) URL"]),
    ],
)
def test_bad_targets_are_one_sentence(env, args, fragments):
    assert_one_line_error(run_cli(env, "push", HF_ID, *args), 2, *fragments)


def test_missing_credentials_unknown_volume_and_missing_boto3(env, s3, repos, tmp_path):
    cache, to = str(tmp_path / "cache"), ("--to", "s3://novolume", "--endpoint-url", s3.url)
    bare = {k: v for k, v in env.items() if not k.startswith("AWS_ACCESS") and not k.startswith("AWS_SECRET")}
    assert_one_line_error(run_cli(bare, "push", HF_ID, *to, "--cache-dir", cache), 2, "AWS_ACCESS_KEY_ID", "user_")
    unknown = run_cli(env, "push", HF_ID, *to, "--cache-dir", cache)
    assert_one_line_error(unknown, 2, "'novolume' does not exist", "--datacenter")
    verbose = run_cli(env, "push", HF_ID, *to, "--cache-dir", cache, "-v")  # with the traceback
    assert verbose.returncode == 2 and "Traceback" in verbose.stderr
    assert not [s for s in (ACCESS_KEY, SECRET_KEY) if s in unknown.stderr + verbose.stderr + verbose.stdout]
    assert not Path(cache).exists()  # nothing downloaded for a push that cannot happen
    fake = tmp_path / "no-boto3" / "boto3"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text("raise ImportError('boto3 is not installed here')\n")
    without = run_cli(env | {"PYTHONPATH": str(fake.parent)}, "push", HF_ID, *to, "--cache-dir", cache)
    assert_one_line_error(without, 2, 'pip install ".[s3]"')


def test_datacenter_sets_endpoint_and_region_and_endpoint_url_wins(env, s3, repos, tmp_path):
    target = parse_target("s3://abc123/models/", "EU-RO-1", None)
    assert (target.bucket, target.prefix) == ("abc123", "models")
    assert (target.endpoint_url, target.region) == ("https://s3api-eu-ro-1.runpod.io/", "EU-RO-1")
    with pytest.raises(UserError):
        parse_target("s3://abc123", None, None)
    bucket = s3.new_bucket()
    to = ("--to", f"s3://{bucket}", "--datacenter", "eu-ro-1", "--endpoint-url", s3.url, NO_LOCK)
    result = run_cli(env, "push", HF_ID, "--include", "*.json", *to, "--cache-dir", str(tmp_path / "c"))
    assert result.returncode == 0, result.stderr
    assert s3.proxy.calls and {c.region for c in s3.proxy.calls} == {"EU-RO-1"}


# ------------------------------------------------------------------------------------------------------
# The download side: a snapshot of real files (a copied volume) is complete, and stays as it is
# ------------------------------------------------------------------------------------------------------
def test_symlink_free_snapshot_counts_as_complete_and_is_never_relinked(hub_env, repos, tmp_path):
    cache = tmp_path / "cache"
    assert run_cli(hub_env.env, HF_ID, "--cache-dir", str(cache)).returncode == 0
    repo_dir = cache / "huggingface/hub/models--acme--tiny-model"
    snapshot = repo_dir / "snapshots" / repos["hf_commit"]
    for link in [p for p in snapshot.rglob("*") if p.is_symlink()]:
        data = link.read_bytes()
        link.unlink()
        link.write_bytes(data)
    shutil.rmtree(repo_dir / "blobs")
    shutil.rmtree(cache / ".runpod-model-manager")  # as on a volume filled by another tool: no records either
    hub_env.hub.reset_counters()

    result = run_cli(hub_env.env, HF_ID, "--cache-dir", str(cache), "--json")
    assert result.returncode == 0 and json.loads(result.stdout)["models"][0]["status"] == "complete", result.stderr
    assert hub_env.hub.bytes_sent() == 0
    files = [p for p in snapshot.rglob("*") if not p.is_dir()]
    assert len(files) == len(repos["files"]) and not [p for p in files if p.is_symlink()]
    assert (
        hashlib.sha256((snapshot / "model.safetensors").read_bytes()).hexdigest()
        == hashlib.sha256(repos["files"]["model.safetensors"].read_bytes()).hexdigest()
    )
    verify = run_cli(hub_env.env, "verify", HF_ID, "--cache-dir", str(cache))
    assert verify.returncode == 0 and verify.stdout.startswith("ok "), verify.stdout + verify.stderr
    (snapshot / "config.json").write_bytes(b'{"hidden_size": 9}')  # same size, other bytes
    repair = run_cli(hub_env.env, "verify", HF_ID, "--repair", "--cache-dir", str(cache))
    assert repair.returncode == 0 and "repaired" in repair.stdout, repair.stdout + repair.stderr
    assert (snapshot / "config.json").read_bytes() == b'{"hidden_size": 8}'
    assert os.path.exists(os.path.realpath(snapshot / "config.json"))

"""LocalHub speaks enough of each hub's protocol for the REAL clients (no monkeypatching)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import requests

from tests.hub import HF, MS, LocalHub, make_file

REPO = "org/model"
LFS_BYTES = bytes(range(256)) * (3 * 1024 * 1024 // 256 + 17)  # ~3 MiB, LFS
FILES_V1 = {
    "config.json": b'{"model_type": "test", "v": 1}\n',
    "README.md": b"# test model\n",
    "weights/model.safetensors": LFS_BYTES,
    "tokenizer/vocab/tokens.txt": b"a\nb\nc\n",
    "données/é.txt": "unicode ✓\n".encode(),
}
ROOT = Path(__file__).resolve().parent.parent
VENV_BIN = Path(sys.executable).parent


def _run(cmd: list[str], env: dict[str, str], cwd: Path | None = None, timeout: int = 60) -> str:
    proc = subprocess.run(cmd, env=env, cwd=cwd or ROOT, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, f"{cmd} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout


def _py(code: str, env: dict[str, str], **extra_env: str) -> str:
    return _run([sys.executable, "-c", textwrap.dedent(code)], {**env, **extra_env}).strip()


def _assert_tree(folder: Path, files: dict[str, bytes]) -> None:
    for path, content in files.items():
        assert (folder / path).read_bytes() == content, path
    found = {p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file() and ".cache" not in p.parts}
    assert found == set(files)


# ---------------------------------------------------------------------------------------------------
# Hugging Face
# ---------------------------------------------------------------------------------------------------
def test_hf_snapshot_download_then_offline(hub_env):
    from huggingface_hub import hf_hub_download, snapshot_download

    hub = hub_env.hub
    sha = hub.add_repo(HF, REPO, FILES_V1)
    assert len(sha) == 40

    folder = snapshot_download(REPO, cache_dir=hub_env.hf_cache)
    assert Path(folder) == hub_env.hf_cache / "models--org--model" / "snapshots" / sha
    _assert_tree(Path(folder), FILES_V1)
    storage = hub_env.hf_cache / "models--org--model"
    assert (storage / "refs" / "main").read_text() == sha
    lfs = hub.file(HF, REPO, "weights/model.safetensors")
    assert (storage / "blobs" / lfs.sha256).is_file()  # LFS blob named by sha256
    cfg = hub.file(HF, REPO, "config.json")
    assert (storage / "blobs" / cfg.git_sha1).is_file()  # regular blob named by git sha1
    assert (storage / "trees" / f"{sha}.json").is_file()

    assert hub.count("hf.revision", "GET") == 1
    assert hub.count("hf.tree", "GET") == 1
    assert hub.count("hf.resolve", "HEAD") == len(FILES_V1)
    assert hub.count("cdn.blob", "GET") == 1  # the LFS file came through the 302 -> CDN
    assert hub.bytes_sent(REPO, "weights/model.safetensors") == len(LFS_BYTES)

    # Second call: everything cached -> no file bytes sent again.
    hub.reset_counters()
    assert snapshot_download(REPO, cache_dir=hub_env.hf_cache) == folder
    assert hub.bytes_sent() == 0

    # In-process local_files_only, then a real HF_HUB_OFFLINE=1 process.
    hub.reset_counters()
    assert snapshot_download(REPO, cache_dir=hub_env.hf_cache, local_files_only=True) == folder
    assert hf_hub_download(REPO, "données/é.txt", cache_dir=hub_env.hf_cache, local_files_only=True) == str(
        Path(folder) / "données/é.txt"
    )
    out = _py(
        f"""
        from huggingface_hub import snapshot_download, hf_hub_download
        print(snapshot_download({REPO!r}, cache_dir={str(hub_env.hf_cache)!r}))
        print(snapshot_download({REPO!r}, cache_dir={str(hub_env.hf_cache)!r}, local_files_only=True))
        print(hf_hub_download({REPO!r}, 'weights/model.safetensors', cache_dir={str(hub_env.hf_cache)!r}))
        """,
        hub_env.env,
        HF_HUB_OFFLINE="1",
    )
    assert out.splitlines() == [folder, folder, str(Path(folder) / "weights/model.safetensors")]
    assert sum(hub.requests.values()) == 0


def test_hf_download_old_commit_and_tag(hub_env):
    from huggingface_hub import hf_hub_download

    hub = hub_env.hub
    sha1 = hub.add_repo(HF, REPO, FILES_V1, tags=["v1.0"])
    sha2 = hub.commit(HF, REPO, {"config.json": b'{"v": 2}', "new.txt": b"new"})
    assert sha1 != sha2
    assert hub.repo(HF, REPO).branches["main"] == sha2

    def get(filename: str, revision: str | None) -> bytes:
        return Path(hf_hub_download(REPO, filename, revision=revision, cache_dir=hub_env.hf_cache)).read_bytes()

    assert get("config.json", None) == b'{"v": 2}'
    assert get("config.json", sha1) == FILES_V1["config.json"]
    assert get("config.json", "v1.0") == FILES_V1["config.json"]
    assert get("config.json", sha1[:10]) == FILES_V1["config.json"]
    storage = hub_env.hf_cache / "models--org--model"
    assert (storage / "refs" / "v1.0").read_text() == sha1
    assert (storage / "refs" / "main").read_text() == sha2
    assert (storage / "snapshots" / sha1 / "config.json").is_file()

    # Branch names containing "/" travel URL-encoded.
    sha3 = hub.commit(HF, REPO, {"config.json": b"feature"}, branch="feat/x")
    assert get("config.json", "feat/x") == b"feature"
    assert (storage / "refs" / "feat" / "x").read_text() == sha3


def test_hf_errors_and_gated(hub_env):
    from huggingface_hub import hf_hub_download, snapshot_download
    from huggingface_hub.errors import (
        EntryNotFoundError,
        GatedRepoError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    hub = hub_env.hub
    hub.add_repo(HF, REPO, FILES_V1)
    hub.add_repo(HF, "org/gated", {"config.json": b"{}", "w.bin": b"x" * 2048}, gated=True)
    hub.add_repo(HF, "org/private", {"config.json": b"{}"}, private=True)
    cache = hub_env.hf_cache

    with pytest.raises(RepositoryNotFoundError):
        hf_hub_download("org/missing", "config.json", cache_dir=cache)
    with pytest.raises(RepositoryNotFoundError):
        snapshot_download("org/missing", cache_dir=cache)
    with pytest.raises(RevisionNotFoundError):
        hf_hub_download(REPO, "config.json", revision="nope", cache_dir=cache)
    with pytest.raises(RevisionNotFoundError):
        snapshot_download(REPO, revision="nope", cache_dir=cache)
    with pytest.raises(EntryNotFoundError):
        hf_hub_download(REPO, "missing.txt", cache_dir=cache)
    with pytest.raises(GatedRepoError):
        hf_hub_download("org/gated", "config.json", cache_dir=cache)
    with pytest.raises(GatedRepoError):
        snapshot_download("org/gated", cache_dir=cache)
    with pytest.raises(RepositoryNotFoundError):
        snapshot_download("org/private", cache_dir=cache)

    folder = snapshot_download("org/gated", cache_dir=cache, token=hub.token)
    assert (Path(folder) / "w.bin").read_bytes() == b"x" * 2048
    folder = snapshot_download("org/private", cache_dir=cache, token=hub.token)
    assert (Path(folder) / "config.json").read_bytes() == b"{}"


def test_hf_tree_pagination_and_no_redirect_mode(hub_env):
    from huggingface_hub import HfApi, snapshot_download

    hub = hub_env.hub
    hub.hf_tree_page_size = 2
    hub.hf_lfs_redirect = False
    hub.add_repo(HF, REPO, FILES_V1)
    files = sorted(f.path for f in HfApi().list_repo_tree(REPO, recursive=True) if hasattr(f, "size"))
    assert files == sorted(FILES_V1)
    assert hub.count("hf.tree") > 2  # followed Link: rel="next"
    info = HfApi().model_info(REPO, files_metadata=True)
    lfs = {s.rfilename: s.lfs for s in info.siblings}
    assert lfs["weights/model.safetensors"].sha256 == hub.file(HF, REPO, "weights/model.safetensors").sha256
    assert lfs["config.json"] is None

    hub.reset_counters()
    _assert_tree(Path(snapshot_download(REPO, cache_dir=hub_env.hf_cache)), FILES_V1)
    assert hub.count("cdn.blob") == 0


def test_hf_resume_after_drop(hub_env):
    """The client resumes with a Range request after the connection dies mid-body."""
    from huggingface_hub import hf_hub_download

    hub = hub_env.hub
    hub.add_repo(HF, REPO, FILES_V1)
    hub.faults.drop("weights/model.safetensors", after_bytes=1_000_000)
    path = hf_hub_download(REPO, "weights/model.safetensors", cache_dir=hub_env.hf_cache)
    assert Path(path).read_bytes() == LFS_BYTES
    cdn = [r for r in hub.log if r.route == "cdn.blob"]
    assert [r.aborted for r in cdn] == [True, False]
    assert cdn[0].bytes_sent == 1_000_000
    # huggingface_hub reads the body in 10 MB chunks (DOWNLOAD_CHUNK_SIZE): a drop inside the first chunk
    # leaves nothing written, so it restarts without Range; later drops resume with "Range: bytes=N-".
    assert (cdn[1].range, cdn[1].status) in ((None, 200), ("bytes=1000000-", 206))
    assert hub.bytes_sent(REPO, "weights/model.safetensors") == 1_000_000 + cdn[1].bytes_sent


def test_hf_retry_after_503(hub_env):
    from huggingface_hub import hf_hub_download

    hub = hub_env.hub
    hub.add_repo(HF, REPO, FILES_V1)
    hub.faults.fail("hf.resolve", 503, times=1)
    path = hf_hub_download(REPO, "config.json", cache_dir=hub_env.hf_cache)
    assert Path(path).read_bytes() == FILES_V1["config.json"]
    statuses = [(r.method, r.status) for r in hub.log if r.route == "hf.resolve"]
    assert statuses[:2] == [("HEAD", 503), ("HEAD", 200)]


# ---------------------------------------------------------------------------------------------------
# ModelScope
# ---------------------------------------------------------------------------------------------------
def test_ms_snapshot_download_and_local_files_only(hub_env):
    from modelscope import snapshot_download
    from modelscope.hub.file_download import model_file_download

    hub = hub_env.hub
    sha1 = hub.add_repo(MS, REPO, FILES_V1, tags=["v1.0"])
    sha2 = hub.commit(MS, REPO, {"config.json": b'{"v": 2}'})
    files_v2 = {**FILES_V1, "config.json": b'{"v": 2}'}
    cache = str(hub_env.ms_cache)

    folder = snapshot_download(REPO, cache_dir=cache)
    assert Path(folder) == hub_env.ms_cache / "models" / "org--model" / "snapshots" / "master"
    _assert_tree(Path(folder), files_v2)
    assert hub.count("ms.files", "GET") >= 1
    assert hub.count("cdn.blob", "GET") == 1  # LFS file via 302 -> CDN

    hub.reset_counters()
    assert snapshot_download(REPO, cache_dir=cache, local_files_only=True) == folder
    assert sum(hub.requests.values()) == 0

    tag_folder = snapshot_download(REPO, cache_dir=cache, revision="v1.0")
    assert Path(tag_folder).name == "v1.0"
    _assert_tree(Path(tag_folder), FILES_V1)
    sha_folder = snapshot_download(REPO, cache_dir=cache, revision=sha1)
    _assert_tree(Path(sha_folder), FILES_V1)
    assert snapshot_download(REPO, cache_dir=cache, revision=sha1, local_files_only=True) == sha_folder

    one = model_file_download(REPO, "données/é.txt", revision=sha2, cache_dir=cache)
    assert Path(one).read_bytes() == FILES_V1["données/é.txt"]
    again = model_file_download(REPO, "config.json", revision="master", cache_dir=cache, local_files_only=True)
    assert Path(again).read_bytes() == b'{"v": 2}'


def test_ms_errors_gated_and_api(hub_env):
    from modelscope import snapshot_download
    from modelscope.hub.api import HubApi

    hub = hub_env.hub
    hub.add_repo(MS, REPO, FILES_V1)
    hub.add_repo(MS, "org/gated", {"config.json": b"{}"}, gated=True)
    cache = str(hub_env.ms_cache)

    with pytest.raises(requests.HTTPError):
        snapshot_download("org/missing", cache_dir=cache)
    with pytest.raises(Exception, match="(?i)revision|not exist|404"):
        snapshot_download(REPO, cache_dir=cache, revision="nope")
    with pytest.raises(requests.HTTPError):
        snapshot_download("org/gated", cache_dir=cache)
    folder = snapshot_download("org/gated", cache_dir=cache, token=hub.token)
    assert (Path(folder) / "config.json").read_bytes() == b"{}"

    files = HubApi().get_model_files(REPO, revision="master")
    sizes = {f["Path"]: f["Size"] for f in files}  # folders are listed too (Size 0), as on modelscope.cn
    assert {p: sizes[p] for p in FILES_V1} == {p: len(c) for p, c in FILES_V1.items()}
    assert set(sizes) - set(FILES_V1) == {"weights", "tokenizer", "tokenizer/vocab", "données"}
    from modelscope_hub import HubApi as NewHubApi

    listed = {f.path: f.sha256 for f in NewHubApi().list_repo_files(REPO, "model") if f.type == "blob"}
    assert listed["weights/model.safetensors"] == hub.file(MS, REPO, "weights/model.safetensors").sha256


def test_ms_resume_after_drop_without_redirect(hub_env):
    from modelscope import snapshot_download

    hub = hub_env.hub
    hub.ms_lfs_redirect = False
    hub.add_repo(MS, REPO, FILES_V1)
    hub.faults.drop("weights/model.safetensors", after_bytes=500_000)
    folder = snapshot_download(REPO, cache_dir=str(hub_env.ms_cache))
    _assert_tree(Path(folder), FILES_V1)
    dl = [r for r in hub.log if r.route == "ms.download" and "model.safetensors" in r.path]
    assert dl[0].aborted and dl[0].bytes_sent == 500_000
    assert dl[-1].range == "bytes=500000-" and dl[-1].status == 206
    assert hub.count("cdn.blob") == 0


# ---------------------------------------------------------------------------------------------------
# CLIs
# ---------------------------------------------------------------------------------------------------
def test_cli_hf_download(hub_env, tmp_path):
    hub_env.hub.add_repo(HF, REPO, FILES_V1)
    dest = tmp_path / "hf_local"
    _run([str(VENV_BIN / "hf"), "download", REPO, "--local-dir", str(dest)], hub_env.env)
    _assert_tree(dest, FILES_V1)


def test_cli_modelscope_download(hub_env, tmp_path):
    hub_env.hub.add_repo(MS, REPO, FILES_V1)
    dest = tmp_path / "ms_local"
    _run([str(VENV_BIN / "modelscope"), "download", "--model", REPO, "--local_dir", str(dest)], hub_env.env)
    _assert_tree(dest, FILES_V1)


# ---------------------------------------------------------------------------------------------------
# Raw protocol + faults
# ---------------------------------------------------------------------------------------------------
def test_range_requests_and_headers(hub):
    data = bytes(range(256)) * 10
    sha = hub.add_repo(HF, REPO, {"a.txt": data, "big.bin": data})
    url = f"{hub.url}/{REPO}/resolve/main/a.txt"
    with requests.Session() as s:
        head = s.head(url)
        assert head.status_code == 200
        assert head.headers["X-Repo-Commit"] == sha
        assert head.headers["ETag"] == f'"{hub.file(HF, REPO, "a.txt").git_sha1}"'
        assert head.headers["Accept-Ranges"] == "bytes"
        assert int(head.headers["Content-Length"]) == len(data)

        r = s.get(url, headers={"Range": "bytes=10-19"})
        assert r.status_code == 206 and r.content == data[10:20]
        assert r.headers["Content-Range"] == f"bytes 10-19/{len(data)}"
        r = s.get(url, headers={"Range": "bytes=2500-"})
        assert r.status_code == 206 and r.content == data[2500:]
        r = s.get(url, headers={"Range": "bytes=-5"})
        assert r.status_code == 206 and r.content == data[-5:]
        r = s.get(url, headers={"Range": f"bytes={len(data)}-"})
        assert r.status_code == 416 and r.headers["Content-Range"] == f"bytes */{len(data)}"

        # LFS: 302 to another origin with the X-Linked-* metadata; the CDN honours Range too.
        lfs_url = f"{hub.url}/{REPO}/resolve/{sha}/big.bin"
        head = s.head(lfs_url, allow_redirects=False)
        assert head.status_code == 302
        assert head.headers["X-Linked-Etag"] == f'"{hub.file(HF, REPO, "big.bin").sha256}"'
        assert head.headers["X-Linked-Size"] == str(len(data))
        assert head.headers["Location"].startswith(hub.cdn_url)
        r = s.get(lfs_url, headers={"Range": "bytes=1-3"})
        assert r.status_code == 206 and r.content == data[1:4]

        r = s.get(f"{hub.url}/{REPO}/resolve/main/nope.txt")
        assert r.status_code == 404 and r.headers["X-Error-Code"] == "EntryNotFound"
        assert r.headers["X-Repo-Commit"] == sha
        r = s.get(f"{hub.url}/{REPO}/resolve/nope/a.txt")
        assert r.status_code == 404 and r.headers["X-Error-Code"] == "RevisionNotFound"
        r = s.get(f"{hub.url}/api/models/org/missing/revision/main")
        assert r.status_code == 404 and r.headers["X-Error-Code"] == "RepoNotFound"

    assert hub.requests[("HEAD", "hf.resolve")] == 2
    assert hub.requests[("GET", "cdn.blob")] == 1
    hub.reset_counters()
    assert not hub.requests and not hub.log and hub.bytes_sent() == 0


def test_fault_fail_429_latency_stall_and_bandwidth(hub, tmp_path):
    big = make_file(tmp_path / "big.bin", 2_000_000, seed=1)
    hub.add_repo(HF, REPO, {"a.txt": b"hello", "big.bin": big})
    url = f"{hub.url}/{REPO}/resolve/main/a.txt"
    with requests.Session() as s:
        hub.faults.fail("a.txt", 429, times=2, retry_after=7)
        for _ in range(2):
            r = s.get(url)
            assert r.status_code == 429 and r.headers["Retry-After"] == "7"
        assert s.get(url).content == b"hello"

        hub.faults.fail("hf.resolve", 503)
        assert s.get(url).status_code == 503
        assert s.get(url).status_code == 200

        hub.faults.latency = 0.3
        t0 = time.monotonic()
        s.get(url)
        assert time.monotonic() - t0 >= 0.3
        hub.faults.latency = 0

        hub.faults.stall("big.bin", after_bytes=1000, seconds=1.5)
        with pytest.raises(requests.exceptions.ConnectionError):  # ReadTimeout during body -> ConnectionError
            s.get(f"{hub.url}/{REPO}/resolve/main/big.bin", timeout=(5, 0.5)).content  # noqa: B018
        assert hub.faults.pending["stall"] == 0

    hub.faults.bandwidth = 1_000_000
    t0 = time.monotonic()
    r = requests.get(f"{hub.url}/{REPO}/resolve/main/big.bin")
    assert r.content == big.read_bytes()
    assert time.monotonic() - t0 > 1.0
    hub.faults.reset()
    assert hub.faults.bandwidth is None and hub.faults.pending == {"answer": 0, "fail": 0, "drop": 0, "stall": 0}


def test_large_file_streamed_from_disk(hub_env, tmp_path):
    """Path-backed files are served with sendfile, never loaded whole."""
    from huggingface_hub import hf_hub_download

    big = make_file(tmp_path / "src" / "model.bin", 24 * 1024 * 1024 + 3, seed=2)
    hub_env.hub.add_repo(HF, REPO, {"model.bin": big})
    hub_env.hub.add_repo(MS, REPO, {"model.bin": big})
    path = hf_hub_download(REPO, "model.bin", cache_dir=hub_env.hf_cache)
    assert os.path.getsize(path) == big.stat().st_size
    assert Path(path).read_bytes() == big.read_bytes()
    from modelscope.hub.file_download import model_file_download

    ms = model_file_download(REPO, "model.bin", revision="master", cache_dir=str(hub_env.ms_cache))
    assert Path(ms).read_bytes() == big.read_bytes()


def test_handmade_caches_load_offline(hub_env):
    """Executable spec of the minimal on-disk layouts the clients accept offline (no hub involved)."""
    sha = "a" * 40
    hf_repo = hub_env.hf_cache / "models--org--model"
    (hf_repo / "refs").mkdir(parents=True)
    (hf_repo / "refs" / "main").write_text(sha)
    blobs = hf_repo / "blobs"
    blobs.mkdir()
    for rel, content in FILES_V1.items():
        blob = blobs / f"blob-{abs(hash(rel))}"
        blob.write_bytes(content)
        target = hf_repo / "snapshots" / sha / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        target.symlink_to(os.path.relpath(blob, target.parent))
    ms_snap = hub_env.ms_cache / "models" / "org--model" / "snapshots" / "master"
    for rel, content in FILES_V1.items():
        (ms_snap / rel).parent.mkdir(parents=True, exist_ok=True)
        (ms_snap / rel).write_bytes(content)

    out = _py(
        f"""
        import json
        from huggingface_hub import snapshot_download, hf_hub_download
        from modelscope import snapshot_download as ms_snapshot
        from modelscope.hub.file_download import model_file_download
        c, m = {str(hub_env.hf_cache)!r}, {str(hub_env.ms_cache)!r}
        print(json.dumps([
            snapshot_download('org/model', cache_dir=c),
            hf_hub_download('org/model', 'données/é.txt', cache_dir=c),
            hf_hub_download('org/model', 'config.json', revision={sha!r}, cache_dir=c),
            ms_snapshot('org/model', cache_dir=m, local_files_only=True),
            model_file_download('org/model', 'config.json', revision='master', cache_dir=m, local_files_only=True),
        ]))
        """,
        hub_env.env,
        HF_HUB_OFFLINE="1",
        HF_ENDPOINT="http://127.0.0.1:9",
        MODELSCOPE_ENDPOINT="http://127.0.0.1:9",
    )
    paths = json.loads(out.splitlines()[-1])
    assert paths[0] == str(hf_repo / "snapshots" / sha)
    assert Path(paths[1]).read_bytes() == FILES_V1["données/é.txt"]
    assert Path(paths[2]).read_bytes() == FILES_V1["config.json"]
    assert paths[3] == str(ms_snap)
    assert Path(paths[4]).read_bytes() == FILES_V1["config.json"]


def test_standalone_main(tmp_path):
    repo_dir = tmp_path / "repos" / "org" / "model"
    (repo_dir / "sub").mkdir(parents=True)
    (repo_dir / "sub" / "x.txt").write_bytes(b"x")
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.hub", "--port", "0", "--repos", str(tmp_path / "repos")],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        first = proc.stdout.readline().strip()
        assert first.startswith("URL=http://127.0.0.1:")
        url = first.split("=", 1)[1]
        info = requests.get(f"{url}/api/models/org/model/revision/main", timeout=5).json()
        assert [s["rfilename"] for s in info["siblings"]] == ["sub/x.txt"]
        ms = requests.get(f"{url}/api/v1/models/org/model/repo/files?Revision=master&Recursive=True", timeout=5)
        assert [f["Path"] for f in ms.json()["Data"]["Files"] if f["Type"] == "blob"] == ["sub/x.txt"]
    finally:
        proc.terminate()
        assert proc.wait(timeout=10) == 0


def test_context_manager_stops_cleanly():
    with LocalHub() as h:
        h.add_repo(HF, REPO, {"a.txt": b"a"})
        url = h.url
        with requests.Session() as s:  # leaves a keep-alive connection open
            assert s.get(f"{url}/{REPO}/resolve/main/a.txt").content == b"a"
            t0 = time.monotonic()
            h.stop()
            assert time.monotonic() - t0 < 5
    with pytest.raises(requests.exceptions.ConnectionError):
        requests.get(f"{url}/{REPO}/resolve/main/a.txt", timeout=2)

"""Speed without a flag, asserted through behaviour: the worker count adapts to the files (many requests in
flight for many small files, few files at once when each opens several connections; observed as the most
requests the hub served at once), and -v says where the time per file went."""

from __future__ import annotations

import ast
import os
import pty
import subprocess
import sys
from pathlib import Path

from runpod_model_manager.cache import CacheRoot
from runpod_model_manager.layout import relative_symlink
from runpod_model_manager.manager import MAX_IN_FLIGHT, ModelManager, adaptive_workers
from runpod_model_manager.specs import parse_model_spec
from runpod_model_manager.transfer import EngineSettings
from tests.cli_helpers import REPO_ROOT, run_cli, run_python
from tests.hub import HF

KiB = 1 << 10
OLD_DEFAULT_WORKERS = 16


def test_policy_many_small_files_many_at_once_few_large_ones():
    assert adaptive_workers([1] * 300) == MAX_IN_FLIGHT
    assert adaptive_workers([1] * 5) == 5
    assert adaptive_workers([8]) == 1
    assert adaptive_workers([8] * 20) == MAX_IN_FLIGHT // 8
    assert adaptive_workers([]) == 1


# The hub counts a request as served until its handler thread has returned from sending the answer; by then
# the client, which has read the whole answer, may have sent its next request, which another thread counts.
COUNTING_SLACK = 2


def test_many_small_files_get_many_requests_in_flight(hub_env, tmp_path):
    hub = hub_env.hub
    files = {f"shard_{i:03d}.json": b"x" * (1000 + i) for i in range(100)}
    hub.add_repo(HF, "org/many", files)
    hub.faults.latency = 0.3  # every request waits: only concurrency shortens the run
    hub.reset_counters()
    lingering = hub.peak_concurrency  # requests an earlier test left hanging (a 60 s hang fault) still count
    cache = tmp_path / "cache"
    result = run_cli(hub_env.env, "hf:org/many", "--cache-dir", str(cache), "--lock-file", str(tmp_path / "no.lock"))
    assert result.returncode == 0, result.stderr
    assert hub.count("hf.resolve", "GET") == len(files)  # one request per file, each once
    assert OLD_DEFAULT_WORKERS * 2 <= hub.peak_concurrency - lingering <= MAX_IN_FLIGHT + COUNTING_SLACK


def test_large_files_share_the_requests_in_flight(hub_env, tmp_path):
    """12 files of 8 parts each: 8 files at once (64 requests), not 12 x 8 = 96 requests."""
    hub = hub_env.hub
    files = {f"model-{i:02d}.safetensors": bytes([i]) * (2048 * KiB) for i in range(12)}
    hub.add_repo(HF, "org/big", files)
    hub.faults.latency = 0.2
    hub.reset_counters()
    lingering = hub.peak_concurrency  # requests an earlier test left hanging still count
    settings = EngineSettings(min_part_size=256 * KiB)  # 2 MiB files: 8 parts, 8 connections each
    from downloaders.factory import get_downloader_class

    (tmp_path / "cache").mkdir()
    manager = ModelManager(CacheRoot(tmp_path / "cache", "test"), get_downloader_class, settings=settings)
    [result] = manager.download([parse_model_spec("hf:org/big")])
    assert result.status == "downloaded", result.error
    assert hub.count("cdn.blob", "GET") == 12 * 8
    assert settings.connections < hub.peak_concurrency - lingering <= MAX_IN_FLIGHT + COUNTING_SLACK


def test_verbose_prints_where_the_time_per_file_went(hub_env, tmp_path):
    hub_env.hub.add_repo(HF, "org/few", {f"f{i}.json": b"{}" * (i + 1) for i in range(3)})
    args = ("hf:org/few", "--lock-file", str(tmp_path / "no.lock"))
    quiet = run_cli(hub_env.env, *args, "--cache-dir", str(tmp_path / "a"))
    verbose = run_cli(hub_env.env, *args, "--cache-dir", str(tmp_path / "b"), "-v")
    assert quiet.returncode == verbose.returncode == 0, verbose.stderr
    assert "per file" not in quiet.stderr
    [line] = [ln for ln in verbose.stderr.splitlines() if ln.startswith("per file")]
    assert line.startswith("per file (3 files fetched")
    for phase in ("lock", "resume records", "transfer", "fsync", "checksum", "rename", "hand-off", "link"):
        assert f" {phase} " in line, (phase, line)
    again = run_cli(hub_env.env, *args, "--cache-dir", str(tmp_path / "b"), "-v")  # nothing to fetch
    assert "per file" not in again.stderr


HEAVY = ("requests", "urllib3", "filelock", "rich", "huggingface_hub", "modelscope", "modelscope_hub")


def imported_by(env: dict[str, str], args: list[str]) -> list[str]:
    """The heavy packages that running the CLI with `args` imports (in a fresh interpreter)."""
    code = (
        "import sys\n"
        "from click.testing import CliRunner\n"
        "from download_models import cli\n"
        f"result = CliRunner().invoke(cli, {args!r})\n"
        "assert result.exit_code == 0, result.output\n"
        f"print(sorted(set({HEAVY!r}) & {{m.split('.')[0] for m in sys.modules}}))\n"
    )
    result = run_python(env, code)
    assert result.returncode == 0, result.stderr
    return ast.literal_eval(result.stdout)


def test_start_up_imports_only_what_the_command_needs(hub_env, tmp_path):
    """--help needs no HTTP stack and no rich; list and a warm run with a lock file fetch nothing, so they
    import neither the HTTP stack nor the lock library."""
    hub_env.hub.add_repo(HF, "org/warm", {"config.json": b"{}"})
    cache, lock = str(tmp_path / "cache"), str(tmp_path / "models.lock")
    project = tmp_path / "plugin"
    write_project(project, "warmtest", ["huggingface('org/warm')"])
    env = {**hub_env.env, "PYTHONPATH": str(project)}
    assert run_cli(env, "lock", "--project", "warmtest", "--cache-dir", cache, "--lock-file", lock).returncode == 0
    assert run_cli(env, "--project", "warmtest", "--cache-dir", cache, "--lock-file", lock).returncode == 0
    assert imported_by(env, ["--help"]) == []
    assert imported_by(env, ["list", "--cache-dir", cache, "--lock-file", lock]) == ["rich"]
    warm = ["--project", "warmtest", "--cache-dir", cache, "--lock-file", lock, "-q"]
    assert imported_by(env, warm) == []


def write_project(folder: Path, name: str, models: list[str]) -> None:
    """A project registered through an entry point of a throw-away distribution in `folder` (PYTHONPATH)."""
    dist = folder / f"{name}-0.0.0.dist-info"
    dist.mkdir(parents=True)
    (dist / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 0.0.0\n")
    (dist / "entry_points.txt").write_text(f"[runpod_model_manager.projects]\n{name} = {name}:Project\n")
    (folder / f"{name}.py").write_text(
        "from projects.base import BaseProject, huggingface, modelscope\n\n\n"
        f"class Project(BaseProject):\n    name = {name!r}\n    models = ({', '.join(models)},)\n"
    )


def test_a_warm_run_rewrites_no_record(hub_env, tmp_path):
    """Nothing to fetch: every record, ref and link stays the very file it was (no rewrite, no fsync)."""
    hub = hub_env.hub
    for source in (HF, "modelscope"):
        hub.add_repo(source, "org/warm", {"config.json": b"{}", "w.safetensors": b"\0" * 2048})
    cache = tmp_path / "cache"
    args = ("hf:org/warm", "ms:org/warm", "--cache-dir", str(cache), "--lock-file", str(tmp_path / "no.lock"))
    assert run_cli(hub_env.env, *args).returncode == 0

    def written() -> dict[str, tuple[int, int]]:
        return {
            str(p): (p.lstat().st_ino, p.lstat().st_mtime_ns) for p in cache.rglob("*") if p.is_symlink() or p.is_file()
        }

    before = written()
    assert any("/refs/" in p for p in before) and any("/manifests/" in p for p in before)
    assert run_cli(hub_env.env, *args).returncode == 0
    assert written() == before


def test_relative_symlink_creates_keeps_and_replaces(tmp_path):
    blobs = tmp_path / "blobs"
    blobs.mkdir()
    (blobs / "a").write_text("a")
    (blobs / "b").write_text("b")
    link = tmp_path / "snapshots" / "c1" / "sub" / "f.json"
    relative_symlink(blobs / "a", link)  # its folders do not exist yet
    assert os.readlink(link) == "../../../blobs/a" and link.read_text() == "a"
    inode = link.lstat().st_ino
    relative_symlink(blobs / "a", link)  # already right: left alone
    assert link.lstat().st_ino == inode
    relative_symlink(blobs / "b", link)  # points elsewhere: replaced
    assert link.read_text() == "b"
    link.unlink()
    link.write_text("a copy")  # a regular file there: replaced by the link
    relative_symlink(blobs / "a", link)
    assert link.is_symlink() and link.read_text() == "a"
    assert sorted(p.name for p in link.parent.iterdir()) == ["f.json"]  # no temporary file left


def test_a_terminal_draws_bars_for_large_files_only(hub_env, tmp_path):
    """Hundreds of small files would each add a bar (and a redraw of every bar): they count in the total."""
    files = {f"small_{i:02d}.json": b'{"i": %d}' % i * 10 for i in range(40)}
    hub_env.hub.add_repo(HF, "org/mixed", {**files, "model.safetensors": b"\1" * (3 << 20)})
    args = ["hf:org/mixed", "--cache-dir", str(tmp_path / "cache"), "--lock-file", str(tmp_path / "no.lock")]
    output = run_on_terminal(hub_env.env, args)
    assert "model.safetensors" in output and "total" in output
    assert "small_" not in output
    assert "downloaded huggingface:org/mixed" in output


def run_on_terminal(env: dict[str, str], args: list[str]) -> str:
    """The CLI on a pseudo-terminal (rich progress bars), all it wrote."""
    leader, follower = pty.openpty()
    proc = subprocess.Popen(
        [sys.executable, str(REPO_ROOT / "download_models.py"), *args],
        stdin=follower,
        stdout=follower,
        stderr=follower,
        env={**env, "COLUMNS": "120", "TERM": "xterm", "PYTHONPATH": str(REPO_ROOT)},
        cwd=REPO_ROOT,
    )
    os.close(follower)
    chunks = []
    try:
        while chunk := os.read(leader, 65536):
            chunks.append(chunk)
    except OSError:  # EIO: the terminal's other side closed
        pass
    finally:
        os.close(leader)
    assert proc.wait(timeout=120) == 0
    return b"".join(chunks).decode(errors="replace")


def test_identical_files_of_a_model_are_fetched_once(hub_env, tmp_path):
    """Two names for one content are one Hugging Face blob: one request, no wait on ourselves."""
    same = b'{"shared": true}\n' * 20
    files = {**{f"copy_{i}/config.json": same for i in range(6)}, "other.json": b"{}"}
    hub_env.hub.add_repo(HF, "org/dups", files)
    hub_env.hub.reset_counters()
    cache = tmp_path / "cache"
    result = run_cli(hub_env.env, "hf:org/dups", "--cache-dir", str(cache), "--lock-file", str(tmp_path / "no"), "-v")
    assert result.returncode == 0, result.stderr
    assert hub_env.hub.count("hf.resolve", "GET") == 2
    assert "another process" not in result.stderr
    assert "(2 files fetched" in result.stderr
    snapshot = next((cache / "huggingface" / "hub" / "models--org--dups" / "snapshots").iterdir())
    assert all((snapshot / path).read_bytes() == content for path, content in files.items())

"""Looking after the volume: `list` sizes, `rm`, `prune`, and the leftovers a run cleans up, through the real CLI
on caches filled by us, by `hf download` and by `modelscope download`, with other processes downloading."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.cli_helpers import (
    REPO_ROOT,
    assert_locking_as_asked,
    assert_one_line_error,
    content,
    kill9,
    recorded_bytes,
    run_cli,
    run_python,
    wait_until,
)
from tests.hub import HF, MS

MiB = 1 << 20
STATE = ".runpod-model-manager"
VENV_BIN = Path(sys.executable).parent
FAST = {"RPMM_RETRY_BACKOFF": "0.01", "RPMM_RETRY_BACKOFF_MAX": "0.05", "RPMM_RECORD_INTERVAL": "0.2"}


def hf_dir(cache: Path, repo: str) -> Path:
    return cache / "huggingface" / "hub" / f"models--{repo.replace('/', '--')}"


def ms_dir(cache: Path, repo: str) -> Path:
    return cache / "modelscope" / "models" / repo.replace("/", "--")


def du(*paths: Path) -> int:
    """Disk usage as du counts it, each file once (the measure `list`, `rm` and `prune` report)."""
    seen, total = set(), 0
    for path in paths:
        for file in [path] if not path.is_dir() else [p for p in path.rglob("*") if not p.is_dir()]:
            st = file.lstat()
            if (st.st_dev, st.st_ino) not in seen:
                seen.add((st.st_dev, st.st_ino))
                total += st.st_blocks * 512
    return total


def files_under(folder: Path) -> list[str]:
    return (
        sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if not p.is_dir()) if folder.exists() else []
    )


@pytest.fixture
def env(hub_env) -> dict[str, str]:
    return {**hub_env.env, **FAST}


@pytest.fixture
def started() -> Iterator[list[subprocess.Popen]]:
    procs: list[subprocess.Popen] = []
    yield procs
    for proc in procs:
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=30)


def start(started: list, cmd: list[str], env: dict[str, str], log: Path) -> subprocess.Popen:
    with open(log, "w") as out:
        proc = subprocess.Popen(
            cmd,
            env={**env, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))},
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=REPO_ROOT,
        )
    started.append(proc)
    return proc


def our_cli(*args: str) -> list[str]:
    return [sys.executable, str(REPO_ROOT / "download_models.py"), *args]


def incomplete(cache: Path) -> list[str]:
    return files_under(cache / STATE / "incomplete")


def lock_files(cache: Path) -> list[str]:
    return [p for p in files_under(cache / STATE / "locks")]


def cached_models(env: dict[str, str], cache: Path) -> dict[str, str | None]:
    """`list`'s models that are in no project: model -> revisions on disk."""
    listing = json.loads(run_cli(env, "list", "--cache-dir", str(cache), "--json").stdout)
    return {r["model"]: r["revision"] for r in listing["models"] if r["project"] is None}


# -- list --------------------------------------------------------------------------------------------
def test_list_shows_every_model_size_the_total_and_free_space(hub, env, tmp_path):
    cache = tmp_path / "c"
    hub.add_repo(HF, "org/one", {"config.json": b"{}", "w.bin": content(300_000, 1)})
    hub.add_repo(MS, "org/two", {"config.json": b"{}", "w.bin": content(200_000, 2)})
    assert run_cli(env, "hf:org/one", "ms:org/two", "--cache-dir", str(cache)).returncode == 0

    before = shutil.disk_usage(cache).free
    result = run_cli(env, "list", "--cache-dir", str(cache), "--json")
    after = shutil.disk_usage(cache).free
    assert result.returncode == 0, result.stderr
    listing = json.loads(result.stdout)
    rows = {r["model"]: r for r in listing["models"]}
    assert rows["org/one"]["size_bytes"] == du(hf_dir(cache, "org/one")) > 300_000
    assert rows["org/two"]["size_bytes"] == du(ms_dir(cache, "org/two")) > 200_000
    assert rows["org/one"]["status"] == "complete" and rows["org/one"]["project"] is None
    assert listing["total_bytes"] == sum(r["size_bytes"] for r in listing["models"])
    slack = 1 << 30  # other processes write to this disk meanwhile
    assert min(before, after) - slack < listing["free_bytes"] < max(before, after) + slack
    assert listing["partial_bytes"] == 0

    table = run_cli(env, "list", "--cache-dir", str(cache))
    assert "org/one" in table.stdout and "org/two" in table.stdout
    assert "free on its filesystem" in table.stdout
    assert "not re-hashed" in table.stdout and "download --verify" in table.stdout


# -- rm ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("source", [HF, MS])
def test_rm_removes_the_model_and_our_records(hub, env, tmp_path, source):
    cache = tmp_path / "c"
    prefix = "hf" if source == HF else "ms"
    hub.add_repo(source, "org/gone", {"config.json": b"{}", "w.bin": content(500_000, 3)})
    hub.add_repo(source, "org/kept", {"config.json": b"{}"})
    assert run_cli(env, f"{prefix}:org/gone", f"{prefix}:org/kept", "--cache-dir", str(cache)).returncode == 0
    folder = (hf_dir if source == HF else ms_dir)(cache, "org/gone")
    size = du(folder, cache / STATE / "models" / source / "org" / "gone")

    dry = run_cli(env, "rm", f"{prefix}:org/gone", "--dry-run", "--cache-dir", str(cache))
    assert dry.returncode == 0, dry.stderr
    assert f"would remove {source}:org/gone" in dry.stdout and folder.exists()

    result = run_cli(env, "rm", f"{prefix}:org/gone", "--cache-dir", str(cache), "--json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["removed"] == [{"model": f"{source}:org/gone", "bytes": size}]
    assert not folder.exists()
    assert not (cache / STATE / "models" / source / "org" / "gone").exists()
    assert (cache / STATE / "models" / source / "org" / "kept").exists()
    assert set(cached_models(env, cache)) == {"org/kept"}

    again = run_cli(env, "rm", f"{prefix}:org/gone", "--cache-dir", str(cache))
    assert_one_line_error(again, 1, f"{source}:org/gone", "not in the cache")


def test_rm_one_revision_keeps_the_blobs_others_use(hub, env, tmp_path):
    cache = tmp_path / "c"
    first = hub.add_repo(HF, "org/revs", {"config.json": b'{"a": 1}', "w.bin": content(400_000, 4)})
    second = hub.commit(HF, "org/revs", {"w.bin": content(400_000, 5)})
    assert run_cli(env, f"hf:org/revs@{first}", "hf:org/revs", "--cache-dir", str(cache)).returncode == 0
    folder = hf_dir(cache, "org/revs")
    for commit in (first, second):  # the library notes a file the hub does not have, per commit
        code = (
            "import huggingface_hub as h\n"
            f"try: h.hf_hub_download('org/revs', 'absent.txt', revision='{commit}')\n"
            "except h.errors.EntryNotFoundError: pass"
        )
        assert run_python({**env, "HF_HUB_CACHE": str(cache / "huggingface" / "hub")}, code).returncode == 0
        assert (folder / ".no_exist" / commit / "absent.txt").is_file()
    old_blob = folder / "blobs" / hub.file(HF, "org/revs", "w.bin", first).etag
    shared = folder / "blobs" / hub.file(HF, "org/revs", "config.json").etag
    records = cache / STATE / "models" / HF / "org" / "revs"
    expected = du(
        folder / "snapshots" / first, old_blob, records / "refs" / first, records / "manifests" / f"{first}.json"
    )

    result = run_cli(env, "rm", "hf:org/revs", "--revision", first[:10], "--yes", "--cache-dir", str(cache), "--json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["removed"][0]["bytes"] == expected
    assert not (folder / "snapshots" / first).exists() and not old_blob.exists()
    assert not (folder / ".no_exist" / first).exists() and (folder / ".no_exist" / second / "absent.txt").exists()
    assert shared.exists() and (folder / "snapshots" / second / "config.json").resolve() == shared
    assert (folder / "refs" / "main").read_text() == second
    code = "from huggingface_hub import snapshot_download as s; print(s('org/revs', local_files_only=True))"
    offline = run_python({**env, "HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(cache / "huggingface" / "hub")}, code)
    assert offline.returncode == 0, offline.stderr
    assert offline.stdout.strip().endswith(second)
    assert cached_models(env, cache) == {"org/revs": "main"}  # the first revision, by commit, is gone

    missing = run_cli(env, "rm", "hf:org/revs", "--revision", "nope", "--cache-dir", str(cache))
    assert_one_line_error(missing, 1, "huggingface:org/revs@nope", "no such revision", f"{second} (main)")


def test_rm_refuses_a_model_another_process_downloads(hub, env, locking, tmp_path, started):
    env = locking(env)
    cache, data = tmp_path / "c", content(6 * MiB, 6)
    hub.add_repo(HF, "org/busy", {"config.json": b"{}", "w.bin": data})
    hub.faults.bandwidth = MiB  # 6 s for the file
    proc = start(started, our_cli("hf:org/busy", "--cache-dir", str(cache)), env, tmp_path / "dl.log")
    wait_until(lambda: recorded_bytes(cache) > 0, proc, "bytes in the partial file")
    listing = run_cli(env, "list", "--cache-dir", str(cache), "--json")
    assert listing.returncode == 0 and json.loads(listing.stdout)["partial_bytes"] > 0, listing.stderr
    result = run_cli(env, "rm", "hf:org/busy", "--yes", "--cache-dir", str(cache))
    assert_one_line_error(result, 1, "huggingface:org/busy", "another process is downloading it")
    pruned = run_cli(env, "prune", "--older-than", "0s", "--yes", "--cache-dir", str(cache))
    assert pruned.returncode == 0, pruned.stderr
    assert "left alone: huggingface:org/busy: another process is downloading it" in pruned.stdout
    hub.faults.bandwidth = None
    assert proc.wait(timeout=60) == 0, (tmp_path / "dl.log").read_text()
    assert (hf_dir(cache, "org/busy") / "blobs" / hub.file(HF, "org/busy", "w.bin").etag).read_bytes() == data
    assert run_cli(env, "rm", "hf:org/busy", "--yes", "--cache-dir", str(cache)).returncode == 0
    assert hub.bytes_sent("org/busy", "w.bin") == len(data)  # its partial file was left alone
    assert_locking_as_asked(env)


# -- prune -------------------------------------------------------------------------------------------
def hub_clients_env(env: dict[str, str], cache: Path) -> dict[str, str]:
    """`hf download` and `modelscope download` writing into the cache's native folders."""
    return {**env, "HF_HUB_CACHE": str(cache / "huggingface" / "hub"), "MODELSCOPE_CACHE": str(cache / "modelscope")}


def hf_download(env: dict[str, str], *args: str) -> list[str]:
    return [str(VENV_BIN / "hf"), "download", *args]


def ms_download(env: dict[str, str], *args: str) -> list[str]:
    return [str(VENV_BIN / "modelscope"), "download", *args]


def killed_midway(started, cmd, env, folder: Path, pattern: str, log: Path) -> list[Path]:
    """Run a download, kill -9 it once a partial file matching `pattern` has bytes: what it leaves."""
    proc = start(started, cmd, env, log)
    partials = lambda: [p for p in folder.rglob(pattern) if p.stat().st_size > 0]  # noqa: E731
    wait_until(lambda: folder.exists() and partials(), proc, f"a partial {pattern} in {folder}")
    kill9(proc)
    return partials()


def test_prune_a_volume_filled_by_hf_and_modelscope_download(hub, env, tmp_path, started):
    cache = tmp_path / "c"
    clients = hub_clients_env(env, cache)
    first = hub.add_repo(HF, "org/hfm", {"config.json": b'{"a": 1}', "w.bin": content(300_000, 10)})
    second = hub.commit(HF, "org/hfm", {"w.bin": content(300_000, 11)})
    hub.add_repo(HF, "org/hfkill", {"w.bin": content(24 * MiB, 12)})  # hf writes 10 MB chunks
    hub.add_repo(MS, "org/msm", {"config.json": b"{}", "w.bin": content(200_000, 13)})
    hub.add_repo(MS, "org/mskill", {"w.bin": content(8 * MiB, 14)})
    for cmd in (hf_download(clients, "org/hfm", "--revision", first), hf_download(clients, "org/hfm")):
        subprocess.run(cmd, env=clients, check=True, capture_output=True, timeout=120)
    subprocess.run(ms_download(clients, "org/msm"), env=clients, check=True, capture_output=True, timeout=120)
    hub.faults.bandwidth = 4 * MiB
    hf_partial = killed_midway(
        started,
        hf_download(clients, "org/hfkill"),
        clients,
        hf_dir(cache, "org/hfkill"),
        "*.incomplete",
        tmp_path / "1",
    )
    ms_partial = killed_midway(
        started,
        ms_download(clients, "org/mskill"),
        clients,
        ms_dir(cache, "org/mskill"),
        "*.incomplete",
        tmp_path / "2",
    )
    hub.faults.bandwidth = None
    hfm = hf_dir(cache, "org/hfm")
    detached = du(hfm / "snapshots" / first, hfm / "blobs" / hub.file(HF, "org/hfm", "w.bin", first).etag)
    hf_locks = sorted((cache / "huggingface" / "hub" / ".locks").rglob("*.lock"))
    ms_locks = sorted((cache / "modelscope" / ".lock").glob("*.lock"))
    assert hf_locks and ms_locks  # what the libraries leave behind

    kept = run_cli(env, "prune", "--yes", "--cache-dir", str(cache), "--json")  # 7 days: the partials are young
    assert kept.returncode == 0, kept.stderr
    freed = json.loads(kept.stdout)["freed"]
    assert freed["detached revisions"] == {"count": 1, "bytes": detached}
    assert freed["partial files"]["count"] == 0 and freed["stale lock files"]["count"] == 0
    assert not (hfm / "snapshots" / first).exists() and all(p.exists() for p in hf_partial + ms_partial)

    dry = run_cli(env, "prune", "--older-than", "0s", "--dry-run", "--cache-dir", str(cache), "--json")
    planned = json.loads(dry.stdout)
    assert planned["dry_run"] and planned["freed"]["partial files"] == {
        "count": 2,
        "bytes": du(*hf_partial, *ms_partial),
    }
    assert all(p.exists() for p in hf_partial + ms_partial + hf_locks + ms_locks)

    result = run_cli(env, "prune", "--older-than", "0s", "--cache-dir", str(cache))
    assert result.returncode == 0, result.stderr
    assert not any(p.exists() for p in hf_partial + ms_partial + hf_locks + ms_locks)
    assert re.search(r"^partial files +2 +[\d.]+ [kM]B$", result.stdout, re.M), result.stdout
    assert list((cache / "huggingface" / "hub" / ".locks").rglob("*")) == []
    code = (
        "from huggingface_hub import snapshot_download as h; from modelscope import snapshot_download as m\n"
        "print(h('org/hfm', local_files_only=True)); print(m('org/msm', local_files_only=True))"
    )
    offline = run_python({**clients, "HF_HUB_OFFLINE": "1"}, code)
    assert offline.returncode == 0, offline.stderr
    assert offline.stdout.split()[-2].endswith(second)
    assert (Path(offline.stdout.split()[-1]) / "w.bin").read_bytes() == content(200_000, 13)


def test_rm_and_prune_leave_alone_what_hf_download_is_writing(hub, env, tmp_path, started):
    cache = tmp_path / "c"
    clients = hub_clients_env(env, cache)
    data = content(24 * MiB, 15)
    hub.add_repo(HF, "org/hfbusy", {"w.bin": data})
    hub.faults.bandwidth = 4 * MiB
    proc = start(started, hf_download(clients, "org/hfbusy"), clients, tmp_path / "hf.log")
    folder = hf_dir(cache, "org/hfbusy")
    wait_until(lambda: [p for p in folder.rglob("*.incomplete") if p.stat().st_size], proc, "hf's partial file")
    refused = run_cli(env, "rm", "hf:org/hfbusy", "--yes", "--cache-dir", str(cache))
    assert_one_line_error(refused, 1, "huggingface:org/hfbusy", "another process is downloading it")
    pruned = run_cli(env, "prune", "--older-than", "0s", "--cache-dir", str(cache), "--json")
    assert json.loads(pruned.stdout)["freed"]["partial files"]["count"] == 0
    hub.faults.bandwidth = None
    assert proc.wait(timeout=60) == 0, (tmp_path / "hf.log").read_text()
    assert (folder / "blobs" / hub.file(HF, "org/hfbusy", "w.bin").etag).read_bytes() == data
    assert run_cli(env, "rm", "hf:org/hfbusy", "--yes", "--cache-dir", str(cache)).returncode == 0
    assert not folder.exists()


def test_prune_keeps_revisions_a_lock_file_pins(hub, env, tmp_path):
    cache = tmp_path / "c"
    first = hub.add_repo(HF, "org/pin", {"config.json": b'{"a": 1}'})
    hub.commit(HF, "org/pin", {"config.json": b'{"a": 2}'})
    assert run_cli(env, f"hf:org/pin@{first}", "hf:org/pin", "--cache-dir", str(cache)).returncode == 0
    entry = hub.file(HF, "org/pin", "config.json", first)
    lock = tmp_path / "models.lock"
    files = [{"path": "config.json", "size": entry.size, "checksum": f"git-sha1:{entry.blob_id}"}]
    model = {"source": HF, "id": "org/pin", "revision": first, "commit": first, "files": files}
    lock.write_text(json.dumps({"version": 1, "models": [model]}))

    pinned = run_cli(env, "prune", "--lock-file", str(lock), "--cache-dir", str(cache), "--json")
    assert json.loads(pinned.stdout)["freed"]["detached revisions"]["count"] == 0
    assert (hf_dir(cache, "org/pin") / "snapshots" / first).is_dir()
    unpinned = run_cli(env, "prune", "--lock-file", str(tmp_path / "none.lock"), "--cache-dir", str(cache), "--json")
    assert json.loads(unpinned.stdout)["freed"]["detached revisions"]["count"] == 1
    assert not (hf_dir(cache, "org/pin") / "snapshots" / first).exists()
    assert not (cache / STATE / "models" / HF / "org" / "pin" / "manifests" / f"{first}.json").exists()


def test_prune_removes_unreferenced_blobs_only_once_old(hub, env, tmp_path):
    """A model that failed half-way keeps the blobs it finished (the next run needs them) until they are old."""
    cache = tmp_path / "c"
    hub.add_repo(HF, "org/half", {"a.bin": content(100_000, 20), "b.bin": content(100_000, 21)})
    hub.faults.fail("b.bin", 500, times=100)
    assert run_cli({**env, "RPMM_RETRIES": "0"}, "hf:org/half", "--cache-dir", str(cache)).returncode == 1
    blob = hf_dir(cache, "org/half") / "blobs" / hub.file(HF, "org/half", "a.bin").etag
    assert blob.exists()
    young = run_cli(env, "prune", "--cache-dir", str(cache), "--json")
    assert json.loads(young.stdout)["freed"]["unreferenced blobs"]["count"] == 0 and blob.exists()
    old = run_cli(env, "prune", "--older-than", "0s", "--cache-dir", str(cache), "--json")
    assert json.loads(old.stdout)["freed"]["unreferenced blobs"] == {"count": 1, "bytes": 102400}
    assert not blob.exists()


def test_prune_forgets_models_no_longer_present(hub, env, tmp_path):
    cache = tmp_path / "c"
    hub.add_repo(MS, "org/deleted", {"config.json": b"{}"})
    hub.add_repo(MS, "org/present", {"config.json": b"{}"})
    assert run_cli(env, "ms:org/deleted", "ms:org/present", "--cache-dir", str(cache)).returncode == 0
    shutil.rmtree(ms_dir(cache, "org/deleted"))  # removed by hand
    records = cache / STATE / "models" / MS / "org"
    result = run_cli(env, "prune", "--cache-dir", str(cache), "--json")
    assert json.loads(result.stdout)["freed"]["records"]["count"] == 2  # its ref and its manifest
    assert not (records / "deleted").exists() and (records / "present" / "refs" / "master").exists()


# -- what a run cleans up after itself (#8 item 11) --------------------------------------------------
def test_lock_files_do_not_pile_up(hub, env, tmp_path):
    cache = tmp_path / "c"
    hub.add_repo(HF, "org/many", {f"f{i:02d}.txt": f"file {i}".encode() for i in range(30)})
    assert run_cli(env, "hf:org/many", "--cache-dir", str(cache)).returncode == 0
    assert lock_files(cache) == []  # one per file (and one for the model) while it ran


def test_a_partial_of_a_file_the_hub_no_longer_publishes_goes_with_the_next_run(hub, env, tmp_path, started):
    cache, size = tmp_path / "c", 32 * MiB
    hub.add_repo(HF, "org/moved", {"w.bin": content(size, 30)})
    hub.faults.bandwidth = 2 * MiB
    proc = start(started, our_cli("hf:org/moved", "--cache-dir", str(cache)), env, tmp_path / "1.log")
    wait_until(lambda: recorded_bytes(cache) > 0, proc, "a resume record")
    kill9(proc)
    hub.faults.bandwidth = None
    assert [Path(p).suffix for p in incomplete(cache)] == [".json", ".part"]  # 32 MB, preallocated
    hub.commit(HF, "org/moved", {"w.bin": content(size, 31)})  # upstream changed: a new blob

    result = run_cli(env, "hf:org/moved", "--cache-dir", str(cache))
    assert result.returncode == 0, result.stderr
    assert incomplete(cache) == []
    blobs = hf_dir(cache, "org/moved") / "blobs"
    assert (blobs / hub.file(HF, "org/moved", "w.bin").etag).read_bytes() == content(size, 31)


def test_old_partials_go_with_the_next_run_unless_another_process_holds_them(hub, env, tmp_path, started):
    cache = tmp_path / "c"
    hub.add_repo(HF, "org/left", {"w.bin": content(32 * MiB, 40)})
    hub.add_repo(HF, "org/running", {"w.bin": content(6 * MiB, 41)})
    hub.add_repo(HF, "org/other", {"a.txt": b"a"})
    hub.faults.bandwidth = 2 * MiB
    left = start(started, our_cli("hf:org/left", "--cache-dir", str(cache)), env, tmp_path / "1.log")
    wait_until(lambda: recorded_bytes(cache) > 0, left, "a resume record")
    kill9(left)
    abandoned = incomplete(cache)
    assert run_cli(env, "hf:org/other", "--cache-dir", str(cache)).returncode == 0
    assert incomplete(cache) == abandoned  # young: kept for the run that resumes it

    hub.faults.bandwidth = MiB
    running = start(started, our_cli("hf:org/running", "--cache-dir", str(cache)), env, tmp_path / "2.log")
    # Its partial and its resume record, which comes a moment after the partial.
    wait_until(lambda: len(incomplete(cache)) == 2 * len(abandoned), running, "the second download's partial")
    held = sorted(set(incomplete(cache)) - set(abandoned))
    result = run_cli({**env, "RPMM_PARTIAL_MAX_AGE": "0"}, "hf:org/other", "--cache-dir", str(cache))
    assert result.returncode == 0, result.stderr
    assert incomplete(cache) == held  # the abandoned one is gone, the one in progress stays
    hub.faults.bandwidth = None
    assert running.wait(timeout=60) == 0, (tmp_path / "2.log").read_text()
    assert hub.bytes_sent("org/running", "w.bin") == 6 * MiB  # nothing fetched twice
    assert incomplete(cache) == []

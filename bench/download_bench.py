#!/usr/bin/env python
"""Download benchmark: our transfer engine vs curl, `hf download` and `modelscope download`.

    python bench/download_bench.py                    # full run (2 GiB file; ~10-15 minutes)
    python bench/download_bench.py --quick            # smoke check (256 MiB file; ~2 minutes)
    python bench/download_bench.py --scenario 1 5 --json results.json

Everything runs against a LocalHub (tests/hub) on 127.0.0.1, in its own process so that its GIL does not
slow the timed clients. Every client runs as a separate process, downloads into a fresh temporary directory,
and is timed from spawn to exit (interpreter start-up included). The generated repos and all downloads live
in one temporary directory that is deleted at the end. See bench/README.md for the scenarios and targets.
"""

from __future__ import annotations

import argparse
import compileall
import contextlib
import functools
import hashlib
import json
import multiprocessing as mp
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from tests.hub.client_env import CLEARED_VARS, client_env  # noqa: E402 (after the path is set)

try:
    import psutil
except ImportError:  # peak RSS then comes from wait4's ru_maxrss only
    psutil = None

BIN = Path(sys.executable).parent  # the venv's bin: hf, modelscope
MiB = 1 << 20
MB = 1_000_000
HF, MS = "huggingface", "modelscope"
SCENARIOS = [1, 2, 3, 4, 5, 6, 7]
RARE_SYNC = "ours, RPMM_RECORD_INTERVAL=600 (info)"
# checked with OpenSSL's sha256 (SHA-NI, as fast as hashlib; coreutils' sha256sum is ~4x slower) when present
SHA256_CMD = "openssl dgst -sha256 -r" if shutil.which("openssl") else "sha256sum"
CURL_CHECKED = f"curl | {SHA256_CMD.split()[0]} sha256 (checked)"
CURL_SAME = f"curl | {SHA256_CMD.split()[0]} sha256 + fsync"  # the guarantees ours gives


# ------------------------------------------------------------------------------------------------
# Settings
# ------------------------------------------------------------------------------------------------
@dataclass
class Settings:
    big_sizes: tuple[int, ...] = (512 * MiB, 2 << 30)  # scenario 1, one file each; the largest for 2 and 5
    cap: int = 20 * MB  # scenario 2: bytes/s per connection (per HTTP response)
    project_models: int = 8  # scenario 3
    small_files: int = 20
    small_size: int = 100_000
    medium_files: int = 5
    medium_size: int = 5 * MB
    latency: float = 0.050  # scenario 3: seconds before every response
    warm_models: int = 50  # scenario 4 (half Hugging Face, half ModelScope)
    many_small: int = 300  # scenario 6: files in one repository
    many_small_size: int = 20_000
    many_small_latency: float = 0.030
    huge_count: int = 10_000  # scenario 7: files in one repository (peak memory)
    huge_size: int = 100
    repeat: int = 3  # runs per tool in scenarios 1, 3, 4, 6 (median reported); scenarios 2 and 7 run once
    startup_runs: int = 7  # scenario 4b
    timeout: float = 900.0  # seconds, per client process

    @property
    def big_size(self) -> int:
        return max(self.big_sizes)

    @classmethod
    def quick(cls) -> Settings:
        return cls(
            big_sizes=(256 * MiB,),
            project_models=4,
            small_files=10,
            medium_files=2,
            warm_models=10,
            huge_count=2000,
            repeat=1,
            startup_runs=3,
            timeout=300.0,
        )


# ------------------------------------------------------------------------------------------------
# The hub, in its own process, driven through a pipe
# ------------------------------------------------------------------------------------------------
def _hub_main(conn, kwargs: dict) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent stops us
    from tests.hub import LocalHub

    hub = LocalHub(**kwargs).start()
    conn.send(("ok", {"url": hub.url, "cdn_url": hub.cdn_url, "pid": os.getpid()}))
    try:
        while True:
            try:
                op, args = conn.recv()
            except (EOFError, OSError):  # the parent is gone
                break
            try:
                result = None
                if op == "stop":
                    conn.send(("ok", None))
                    break
                if op == "add_repo":
                    source, repo_id, files = args
                    result = hub.add_repo(source, repo_id, {k: Path(v) for k, v in files.items()})
                elif op == "faults":
                    hub.faults.reset()
                    hub.faults.latency, hub.faults.bandwidth = args
                elif op == "reset_counters":
                    hub.reset_counters()
                elif op == "stats":
                    result = {
                        "requests": {f"{m} {r}": n for (m, r), n in sorted(hub.requests.items())},
                        "bytes_sent": hub.total_bytes_sent,
                        "server_errors": len(hub.server_errors),
                        "aborted": sum(1 for rec in hub.log if rec.aborted),
                        "peak_concurrency": hub.peak_concurrency,
                    }
                else:
                    raise ValueError(f"unknown op {op!r}")
                conn.send(("ok", result))
            except Exception as exc:  # report, keep serving
                conn.send(("error", f"{type(exc).__name__}: {exc}"))
    finally:
        hub.stop()


class HubProcess:
    def __init__(self, **kwargs) -> None:
        ctx = mp.get_context("spawn")
        self._conn, child = ctx.Pipe()
        self._proc = ctx.Process(target=_hub_main, args=(child, kwargs), name="LocalHub", daemon=True)
        self._proc.start()
        child.close()
        info = self._recv(60)
        self.url, self.cdn_url, self.pid = info["url"], info["cdn_url"], info["pid"]

    def _recv(self, timeout: float):
        if not self._conn.poll(timeout):
            raise TimeoutError(f"the hub process did not answer within {timeout:.0f}s")
        status, value = self._conn.recv()
        if status != "ok":
            raise RuntimeError(f"hub: {value}")
        return value

    def call(self, op: str, *args, timeout: float = 60.0):
        self._conn.send((op, args))
        return self._recv(timeout)

    def add_repo(self, source: str, repo_id: str, files: dict[str, Path]) -> str:
        # The hub hashes every file once (2 GiB: a few seconds).
        return self.call("add_repo", source, repo_id, {k: str(v) for k, v in files.items()}, timeout=600)

    def faults(self, latency: float = 0.0, bandwidth: int | None = None) -> None:
        self.call("faults", latency, bandwidth)

    def reset_counters(self) -> None:
        self.call("reset_counters")

    def stats(self) -> dict:
        return self.call("stats")

    def stop(self) -> None:
        try:
            if self._proc.is_alive():
                self.call("stop", timeout=15)
        except Exception:
            pass
        self._proc.join(10)
        if self._proc.is_alive():
            self._proc.terminate()
            self._proc.join(5)


# ------------------------------------------------------------------------------------------------
# Running one client process: wall time, peak RSS, exit code
# ------------------------------------------------------------------------------------------------
_CURRENT_PGID: list[int] = []  # process group of the client running now (killed on exit)


@dataclass
class Proc:
    rc: int
    seconds: float
    peak_rss: int  # bytes: max of (sampled RSS of the process tree, ru_maxrss from wait4)
    output: str  # tail of stdout+stderr
    timed_out: bool = False


def _sample_rss(pid: int, stop: threading.Event, peak: list[int]) -> None:
    if psutil is None:
        return
    try:
        root = psutil.Process(pid)
    except psutil.Error:
        return
    while not stop.wait(0.05):
        try:
            procs = [root, *root.children(recursive=True)]
        except psutil.Error:
            return
        total = 0
        for p in procs:
            with contextlib.suppress(psutil.Error):
                total += p.memory_info().rss
        peak[0] = max(peak[0], total)


def run_process(cmd: list[str], *, env: dict[str, str], cwd: Path, timeout: float, log: Path) -> Proc:
    with open(log, "wb") as out:
        t0 = time.perf_counter()
        p = subprocess.Popen(
            cmd,
            cwd=cwd,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        _CURRENT_PGID.append(p.pid)
        stop, peak, timed_out = threading.Event(), [0], [False]
        sampler = threading.Thread(target=_sample_rss, args=(p.pid, stop, peak), daemon=True)
        sampler.start()

        def kill() -> None:
            timed_out[0] = True
            with contextlib.suppress(ProcessLookupError):
                os.killpg(p.pid, signal.SIGKILL)

        timer = threading.Timer(timeout, kill)
        timer.start()
        try:
            _, status, usage = os.wait4(p.pid, 0)
            seconds = time.perf_counter() - t0
        finally:
            timer.cancel()
            stop.set()
            sampler.join()
            _CURRENT_PGID.remove(p.pid)
        p.returncode = os.waitstatus_to_exitcode(status)
    text = log.read_text(errors="replace")
    return Proc(p.returncode, seconds, max(peak[0], usage.ru_maxrss * 1024), text[-3000:], timed_out[0])


def _kill_current() -> None:
    for pgid in list(_CURRENT_PGID):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pgid, signal.SIGKILL)


# ------------------------------------------------------------------------------------------------
# Results
# ------------------------------------------------------------------------------------------------
@dataclass
class Run:
    scenario: str
    tool: str
    seconds: float
    ok: bool
    peak_rss: int = 0
    nbytes: int = 0  # payload bytes the run had to fetch
    requests: int = 0  # HTTP requests the hub saw (hub + CDN)
    routes: dict[str, int] = field(default_factory=dict)
    note: str = ""
    load: float = 0.0  # 1-minute load average when the run ended (other work on the machine skews timings)
    concurrency: int = 0  # most requests the hub served at once during the run
    output: str = ""  # tail of the client's output, kept only when asked for


@dataclass
class Row:
    scenario: str
    tool: str
    seconds: float | None
    mbps: float | None
    ratio: float | None  # peer seconds / ours seconds (> 1: ours is faster)
    ok: bool = True
    notes: str = ""
    runs: int = 1


@dataclass
class Target:
    scenario: str
    what: str
    value: float | None
    goal: str
    met: bool | None


@dataclass(frozen=True)
class BigFile:
    repo_id: str
    path: Path
    size: int
    sha256: str
    hash_seconds: float  # one thread hashing it from the page cache


def hash_timed(path: Path) -> tuple[str, float]:
    """The sha256 of `path` and the seconds it took (read from the page cache, 8 MiB at a time)."""
    h = hashlib.sha256()
    t0 = time.perf_counter()
    with open(path, "rb", buffering=0) as f:
        while block := f.read(8 * MiB):
            h.update(block)
    return h.hexdigest(), time.perf_counter() - t0


def _mb(n: int) -> str:
    return f"{n / MB:.0f} MB"


def _load() -> str:
    return ", ".join(f"{x:.2f}" for x in os.getloadavg())


def _median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


# ------------------------------------------------------------------------------------------------
# The benchmark
# ------------------------------------------------------------------------------------------------
class Bench:
    def __init__(self, settings: Settings, root: Path, verbose: bool) -> None:
        self.s = settings
        self.root = root
        self.verbose = verbose
        self.data = root / "repos"
        self.work = root / "work"
        self.logs = root / "logs"
        for d in (self.data, self.work, self.logs):
            d.mkdir(parents=True, exist_ok=True)
        self.hub = HubProcess()
        self.runs: list[Run] = []
        self.rows: list[Row] = []
        self.targets: list[Target] = []
        self.extra: dict = {}
        self._n = 0
        self._bigs: dict[int, BigFile] = {}
        self._primed = False
        self._s1_runs: list[Run] = []
        self._s2_runs: list[Run] = []

    def close(self) -> None:
        self.hub.stop()

    # -- helpers ------------------------------------------------------------------------------------
    def say(self, text: str) -> None:
        print(f"[{time.strftime('%H:%M:%S')}] {text}", flush=True)

    def env(self, home: Path, extra: dict[str, str] | None = None) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if k not in CLEARED_VARS}
        env.update(client_env(self.hub.url, home))
        env.update({"PATH": f"{BIN}{os.pathsep}{env.get('PATH', '')}", "PYTHONUNBUFFERED": "1"})
        env.update(extra or {})
        return env

    def fresh_dir(self, name: str) -> Path:
        self._n += 1
        d = self.work / f"{self._n:03d}-{name.replace(' ', '_').replace('/', '_')}"
        d.mkdir(parents=True)
        return d

    def clear(self, d: Path) -> None:
        shutil.rmtree(d, ignore_errors=True)
        os.sync()  # no dirty pages of one run get written back during the next

    def ours(self, ids: list[str], cache: Path, *extra: str) -> list[str]:
        """Our CLI with its defaults (workers and connections adapt to the files), as a user runs it."""
        return [
            sys.executable,
            str(REPO_ROOT / "download_models.py"),
            *ids,
            "--cache-dir",
            str(cache),
            "--lock-file",
            str(cache.parent / "no-models.lock"),
            *(extra or ("-q",)),
        ]

    def execute(self, cmd: list[str], *, home: Path, cwd: Path | None = None, env_extra=None) -> Proc:
        self._n += 1
        log = self.logs / f"{self._n:03d}.log"
        proc = run_process(cmd, env=self.env(home, env_extra), cwd=cwd or REPO_ROOT, timeout=self.s.timeout, log=log)
        if (proc.rc != 0 or self.verbose) and proc.output.strip():
            tail = "\n    ".join(proc.output.strip().splitlines()[-15:])
            self.say(f"  rc={proc.rc}{' (timed out)' if proc.timed_out else ''}: {' '.join(cmd[:4])} ...\n    {tail}")
        return proc

    def measure(
        self,
        scenario: str,
        tool: str,
        cmds: list[list[str]],
        *,
        home: Path,
        expect_bytes: int,
        check_dir: Path,
        cwd: Path | None = None,
        env_extra=None,
        keep: bool = False,
    ) -> Run:
        """Run `cmds` one after the other (one timed unit) against fresh counters; verify the payload."""
        self.hub.reset_counters()
        seconds, peak, ok, notes, output = 0.0, 0, True, [], ""
        for cmd in cmds:
            proc = self.execute(cmd, home=home, cwd=cwd, env_extra=env_extra)
            seconds += proc.seconds
            peak = max(peak, proc.peak_rss)
            output = proc.output
            if proc.rc != 0:
                ok = False
                notes.append("TIMEOUT" if proc.timed_out else f"exit {proc.rc}")
                break
        stats = self.hub.stats()
        got = payload_bytes(check_dir)
        if ok and expect_bytes and got < expect_bytes:
            ok = False
            notes.append(f"only {got} of {expect_bytes} bytes on disk")
        if stats["server_errors"]:
            notes.append(f"{stats['server_errors']} hub errors")
        run = Run(
            scenario,
            tool,
            seconds,
            ok,
            peak,
            expect_bytes,
            sum(stats["requests"].values()),
            stats["requests"],
            "; ".join(notes),
            os.getloadavg()[0],
            stats["peak_concurrency"],
            output,
        )
        self.runs.append(run)
        self.say(
            f"  {tool:<34} {seconds:8.2f} s  rss {peak / MB:6.0f} MB  {run.requests:5d} requests"
            f"  {run.concurrency:3d} at once  load {run.load:4.1f}{'' if ok else '  FAILED ' + run.note}"
        )
        if not keep:
            self.clear(home)
        return run

    def summarize(
        self, scenario: str, runs: list[Run], tool: str, *, nbytes: int, ours: str | None, notes: str = ""
    ) -> Row:
        mine = [r for r in runs if r.tool == tool]
        ok = all(r.ok for r in mine)
        secs = _median([r.seconds for r in mine]) if mine else None
        ratio = None
        if ours is not None:
            base = [r.seconds for r in runs if r.tool == ours]
            if base and secs:
                ratio = secs / _median(base)
        mbps = nbytes / MB / secs if (secs and nbytes) else None
        extra = [f"rss {max(r.peak_rss for r in mine) / MB:.0f} MB", f"{mine[-1].requests} req"] if mine else []
        if mine and max(r.load for r in mine) > (os.cpu_count() or 1):
            extra.append(f"busy machine: load up to {max(r.load for r in mine):.1f}")
        failed = [r.note for r in mine if not r.ok]
        row = Row(scenario, tool, secs, mbps, ratio, ok, ", ".join(x for x in [*extra, notes, *failed] if x), len(mine))
        self.rows.append(row)
        return row

    def target(self, scenario: str, what: str, value: float | None, goal: str, met: bool | None) -> None:
        self.targets.append(Target(scenario, what, value, goal, met))

    # -- data -----------------------------------------------------------------------------------------
    def big_repo(self, size: int) -> BigFile:
        """A `size`-byte file published as bench/big-<MiB>m on both hubs, with its sha256 and the time one
        thread takes to hash it from the page cache (the floor for any client that checks it)."""
        if size not in self._bigs:
            from tests.hub import make_file

            repo_id = f"bench/big-{size // MiB}m"
            path = self.data / repo_id / "model.safetensors"
            self.say(f"generating a {size / MiB:.0f} MiB file and publishing it as {repo_id} ...")
            make_file(path, size, seed=1)
            os.sync()
            sha, hash_seconds = hash_timed(path)
            for source in (HF, MS):
                self.hub.add_repo(source, repo_id, {"model.safetensors": path})
            self._bigs[size] = BigFile(repo_id, path, size, sha, hash_seconds)
        return self._bigs[size]

    # -- scenario 1 / 2 / 5: one big file ---------------------------------------------------------------
    def _big_tools(
        self, big: BigFile, capped: bool
    ) -> list[tuple[str, Callable[[Path], list[list[str]]], dict[str, str]]]:
        url = f"{self.hub.url}/{big.repo_id}/resolve/main/model.safetensors"

        def curl(d: Path, fsync: bool = False, check: bool = False) -> list[list[str]]:
            out = d / "model.safetensors"
            cmd = ["curl", "-sS", "-f", "-L", "--max-time", str(int(self.s.timeout)), "-o", str(out), url]
            if check:  # hashed while it arrives, as `curl | tee | sha256sum` does; fails on a mismatch
                fetch = f'curl -sSfL --max-time {int(self.s.timeout)} "$1" | tee "$2" | {SHA256_CMD} | cut -d" " -f1'
                pipe = f'[ "$({fetch})" = "$3" ]'
                sync = ' && sync "$2"' if fsync else ""
                return [["bash", "-c", f"set -o pipefail; {pipe}{sync}", "bash", url, str(out), big.sha256]]
            return [["sh", "-c", f'"$@" && sync "{out}"', "sh", *cmd]] if fsync else [cmd]

        tools = [
            ("ours", lambda d: [self.ours([f"hf:{big.repo_id}"], d / "cache")], {}),
            ("ours (ms protocol)", lambda d: [self.ours([f"ms:{big.repo_id}"], d / "cache")], {}),
        ]
        if not capped:
            # Informational: the same engine with its periodic resume records made rare (a setting).
            tools.append(
                (RARE_SYNC, lambda d: [self.ours([f"hf:{big.repo_id}"], d / "cache")], {"RPMM_RECORD_INTERVAL": "600"})
            )
            tools += [
                ("curl", curl, {}),
                ("curl + fsync", lambda d: curl(d, fsync=True), {}),
                (CURL_CHECKED, lambda d: curl(d, check=True), {}),
                (CURL_SAME, lambda d: curl(d, fsync=True, check=True), {}),
            ]
        tools += [
            (
                "hf download",
                lambda d: [[str(BIN / "hf"), "download", big.repo_id, "--cache-dir", str(d / "cache"), "-q"]],
                {},
            ),
            (
                "modelscope download",
                lambda d: [[str(BIN / "modelscope"), "download", big.repo_id, "--cache-dir", str(d / "cache")]],
                {},
            ),
        ]
        return tools

    def prime_disk(self) -> None:
        """Write and delete 2x the big file once: on this kind of VM the first writes to never-used blocks are
        several times slower, which would penalise whichever tool happens to run first (and only a tool that
        fsyncs, like ours, waits for it inside its timed run)."""
        if self._primed:
            return
        size = 2 * self.s.big_size
        self.say(f"priming the disk: writing and deleting {size / MiB:.0f} MiB ...")
        path, block = self.work / "prime.bin", b"\0" * (8 * MiB)
        t0 = time.perf_counter()
        with open(path, "wb") as f:
            for _ in range(size // len(block)):
                f.write(block)
            os.fsync(f.fileno())
        path.unlink()
        os.sync()
        self._primed = True
        self.say(f"  primed in {time.perf_counter() - t0:.1f} s")

    def _big(self, scenario: str, big: BigFile, capped: bool) -> list[Run]:
        self.hub.faults(0.0, self.s.cap if capped else None)
        tools = self._big_tools(big, capped)
        if not capped:  # warm the page cache with the hub's source file
            self.prime_disk()
            warm = self.fresh_dir("warmup")
            url = f"{self.hub.url}/{big.repo_id}/resolve/main/model.safetensors"
            self.execute(["curl", "-sS", "-f", "-L", "-o", "/dev/null", url], home=warm)
            self.clear(warm)
        repeat = 1 if capped else self.s.repeat
        runs = []
        for i in range(repeat):
            if repeat > 1:
                self.say(f" round {i + 1}/{repeat}")
            for name, build, env_extra in tools[i % len(tools) :] + tools[: i % len(tools)]:  # rotate the order
                d = self.fresh_dir(name)
                runs.append(
                    self.measure(
                        scenario,
                        name,
                        build(d),
                        home=d,
                        expect_bytes=big.size,
                        check_dir=d,
                        cwd=d,
                        env_extra=env_extra,
                    )
                )
        self.hub.faults(0.0, None)
        return runs

    def scenario1(self) -> None:
        pairs = {
            "curl": "ours",
            "curl + fsync": "ours",
            CURL_CHECKED: "ours",
            CURL_SAME: "ours",
            "hf download": "ours",
            "modelscope download": "ours (ms protocol)",
        }
        for size in sorted(self.s.big_sizes):
            big = self.big_repo(size)
            sc = f"1 plain {size // MiB}M"
            self.say(f"scenario 1: one {size / MiB:.0f} MiB file, plain loopback")
            runs = self._big(sc, big, capped=False)
            if size == self.s.big_size:
                self._s1_runs = runs
            for tool in ("ours", "ours (ms protocol)", RARE_SYNC, *pairs):
                self.summarize(sc, runs, tool, nbytes=size, ours=pairs.get(tool))
            self.rows.append(
                Row(sc, "floor: sha256 in one thread (info)", big.hash_seconds, size / MB / big.hash_seconds, None)
            )
            t = {r.tool: r for r in self.rows if r.scenario == sc}
            label = f"{size // MiB} MiB"
            ratio = t["curl"].ratio
            met = None if ratio is None else ratio >= 0.9
            self.target("1", f"{label}: curl time / ours time (wall, start-up included)", ratio, ">= 0.9", met)
            ratio = t[CURL_SAME].ratio
            self.target("1", f"{label}: ({CURL_SAME}) time / ours time (info)", ratio, "-", None)
            ours = t["ours"].seconds
            self.target("1", f"{label}: sha256 floor / ours time (info)", ours and big.hash_seconds / ours, "-", None)
            ratio = t["hf download"].ratio
            self.target(
                "1", f"{label}: hf download time / ours time", ratio, ">= 1.0", None if ratio is None else ratio >= 1.0
            )
            ratio = t["modelscope download"].ratio
            self.target("1", f"{label}: modelscope download time / ours (ms) time (info)", ratio, ">= 1.0", None)

    def scenario2(self) -> None:
        big = self.big_repo(self.s.big_size)
        self.say(
            f"scenario 2: the {big.size / MiB:.0f} MiB file, {self.s.cap / MB:.0f} MB/s per connection "
            f"(peers take ~{big.size / self.s.cap:.0f} s each)"
        )
        runs = self._big("2 capped", big, capped=True)
        self._s2_runs = runs
        pairs = {"hf download": "ours", "modelscope download": "ours (ms protocol)"}
        for tool in ("ours", "ours (ms protocol)", "hf download", "modelscope download"):
            self.summarize("2 capped", runs, tool, nbytes=big.size, ours=pairs.get(tool))
        t = {r.tool: r for r in self.rows if r.scenario == "2 capped"}
        for peer in ("hf download", "modelscope download"):
            ratio = t[peer].ratio
            self.target("2", f"{peer} time / ours time", ratio, ">= 3.0", None if ratio is None else ratio >= 3.0)

    def scenario5(self) -> None:
        self.say("scenario 5: peak RSS while downloading the big file (from scenario 1/2 runs)")
        if not self._s1_runs:
            self._s1_runs = self._big("5 rss", self.big_repo(self.s.big_size), capped=False)
        for label, runs in (("5 rss plain", self._s1_runs), ("5 rss capped", self._s2_runs)):
            for tool in dict.fromkeys(r.tool for r in runs):
                peak = max(r.peak_rss for r in runs if r.tool == tool)
                self.rows.append(
                    Row(
                        label,
                        tool,
                        None,
                        None,
                        None,
                        True,
                        f"peak rss {peak / MB:.0f} MB",
                        sum(r.tool == tool for r in runs),
                    )
                )
        ours = max((r.peak_rss for r in self._s1_runs + self._s2_runs if r.tool.startswith("ours")), default=None)
        self.target(
            "5",
            f"ours peak RSS for {self.s.big_size // MiB} MiB (MB)",
            None if ours is None else ours / MB,
            "< 200",
            None if ours is None else ours < 200 * MB,
        )

    # -- scenario 3: a project of many small/medium files, with latency ----------------------------------
    def scenario3(self) -> None:
        s = self.s
        per_model = s.small_files * s.small_size + s.medium_files * s.medium_size
        total = s.project_models * per_model
        self.say(
            f"scenario 3: {s.project_models} models x {s.small_files + s.medium_files} files "
            f"({s.small_files} x {s.small_size // 1000} KB + {s.medium_files} x {s.medium_size // MB} MB), "
            f"{s.latency * 1000:.0f} ms latency per request; total {_mb(total)}"
        )
        from tests.hub import make_file

        ids = []
        for m in range(s.project_models):
            repo_id = f"bench/proj-{m}"
            base = self.data / "bench" / f"proj-{m}"
            files = {}
            for j in range(s.small_files):
                files[f"tokenizer_{j:02d}.json"] = make_file(
                    base / f"tokenizer_{j:02d}.json", s.small_size, seed=m * 1000 + j
                )
            for j in range(s.medium_files):
                name = f"model-{j + 1:05d}-of-{s.medium_files:05d}.safetensors"
                files[name] = make_file(base / name, s.medium_size, seed=m * 1000 + 500 + j)
            for source in (HF, MS):
                self.hub.add_repo(source, repo_id, files)
            ids.append(repo_id)
        os.sync()
        self.hub.faults(s.latency, None)

        py_loop = (
            "import sys\nfrom huggingface_hub import snapshot_download\n"
            "for r in sys.argv[2:]:\n    snapshot_download(r, cache_dir=sys.argv[1])\n"
        )
        tools = [
            ("ours (8 hf IDs, one run)", lambda d: [self.ours([f"hf:{i}" for i in ids], d / "cache")]),
            ("ours (8 ms IDs, one run)", lambda d: [self.ours([f"ms:{i}" for i in ids], d / "cache")]),
            (
                "hf download, model by model",
                lambda d: [[str(BIN / "hf"), "download", i, "--cache-dir", str(d / "cache"), "-q"] for i in ids],
            ),
            (
                "modelscope download, model by model",
                lambda d: [[str(BIN / "modelscope"), "download", i, "--cache-dir", str(d / "cache")] for i in ids],
            ),
            (
                "hf snapshot_download loop, 1 process",
                lambda d: [[sys.executable, "-c", py_loop, str(d / "cache"), *ids]],
            ),
        ]
        runs = []
        for i in range(s.repeat):
            if s.repeat > 1:
                self.say(f" round {i + 1}/{s.repeat}")
            for name, build in tools[i % len(tools) :] + tools[: i % len(tools)]:  # rotate the order
                d = self.fresh_dir(name)
                runs.append(
                    self.measure(
                        "3 project",
                        name.replace("8 ", f"{s.project_models} "),
                        build(d),
                        home=d,
                        expect_bytes=total,
                        check_dir=d,
                        cwd=d,
                    )
                )
        self.hub.faults(0.0, None)
        names = [n.replace("8 ", f"{s.project_models} ") for n, _ in tools]
        ours_hf, ours_ms, hf_cli, ms_cli, hf_py = names
        pairs = {hf_cli: ours_hf, hf_py: ours_hf, ms_cli: ours_ms}
        for tool in names:
            self.summarize("3 project", runs, tool, nbytes=total, ours=pairs.get(tool))
        t = {r.tool: r for r in self.rows if r.scenario == "3 project"}
        for peer in (hf_cli, ms_cli):
            ratio = t[peer].ratio
            self.target("3", f"{peer} time / ours time", ratio, ">= 3.0", None if ratio is None else ratio >= 3.0)
        ratio = t[hf_py].ratio
        self.target("3", f"{hf_py} time / ours time (info)", ratio, "-", None)
        peak = max(r.peak_rss for r in runs if r.tool in (ours_hf, ours_ms)) / MB
        self.target("3", "ours peak RSS (MB), dozens of 5 MB files at once", peak, "< 200", peak < 200)

    # -- scenario 4: warm re-run and start-up ---------------------------------------------------------------
    def _warm_project(self, ids: list[tuple[str, str]]) -> Path:
        """A project registered through a `runpod_model_manager.projects` entry point of a throw-away dist."""
        plugin = self.root / "plugin"
        dist = plugin / "bench_warm_project-0.0.0.dist-info"
        dist.mkdir(parents=True, exist_ok=True)
        (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: bench-warm-project\nVersion: 0.0.0\n")
        (dist / "entry_points.txt").write_text(
            "[runpod_model_manager.projects]\nbenchwarm = bench_warm_project:BenchWarm\n"
        )
        models = ",\n        ".join(f"{src}({repo!r})" for src, repo in ids)
        (plugin / "bench_warm_project.py").write_text(
            "from projects.base import BaseProject, huggingface, modelscope\n\n\n"
            "class BenchWarm(BaseProject):\n"
            "    name = 'benchwarm'\n"
            "    description = 'download_bench warm re-run project'\n"
            f"    models = (\n        {models},\n    )\n"
        )
        return plugin

    def scenario4(self) -> None:
        s = self.s
        n_hf = s.warm_models // 2
        n_ms = s.warm_models - n_hf
        self.say(f"scenario 4: warm re-run of {s.warm_models} complete tiny models ({n_hf} HF + {n_ms} MS)")
        tiny = self.data / "tiny"
        files = {
            "config.json": b'{"model_type": "bench"}\n',
            "tokenizer.json": b'{"version": "1.0"}\n' * 50,
            "model.safetensors": bytes(range(256)) * 16,
        }
        paths = {}
        for name, content in files.items():
            p = tiny / name
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_bytes(content)
            paths[name] = p
        ids: list[tuple[str, str]] = []
        for i in range(s.warm_models):
            source = HF if i < n_hf else MS
            repo_id = f"bench/tiny-{i:03d}"
            self.hub.add_repo(source, repo_id, paths)
            ids.append(("huggingface" if source == HF else "modelscope", repo_id))
        nbytes = s.warm_models * sum(len(c) for c in files.values())
        plugin = self._warm_project(ids)
        env_extra = {"PYTHONPATH": str(plugin)}
        home = self.fresh_dir("warm")
        cache, lock = home / "cache", home / "models.lock"
        script = str(REPO_ROOT / "download_models.py")
        base = ["--cache-dir", str(cache), "-q"]
        lock_cmd = [sys.executable, script, "lock", "--project", "benchwarm", "--lock-file", str(lock), *base]
        # --project, not --all: other registered projects name real models the local hub does not have.
        proj = ["--project", "benchwarm"]
        all_lock = [sys.executable, script, *proj, "--lock-file", str(lock), *base]
        all_nolock = [sys.executable, script, *proj, "--lock-file", str(home / "absent.lock"), *base]
        one_off = [
            sys.executable,
            script,
            *[f"{'hf' if src == 'huggingface' else 'ms'}:{r}" for src, r in ids],
            "--lock-file",
            str(home / "absent.lock"),
            *base,
        ]
        sc = "4a warm"
        ours = functools.partial(self.measure, sc, home=home, env_extra=env_extra, keep=True)
        runs = [
            ours("ours: lock (resolve all)", [lock_cmd], expect_bytes=0, check_dir=home),
            ours("ours: --project, cold (with lock)", [all_lock], expect_bytes=nbytes, check_dir=cache),
        ]
        warm = {
            "ours: --project, warm, models.lock": all_lock,
            "ours: --project, warm, no lock": all_nolock,
            "ours: one-off IDs, warm, no lock": one_off,
        }
        for _ in range(s.repeat):
            runs += [ours(label, [cmd], expect_bytes=nbytes, check_dir=cache) for label, cmd in warm.items()]
        # Peers, for context: cold then warm, model by model.
        peer_home = self.fresh_dir("warm-peers")
        peer_cmds = [
            [str(BIN / "hf"), "download", r, "--cache-dir", str(peer_home / "hf"), "-q"]
            if src == "huggingface"
            else [str(BIN / "modelscope"), "download", r, "--cache-dir", str(peer_home / "ms")]
            for src, r in ids
        ]
        self.measure(
            sc,
            "peers: cold, model by model",
            peer_cmds,
            home=peer_home,
            expect_bytes=nbytes,
            check_dir=peer_home,
            keep=True,
        )
        runs.append(
            self.measure(
                sc,
                "peers: warm, model by model",
                peer_cmds,
                home=peer_home,
                expect_bytes=nbytes,
                check_dir=peer_home,
                keep=True,
            )
        )
        self.clear(peer_home)

        for tool in ("ours: lock (resolve all)", "ours: --project, cold (with lock)"):
            self.summarize(sc, runs, tool, nbytes=0, ours=None)
        warm_lock = "ours: --project, warm, models.lock"
        for tool in (warm_lock, "ours: --project, warm, no lock", "ours: one-off IDs, warm, no lock"):
            mine = [r for r in runs if r.tool == tool]
            routes = Counter()
            for r in mine[-1:]:
                routes.update(r.routes)
            row = self.summarize(sc, runs, tool, nbytes=0, ours=None)
            row.notes += f", {mine[-1].requests / s.warm_models:.2f} req/model" + (
                f" [{', '.join(f'{k}: {v}' for k, v in sorted(routes.items()))}]" if routes else ""
            )
        self.summarize(sc, runs, "peers: warm, model by model", nbytes=0, ours=warm_lock)
        t = {r.tool: r for r in self.rows if r.scenario == sc}
        req_lock = [r.requests for r in runs if r.tool == warm_lock][-1]
        self.target("4a", "warm re-run with models.lock: HTTP requests", req_lock, "== 0", req_lock == 0)
        routes = [r.routes for r in runs if r.tool == "ours: --project, warm, no lock"][-1]
        for label, prefix, count in (("Hugging Face", " hf.", n_hf), ("ModelScope", " ms.", n_ms)):
            per_model = sum(v for k, v in routes.items() if prefix in k) / max(1, count)
            self.target("4a", f"warm re-run, no lock: requests per {label} model", per_model, "<= ~1", per_model <= 1.0)
        secs = t[warm_lock].seconds
        what = f"warm --project ({s.warm_models} models) with models.lock: seconds"
        self.target("4a", what, secs, "< 0.3", secs < 0.3)

        # 4b: start-up time and imports.
        sc = "4b startup"
        self.say("scenario 4b: start-up of --help and list")
        probes = [
            ("ours --help", [sys.executable, script, "--help"], {}),
            (
                "ours list (repo projects)",
                [sys.executable, script, "list", "--cache-dir", str(cache), "--lock-file", str(home / "absent.lock")],
                {},
            ),
            (
                f"ours list ({s.warm_models} models, lock)",
                [sys.executable, script, "list", "--cache-dir", str(cache), "--lock-file", str(lock)],
                env_extra,
            ),
            ("hf --help (peer, info)", [str(BIN / "hf"), "--help"], {}),
            ("modelscope --help (peer, info)", [str(BIN / "modelscope"), "--help"], {}),
        ]
        self.extra["imports"] = {}
        for name, cmd, extra in probes:
            times = []
            self.execute(cmd, home=home, env_extra=extra)  # warm-up (bytecode, page cache), not counted
            for _ in range(s.startup_runs):
                proc = self.execute(cmd, home=home, env_extra=extra)
                if proc.rc != 0:
                    break
                times.append(proc.seconds)
            ok = len(times) == s.startup_runs
            notes = f"min {min(times):.3f} s" if times else "failed"
            if name.startswith("ours"):
                heavy, top = import_check(
                    cmd, self.env(home, extra), self.logs / f"importtime-{len(self.extra['imports'])}.log"
                )
                self.extra["imports"][name] = {"hub_libraries": heavy, "slowest": top}
                notes += f", imports hub libs: {'YES ' + ','.join(heavy) if heavy else 'no'}"
                notes += f", slowest: {', '.join(f'{m} {ms:.0f}ms' for m, ms in top[:3])}"
                med = _median(times) if times else None
                limit = 0.15 if name == "ours --help" else 0.3
                self.target("4b", f"{name}: median seconds", med, f"< {limit}", None if med is None else med < limit)
                self.target("4b", f"{name}: imports huggingface_hub/modelscope", float(bool(heavy)), "no", not heavy)
            self.rows.append(Row(sc, name, _median(times) if times else None, None, None, ok, notes, len(times)))
            for x in times:
                self.runs.append(Run(sc, name, x, True))
        self.clear(home)

    # -- scenario 6: many small files in one repository, with latency -------------------------------------
    def _files_repo(self, repo_id: str, count: int, size: int, sources=(HF,)) -> int:
        """Publish `count` files of `size` bytes (not LFS: one request each) in 10 folders; total bytes."""
        base = self.data / repo_id
        files = {}
        for j in range(count):
            name = f"part-{j // max(1, count // 10):02d}/file_{j:05d}.json"
            path = base / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(hashlib.sha256(f"{repo_id} {j}".encode()).hexdigest().encode() * (size // 64 + 1))
            os.truncate(path, size)
            files[name] = path
        for source in sources:
            self.hub.add_repo(source, repo_id, files)
        return count * size

    def scenario6(self) -> None:
        s = self.s
        latency, repo = s.many_small_latency, "bench/small"
        self.say(
            f"scenario 6: {s.many_small} files of {s.many_small_size // 1000} KB in one repository, "
            f"{latency * 1000:.0f} ms latency per request"
        )
        total = self._files_repo(repo, s.many_small, s.many_small_size, (HF, MS))
        sc = "6 small"
        tools = [
            ("ours", lambda d: [self.ours([f"hf:{repo}"], d / "cache")]),
            ("ours (ms protocol)", lambda d: [self.ours([f"ms:{repo}"], d / "cache")]),
            ("hf download", lambda d: [[str(BIN / "hf"), "download", repo, "--cache-dir", str(d / "cache"), "-q"]]),
            (
                "modelscope download",
                lambda d: [[str(BIN / "modelscope"), "download", repo, "--cache-dir", str(d / "cache")]],
            ),
        ]
        self.hub.faults(latency, None)
        runs = []
        for i in range(s.repeat):
            if s.repeat > 1:
                self.say(f" round {i + 1}/{s.repeat}")
            for name, build in tools[i % len(tools) :] + tools[: i % len(tools)]:  # rotate the order
                d = self.fresh_dir(name)
                runs.append(self.measure(sc, name, build(d), home=d, expect_bytes=total, check_dir=d, cwd=d))
        # where the time per file goes: ours once more with -v (prints its breakdown), not counted
        d = self.fresh_dir("ours -v")
        verbose = self.measure(
            "6 info", "ours -v", [self.ours([f"hf:{repo}"], d / "cache", "-v")], home=d, expect_bytes=total, check_dir=d
        )
        self.extra["per_file_breakdown"] = [ln for ln in verbose.output.splitlines() if ln.startswith("per file")]
        for line in self.extra["per_file_breakdown"]:
            self.say(f"  ours -v: {line}")
        # with no latency: the same download (what is left is CPU per file), then the fixed cost of a run
        # (start-up, the metadata request, checking the files on disk): a warm re-run
        self.hub.faults(0.0, None)

        def ours_once(name: str, d: Path, keep: bool) -> Run:
            ours = [self.ours([f"hf:{repo}"], d / "cache")]
            return self.measure(sc, name, ours, home=d, expect_bytes=total, check_dir=d, keep=keep)

        cold = []
        for i in range(s.repeat):
            d = self.fresh_dir("ours no latency")
            cold.append(ours_once("ours, no latency", d, keep=i == s.repeat - 1))
        warm = [ours_once("ours, warm, no latency (fixed cost)", d, keep=True) for _ in range(s.repeat)]
        self.clear(d)
        fixed = _median([r.seconds for r in warm])
        metadata = warm[-1].requests
        limits = []
        for r in (r for r in runs if r.tool == "ours"):
            rounds = -(-(r.requests - metadata) // max(1, r.concurrency))
            limits.append((fixed + latency * (metadata + rounds), r.seconds, r.concurrency))
        pairs = {"hf download": "ours", "modelscope download": "ours (ms protocol)"}
        for tool in ("ours", "ours (ms protocol)", "hf download", "modelscope download"):
            row = self.summarize(sc, runs, tool, nbytes=total, ours=pairs.get(tool))
            if tool == "ours":
                row.notes += f", up to {max(c for *_, c in limits)} requests at once"
        self.summarize(sc, warm, "ours, warm, no latency (fixed cost)", nbytes=0, ours=None)
        self.summarize(sc, cold, "ours, no latency", nbytes=total, ours=None)
        limit = _median([lim for lim, *_ in limits])
        at_once = int(_median([c for *_, c in limits]))
        how = f"{fixed:.3f} s + ({metadata} + ceil({s.many_small} / {at_once} at once)) x {latency * 1000:.0f} ms"
        self.rows.append(Row(sc, "latency limit", limit, None, None, True, how))
        t = {r.tool: r for r in self.rows if r.scenario == sc}
        ratio = t["hf download"].ratio
        self.target("6", "hf download time / ours time", ratio, ">= 3.0", None if ratio is None else ratio >= 3.0)
        ratio = _median([secs / lim for lim, secs, _ in limits])
        self.target("6", f"ours time / latency limit ({at_once} requests at once)", ratio, "<= 1.5", ratio <= 1.5)
        at_16 = fixed + latency * (metadata + -(-s.many_small // 16))
        ratio = t["ours"].seconds / at_16
        self.target("6", "ours time / latency limit at 16 at once (the issue's example, info)", ratio, "-", None)
        ratio = t["ours"].seconds / t["ours, no latency"].seconds
        self.target("6", "ours time / ours time with no latency (info; 1: CPU-bound)", ratio, "-", None)
        ratio = t["modelscope download"].ratio
        self.target("6", "modelscope download time / ours (ms) time (info)", ratio, "-", None)

    # -- scenario 7: memory with 10,000 files -------------------------------------------------------------
    def scenario7(self) -> None:
        s = self.s
        repo = "bench/many"
        self.say(f"scenario 7: {s.huge_count} files of {s.huge_size} B in one repository (peak memory)")
        total = self._files_repo(repo, s.huge_count, s.huge_size)
        sc = "7 many files"
        runs = []
        for name, build in (
            ("ours", lambda d: [self.ours([f"hf:{repo}"], d / "cache")]),
            ("hf download (info)", lambda d: [[str(BIN / "hf"), "download", repo, "--cache-dir", str(d / "cache")]]),
        ):
            d = self.fresh_dir(name)
            runs.append(self.measure(sc, name, build(d), home=d, expect_bytes=total, check_dir=d, cwd=d))
        row = self.summarize(sc, runs, "ours", nbytes=total, ours=None)
        row.notes += f", {1000 * row.seconds / s.huge_count:.2f} ms per file" if row.seconds else ""
        self.summarize(sc, runs, "hf download (info)", nbytes=total, ours="ours")
        peak = max(r.peak_rss for r in runs if r.tool == "ours")
        self.target("7", f"ours peak RSS for {s.huge_count} files (MB)", peak / MB, "< 200", peak < 200 * MB)


# ------------------------------------------------------------------------------------------------
def payload_bytes(d: Path) -> int:
    """Bytes of regular files under `d` outside hidden folders (our state, hf .locks, ms temp)."""
    total = 0
    for dirpath, dirnames, filenames in os.walk(d):
        dirnames[:] = [n for n in dirnames if not n.startswith(".")]
        for name in filenames:
            p = os.path.join(dirpath, name)
            if name.startswith(".") or name.endswith((".lock", ".log")) or os.path.islink(p):
                continue
            with contextlib.suppress(OSError):
                total += os.stat(p).st_size
    return total


def import_check(cmd: list[str], env: dict[str, str], log: Path) -> tuple[list[str], list[tuple[str, float]]]:
    """(hub libraries imported, slowest top-level imports in ms) from `python -X importtime`."""
    proc = subprocess.run(
        [cmd[0], "-X", "importtime", *cmd[1:]], env=env, cwd=REPO_ROOT, capture_output=True, text=True, timeout=120
    )
    log.write_text(proc.stderr)
    heavy, top = set(), []
    for line in proc.stderr.splitlines():
        if not line.startswith("import time:") or "|" not in line:
            continue
        parts = line[len("import time:") :].split("|")
        if len(parts) != 3 or not parts[1].strip().isdigit():
            continue
        name = parts[2].rstrip()
        root = name.strip().split(".")[0]
        if root in ("huggingface_hub", "modelscope", "modelscope_hub"):
            heavy.add(root)
        if not name.startswith("  "):  # top level
            top.append((name.strip(), int(parts[1]) / 1000))
    top.sort(key=lambda x: -x[1])
    return sorted(heavy), top[:5]


def versions() -> dict[str, str]:
    out = {"python": platform.python_version(), "cpus": str(os.cpu_count()), "platform": platform.platform()}
    for mod in ("huggingface_hub", "modelscope", "modelscope_hub", "requests", "urllib3"):
        try:
            from importlib.metadata import version

            out[mod] = version(mod.replace("_", "-") if mod == "modelscope_hub" else mod)
        except Exception:
            out[mod] = "?"
    for name in ("runpod_model_manager/transfer.py", "runpod_model_manager/manager.py"):
        with contextlib.suppress(OSError):
            out[name] = hashlib.sha256((REPO_ROOT / name).read_bytes()).hexdigest()[:16]
    try:
        git = ["git", "-C", str(REPO_ROOT)]
        out["git_head"] = subprocess.run([*git, "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
        out["git_dirty"] = subprocess.run(
            [*git, "status", "--short"], capture_output=True, text=True
        ).stdout.splitlines()
    except OSError:
        pass
    try:
        out["curl"] = subprocess.run(["curl", "--version"], capture_output=True, text=True).stdout.split("\n")[0]
    except OSError:
        out["curl"] = "missing"
    return out


def render(rows: list[Row], targets: list[Target]) -> str:
    def f(v, spec):
        return format(v, spec) if v is not None else format("-", ">" + spec.split(".")[0])

    head = f"{'scenario':<13} {'tool':<38} {'seconds':>8} {'MB/s':>8} {'ratio':>6}  notes"
    lines = [head, "-" * len(head)]
    last = None
    for r in rows:
        if last is not None and r.scenario.split()[0] != last:
            lines.append("")
        last = r.scenario.split()[0]
        status = "" if r.ok else "FAILED "
        runs = f" (median of {r.runs})" if r.runs > 1 and r.seconds is not None else ""
        lines.append(
            f"{r.scenario:<13} {r.tool:<38} {f(r.seconds, '8.3f')} {f(r.mbps, '8.1f')} "
            f"{f(r.ratio, '6.2f')}  {status}{r.notes}{runs}"
        )
    lines += ["", "ratio = peer seconds / ours seconds on the same protocol (> 1: ours is faster).", "", "targets:"]
    for t in targets:
        verdict = {True: "MET", False: "MISSED", None: "info"}[t.met]
        value = "-" if t.value is None else f"{t.value:.3f}"
        lines.append(f"  [{verdict:>6}] S{t.scenario:<3} {t.what}: {value} (target {t.goal})")
    return "\n".join(lines)


def compile_ours() -> None:
    """Write the bytecode of ours, as `pip install` does for every package: where PYTHONDONTWRITEBYTECODE is
    set, ours (run from this checkout) would otherwise compile its sources at every start, ~20 ms that no
    installed tool pays. The __pycache__ folders it writes are ignored by git."""
    for package in ("cli", "downloaders", "projects", "runpod_model_manager"):
        compileall.compile_dir(REPO_ROOT / package, quiet=1)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="small sizes (256 MiB file, fewer models and files)")
    parser.add_argument("--scenario", type=int, nargs="+", choices=SCENARIOS, help="only these (default all)")
    parser.add_argument("--json", type=Path, help="also write the results as JSON here")
    parser.add_argument("--repeat", type=int, help="runs per tool in scenarios 1, 3, 4, 6 (default 3; 1 with --quick)")
    parser.add_argument(
        "--size-mib", type=int, nargs="+", help="sizes of the big files (default 512 2048; 256 with --quick)"
    )
    parser.add_argument("--cap-mbps", type=float, help="scenario 2 cap, MB/s per connection (default 20)")
    parser.add_argument("--timeout", type=float, help="seconds allowed to each client process")
    parser.add_argument("--tmp-dir", type=Path, help="where to create the temporary directory (default $TMPDIR)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory (logs, repos)")
    parser.add_argument("-v", "--verbose", action="store_true", help="print every client's output tail")
    args = parser.parse_args(argv)

    s = Settings.quick() if args.quick else Settings()
    if args.repeat:
        s.repeat = max(1, args.repeat)
    if args.size_mib:
        s.big_sizes = tuple(n * MiB for n in args.size_mib)
    if args.cap_mbps:
        s.cap = int(args.cap_mbps * MB)
    if args.timeout:
        s.timeout = args.timeout
    scenarios = sorted(set(args.scenario or SCENARIOS), key=lambda n: (n == 5, n))  # 5 reuses 1 and 2
    if shutil.which("curl") is None and (1 in scenarios or 5 in scenarios):
        parser.error("curl is needed (apt-get install curl)")

    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    root = Path(tempfile.mkdtemp(prefix="download-bench-", dir=args.tmp_dir))
    print(
        f"download benchmark: scenarios {scenarios}, {'quick' if args.quick else 'full'}; temp dir {root}; "
        f"load average {_load()}",
        flush=True,
    )
    bench = None
    started = time.time()
    try:
        bench = Bench(s, root, args.verbose)
        bench.say(f"hub process {bench.hub.pid} at {bench.hub.url} (cdn {bench.hub.cdn_url})")
        compile_ours()
        for n in scenarios:
            getattr(bench, f"scenario{n}")()
        table = render(bench.rows, bench.targets)
        print("\n" + table, flush=True)
        print(f"\nload average at the end: {_load()} ({os.cpu_count()} CPUs)", flush=True)
        if args.json:
            args.json.parent.mkdir(parents=True, exist_ok=True)
            args.json.write_text(
                json.dumps(
                    {
                        "mode": "quick" if args.quick else "full",
                        "scenarios": scenarios,
                        "settings": asdict(s),
                        "environment": versions(),
                        "wall_seconds": time.time() - started,
                        "rows": [asdict(r) for r in bench.rows],
                        "targets": [asdict(t) for t in bench.targets],
                        "runs": [asdict(r) for r in bench.runs],
                        "extra": bench.extra,
                    },
                    indent=2,
                )
            )
            print(f"results written to {args.json}")
        failed = [r for r in bench.rows if not r.ok]
        return 1 if failed else 0
    finally:
        _kill_current()
        if bench is not None:
            bench.close()
        if args.keep:
            print(f"kept {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python
"""Push benchmark: `download_models.py push` vs boto3's own upload (what `aws s3 cp` does), through a proxy
that behaves like RunPod's S3 API in front of a real S3 server (moto), all on 127.0.0.1.

    python bench/push_bench.py                  # 1 GiB file, 300 small files, bytes re-sent after a kill
    python bench/push_bench.py --quick          # 256 MiB file, 100 small files
    python bench/push_bench.py --json out.json

Scenarios (see bench/README.md):
  1. one large file: ours (defaults: 16 MiB parts, 8 at once) vs boto3 `upload_file` with its defaults
     (8 MiB parts, 10 threads, CRC32 checksums);
  2. many small files as one model: ours vs one boto3 TransferManager with its defaults uploading all of them
     (10 at once: `aws s3 cp --recursive`);
  1 and 2 are then run again into the same bucket ("again"): ours skips what is there;
  3. a client killed (SIGKILL) after half of the large file's parts, then run again: the bytes the second run
     sends. boto3 has no resume: its second run sends the whole file again.

Every client is a separate process timed from spawn to exit (os.wait4), with its peak RSS and CPU time. The
S3 server, the proxy and the LocalHub (the models' source) run in one child process of their own, driven
through a pipe: both clients pay for the same server, and its memory does not count in the clients' peak RSS
(a child's ru_maxrss starts from its parent's at fork). Each run writes to a fresh bucket.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from tests.hub import make_file  # noqa: E402 (after the path is set)
from tests.hub.client_env import CLEARED_VARS, client_env  # noqa: E402
from tests.s3 import Limits, S3Server  # noqa: E402

MiB = 1 << 20
MB = 1_000_000
BIG_ID, SMALL_ID = "bench/big-model", "bench/many-files"

# boto3 as `aws s3 cp` uses it: default client, default TransferConfig, one manager for every file
PEER = r"""
import os, sys, boto3
from boto3.s3.transfer import TransferConfig, create_transfer_manager
endpoint, bucket, prefix, *paths = sys.argv[1:]
client = boto3.client("s3", endpoint_url=endpoint)
if len(paths) == 1:
    client.upload_file(paths[0], bucket, prefix + "/" + os.path.basename(paths[0]))
else:
    with create_transfer_manager(client, TransferConfig()) as manager:
        futures = [manager.upload(p, bucket, prefix + "/" + os.path.basename(p)) for p in paths]
        for f in futures:
            f.result()
"""


@dataclass
class Run:
    scenario: str
    tool: str
    seconds: float
    cpu_seconds: float  # the client's user + system time
    body_bytes: int  # request body bytes the proxy received
    requests: int
    peak_rss_mb: float
    exit_code: int
    load: float  # 1-minute load average when the run ended


class _Servers:
    """What runs in the server process: the LocalHub and moto behind the RunPod proxy."""

    def __init__(self):
        from tests.hub import LocalHub

        self.hub = LocalHub().start()
        self.s3 = S3Server().start()

    def urls(self) -> tuple[str, str]:
        return self.hub.url, self.s3.url

    def add_repo(self, repo_id: str, files: dict) -> str:
        return self.hub.add_repo("huggingface", repo_id, {k: Path(v) for k, v in files.items()})

    def new_bucket(self) -> str:
        return self.s3.new_bucket()

    def reset(self, limits: dict | None) -> None:
        self.s3.proxy.reset(Limits(**limits) if limits else None)

    def held(self) -> int:
        return self.s3.proxy.held

    def release(self) -> None:
        self.s3.proxy.release()

    def counters(self) -> tuple[int, int]:
        """(request body bytes of PutObject and UploadPart, requests)."""
        return self.s3.proxy.body_bytes("PutObject", "UploadPart"), len(self.s3.proxy.calls)

    def empty(self, bucket: str) -> None:
        """Give moto's memory back: the bench writes several copies of the large file."""
        client = self.s3.client()
        for key in self.s3.keys(bucket):
            client.delete_object(Bucket=bucket, Key=key)
        for upload in self.s3.uploads(bucket):
            client.abort_multipart_upload(Bucket=bucket, Key=upload["Key"], UploadId=upload["UploadId"])

    def stop(self) -> None:
        self.s3.stop()
        self.hub.stop()


def _serve(conn) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent stops us
    servers = _Servers()
    try:
        while True:
            try:
                name, args = conn.recv()
            except (EOFError, OSError):
                break
            try:
                conn.send(("ok", getattr(servers, name)(*args)))
            except Exception as exc:  # report, keep serving
                conn.send(("error", f"{type(exc).__name__}: {exc}"))
            if name == "stop":
                break
    finally:
        servers.stop()


class ServerProcess:
    """Calls `_Servers` methods in the child process: `servers.new_bucket()`."""

    def __init__(self):
        ctx = mp.get_context("spawn")
        self._conn, child = ctx.Pipe()
        self._proc = ctx.Process(target=_serve, args=(child,), name="push-bench-servers", daemon=True)
        self._proc.start()
        child.close()

    def __getattr__(self, name: str):
        def call(*args, timeout: float = 600.0):
            self._conn.send((name, args))
            if not self._conn.poll(timeout):
                raise TimeoutError(f"the server process did not answer {name} within {timeout:.0f}s")
            status, value = self._conn.recv()
            if status != "ok":
                raise RuntimeError(f"server process: {value}")
            return value

        return call

    def close(self) -> None:
        if self._proc.is_alive():
            self.stop(timeout=30)
        self._proc.join(30)


def timed(cmd: list[str], env: dict[str, str], kill_when=None) -> tuple[float, int, float, float]:
    """(seconds, exit code, peak RSS MB, CPU seconds) of a child process; `kill_when()` true -> SIGKILL it."""
    started = time.monotonic()
    proc = subprocess.Popen(cmd, env=env, cwd=REPO_ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    while kill_when is not None and proc.poll() is None:
        if kill_when():
            proc.send_signal(signal.SIGKILL)
            break
        time.sleep(0.02)
    _, status, usage = os.wait4(proc.pid, 0)
    stderr = proc.stderr.read().decode(errors="replace")
    proc.stderr.close()
    code = os.waitstatus_to_exitcode(status)
    if code not in (0, -signal.SIGKILL):
        print(f"  {cmd[1:3]} failed ({code}):\n{stderr[-2000:]}", file=sys.stderr)
    return time.monotonic() - started, code, usage.ru_maxrss / 1024, usage.ru_utime + usage.ru_stime


class Bench:
    def __init__(self, args):
        self.args = args
        self.tmp = Path(tempfile.mkdtemp(prefix="push-bench-", dir=args.tmp_dir))
        self.servers = ServerProcess()
        self.hub_url, self.s3_url = self.servers.urls()
        self.runs: list[Run] = []
        base = {k: v for k, v in os.environ.items() if k not in CLEARED_VARS and not k.startswith("AWS_")}
        home = self.tmp / "home"
        home.mkdir()
        self.env = S3Server.client_env(base | client_env(self.hub_url, self.tmp / "hubenv"), home)
        self.env["PYTHONPATH"] = str(REPO_ROOT)
        self.cache = self.tmp / "cache"

    def close(self) -> None:
        self.servers.close()
        shutil.rmtree(self.tmp, ignore_errors=True)

    # -- setup ----------------------------------------------------------------------------------------
    def prepare(self) -> None:
        """The models in the local cache (downloaded from the LocalHub once, not timed)."""
        a = self.args
        src = self.tmp / "src"
        self.big_path = make_file(src / "model.safetensors", a.size_mib * MiB, seed=3)
        self.servers.add_repo(BIG_ID, {"model.safetensors": str(self.big_path)})
        small = {
            f"shard-{i:03d}.bin": make_file(src / f"shard-{i:03d}.bin", a.small_size, seed=i)
            for i in range(a.small_files)
        }
        self.servers.add_repo(SMALL_ID, {name: str(path) for name, path in small.items()})
        self.small_paths = sorted(small.values())
        cmd = [sys.executable, "download_models.py", BIG_ID, SMALL_ID, "--cache-dir", str(self.cache), "-q"]
        code = timed(cmd, self.env)[1]
        assert code == 0, "download of the bench models failed"

    # -- clients --------------------------------------------------------------------------------------
    def ours(self, model: str, bucket: str) -> list[str]:
        to = ["--to", f"s3://{bucket}", "--endpoint-url", self.s3_url]
        local = ["--cache-dir", str(self.cache), "--lock-file", str(self.tmp / "no.lock"), "-q"]
        return [sys.executable, "download_models.py", "push", model, *to, *local]

    def peer(self, bucket: str, paths: list[Path]) -> list[str]:
        return [sys.executable, "-c", PEER, self.s3_url, bucket, "peer", *map(str, paths)]

    def measure(self, scenario: str, tool: str, cmd: list[str], limits: Limits | None = None, kill_when=None) -> Run:
        self.servers.reset(asdict(limits) if limits else None)
        seconds, code, rss, cpu = timed(cmd, self.env, kill_when)
        body_bytes, requests = self.servers.counters()
        run = Run(scenario, tool, round(seconds, 2), round(cpu, 2), body_bytes, requests, round(rss, 1), code, 0.0)
        run.load = round(os.getloadavg()[0], 2)
        self.runs.append(run)
        mbps = body_bytes / MB / seconds if seconds else 0
        print(
            f"  {scenario:<16} {tool:<34} {seconds:7.2f} s {mbps:7.1f} MB/s  cpu {cpu:6.2f} s  {requests:5d} req  "
            f"{rss:6.1f} MB RSS  load {run.load}",
            flush=True,
        )
        return run

    # -- scenarios ------------------------------------------------------------------------------------
    def throughput(self) -> None:
        a = self.args
        cases = [
            (f"{a.size_mib} MiB file", BIG_ID, [self.big_path], "boto3 upload_file (defaults)"),
            (f"{a.small_files} small files", SMALL_ID, self.small_paths, "boto3 TransferManager (defaults)"),
        ]
        for round_ in range(a.repeat):
            for scenario, model, paths, peer in cases:
                order = [("ours", True), (peer, False)]
                for tool, is_ours in order if round_ % 2 == 0 else order[::-1]:  # alternate who goes first
                    bucket = self.servers.new_bucket()
                    cmd = self.ours(model, bucket) if is_ours else self.peer(bucket, paths)
                    self.measure(scenario, tool, cmd)
                    self.measure(f"{scenario}, again", tool, cmd)  # into the same bucket
                    self.servers.empty(bucket)

    def resend_after_kill(self) -> None:
        size = self.args.size_mib * MiB
        for tool, part_size in (("ours", 16 * MiB), ("boto3 upload_file", 8 * MiB)):
            bucket = self.servers.new_bucket()
            cmd = self.ours(BIG_ID, bucket) if tool == "ours" else self.peer(bucket, [self.big_path])
            hold = Limits(hold_parts_after=-(-size // part_size) // 2)  # half of its parts go through
            first = self.measure("killed", tool, cmd, hold, lambda: self.servers.held() >= 1)
            self.servers.release()
            again = self.measure("re-run", tool, cmd)
            print(
                f"  -> {tool}: {first.body_bytes / MB:.0f} MB sent before the kill, the re-run sent "
                f"{again.body_bytes / MB:.0f} MB of {size / MB:.0f} MB",
                flush=True,
            )
            self.servers.empty(bucket)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="256 MiB file, 100 small files")
    parser.add_argument("--size-mib", type=int, help="size of the large file (default 1024)")
    parser.add_argument("--small-files", type=int, help="number of small files (default 300)")
    parser.add_argument("--small-size", type=int, default=100_000, help="bytes per small file (default 100000)")
    parser.add_argument("--repeat", type=int, default=1, help="rounds of scenarios 1 and 2 (default 1)")
    parser.add_argument("--tmp-dir", help="where the temporary directory goes (needs ~3x the large file)")
    parser.add_argument("--json", help="also write every run to this file")
    args = parser.parse_args()
    args.size_mib = args.size_mib or (256 if args.quick else 1024)
    args.small_files = args.small_files or (100 if args.quick else 300)

    print(f"push bench: {os.cpu_count()} CPUs, load {os.getloadavg()}, python {sys.version.split()[0]}")
    bench = Bench(args)
    try:
        bench.prepare()
        bench.throughput()
        bench.resend_after_kill()
    finally:
        bench.close()
    summarize(bench.runs)
    if args.json:
        Path(args.json).write_text(json.dumps([asdict(r) for r in bench.runs], indent=1))
    print(f"peak RSS of this process: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB")
    return 1 if any(r.exit_code not in (0, -signal.SIGKILL) for r in bench.runs) else 0


def summarize(runs: list[Run]) -> None:
    print("\nratio = peer seconds / ours seconds (median of the rounds); above 1, ours is faster")
    for scenario in dict.fromkeys(r.scenario for r in runs if r.scenario not in ("killed", "re-run")):
        rows = [r for r in runs if r.scenario == scenario]
        ours = sorted(r.seconds for r in rows if r.tool == "ours")
        peers = sorted(r.seconds for r in rows if r.tool != "ours")
        if ours and peers:
            ratio = peers[len(peers) // 2] / ours[len(ours) // 2]
            print(
                f"  {scenario:<16} ours {ours[len(ours) // 2]:.2f} s, peer {peers[len(peers) // 2]:.2f} s: {ratio:.2f}x"
            )


if __name__ == "__main__":
    sys.exit(main())

"""Run a LocalHub standalone.

    python -m tests.hub --port 0 --repos DIR [--source huggingface|modelscope|both]

Every ``DIR/<owner>/<name>/`` folder becomes a repo (served under both protocols by default).
Prints ``HF_ENDPOINT=...`` / ``MODELSCOPE_ENDPOINT=...`` lines, then serves until Ctrl-C / SIGTERM.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from pathlib import Path

from .server import HF, MS, LocalHub


def load_repos(hub: LocalHub, root: Path, sources: list[str]) -> list[str]:
    loaded = []
    for owner in sorted(p for p in root.iterdir() if p.is_dir()):
        for repo_dir in sorted(p for p in owner.iterdir() if p.is_dir()):
            files = {
                f.relative_to(repo_dir).as_posix(): f
                for f in sorted(repo_dir.rglob("*"))
                if f.is_file() and ".git" not in f.relative_to(repo_dir).parts
            }
            repo_id = f"{owner.name}/{repo_dir.name}"
            for source in sources:
                hub.add_repo(source, repo_id, files)
            loaded.append(repo_id)
    return loaded


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.hub", description=__doc__)
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--cdn-port", type=int, default=0)
    parser.add_argument("--repos", type=Path, help="directory of <owner>/<name>/ repo folders")
    parser.add_argument("--source", choices=["huggingface", "modelscope", "both"], default="both")
    parser.add_argument("--token", default="hub-test-token")
    parser.add_argument("--no-lfs-redirect", action="store_true", help="serve LFS files directly (no 302 to CDN)")
    parser.add_argument("--latency", type=float, default=0.0)
    parser.add_argument("--bandwidth", type=int, default=None, help="bytes/s per response")
    args = parser.parse_args(argv)

    sources = [HF, MS] if args.source == "both" else [args.source]
    hub = LocalHub(
        port=args.port,
        cdn_port=args.cdn_port,
        token=args.token,
        hf_lfs_redirect=not args.no_lfs_redirect,
        ms_lfs_redirect=not args.no_lfs_redirect,
    )
    hub.faults.latency = args.latency
    hub.faults.bandwidth = args.bandwidth
    hub.start()
    loaded = load_repos(hub, args.repos, sources) if args.repos else []
    print(f"URL={hub.url}")
    print(f"HF_ENDPOINT={hub.url}")
    print(f"MODELSCOPE_ENDPOINT={hub.url}")
    print(f"CDN_URL={hub.cdn_url}")
    print(f"REPOS={','.join(loaded)}", flush=True)

    done = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: done.set())
    try:
        while not done.wait(0.5):
            pass
    finally:
        hub.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())

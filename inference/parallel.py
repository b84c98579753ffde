"""Independent pieces of work spread over the CPU's cores. numpy leaves the GIL in its products and loops,
so threads scale: the segmentation of 10 minutes of audio took 10.9 s on two threads and 18.7 s on one.
Each piece still runs its products on one BLAS thread (see diarization.diarize)."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

from . import progress

Item = TypeVar("Item")
Result = TypeVar("Result")

# Each thread holds the intermediates of its piece (a batch of segmentation chunks: about 0.4 GB).
MAX_THREADS = 4
# A container's CPU quota, which its affinity does not show: cgroup v2's "QUOTA PERIOD" (or "max PERIOD"), then
# cgroup v1's two files.
CGROUP_V2_CPU_MAX = Path("/sys/fs/cgroup/cpu.max")
CGROUP_V1_QUOTA = Path("/sys/fs/cgroup/cpu/cpu.cfs_quota_us")
CGROUP_V1_PERIOD = Path("/sys/fs/cgroup/cpu/cpu.cfs_period_us")


def cores() -> int:
    """The cores this process may use: its CPU affinity, where the system has one, within its CPU quota."""
    available = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    quota = _quota_cores()
    return min(available, quota) if quota else available


def _quota_cores() -> int | None:
    """The cores a CFS quota allows (a fraction rounds up), or None without a quota."""
    try:
        quota, period = CGROUP_V2_CPU_MAX.read_text().split()[:2]
    except (OSError, ValueError):
        try:
            quota, period = CGROUP_V1_QUOTA.read_text(), CGROUP_V1_PERIOD.read_text()
        except OSError:
            return None
    try:
        quota_us, period_us = int(quota), int(period)
    except ValueError:  # "max": no quota
        return None
    return -(-quota_us // period_us) if quota_us > 0 and period_us > 0 else None


def threads() -> int:
    """How many threads parallel_map runs at most."""
    return min(MAX_THREADS, cores())


def parallel_map(function: Callable[[Item], Result], items: Sequence[Item], stage: str) -> list[Result]:
    """[function(item) for item in items], on up to threads() threads (no thread for a single item); each
    result counts as one piece of `stage` done (inference.progress)."""
    workers = min(threads(), len(items))
    if workers <= 1:
        return _counted(map(function, items), stage, len(items))
    with ThreadPoolExecutor(workers, thread_name_prefix="inference") as pool:
        return _counted(pool.map(function, items), stage, len(items))


def _counted(results: Iterator[Result], stage: str, total: int) -> list[Result]:
    done = []
    for result in results:
        done.append(result)
        progress.done(stage, len(done), total)
    return done

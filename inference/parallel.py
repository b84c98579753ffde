"""Independent pieces of work spread over the CPU's cores. numpy leaves the GIL in its products and loops,
so threads scale: the segmentation of 10 minutes of audio took 10.9 s on two threads and 18.7 s on one.
Each piece still runs its products on one BLAS thread (see diarization.diarize)."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

# Each thread holds the intermediates of its piece (a batch of segmentation chunks: about 0.4 GB).
MAX_THREADS = 4

Item = TypeVar("Item")
Result = TypeVar("Result")


def cores() -> int:
    """The cores this process may run on (its CPU affinity, where the system has one)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def parallel_map(function: Callable[[Item], Result], items: Sequence[Item]) -> list[Result]:
    """[function(item) for item in items], on up to MAX_THREADS threads (no thread for a single item)."""
    workers = min(MAX_THREADS, cores(), len(items))
    if workers <= 1:
        return [function(item) for item in items]
    with ThreadPoolExecutor(workers, thread_name_prefix="inference") as pool:
        return list(pool.map(function, items))

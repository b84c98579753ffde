"""Where the time per file goes: wall time of each phase of fetching a file, summed over a run (shown by -v).

Phases are timed as laps, `t = times.lap("fsync", t)`, so that timing a step adds one line around it.
"""

from __future__ import annotations

import threading
import time


class PhaseTimes:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._seconds: dict[str, float] = {}
        self.files = 0  # files fetched (not those found complete)

    def lap(self, phase: str, since: float) -> float:
        """Add the time from `since` to now to `phase`; returns now, the start of the next lap."""
        now = time.perf_counter()
        with self._lock:
            self._seconds[phase] = self._seconds.get(phase, 0.0) + now - since
        return now

    def file_done(self) -> None:
        with self._lock:
            self.files += 1

    def summary(self) -> str | None:
        """ "per file (N files): phase x ms, ..." in the order the phases first ran; None if nothing was fetched."""
        with self._lock:
            if not self.files:
                return None
            phases = ", ".join(f"{name} {1000 * s / self.files:.2f} ms" for name, s in self._seconds.items())
            return f"per file ({self.files} files fetched, wall time per phase): {phases}"

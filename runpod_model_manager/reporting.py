"""How a run shows itself: rich progress bars on a TTY, plain lines for logs, nothing but JSON with --json."""

from __future__ import annotations

import sys
import threading
import time

from .transfer import Progress


def human_bytes(n: float) -> str:
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if abs(n) < 1000 or unit == "TB":
            return f"{int(n)} B" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    raise AssertionError("unreachable")


class Reporter(Progress):
    """Quiet reporter: the base for the others, and what --quiet and --json use."""

    def __init__(self, stream=None, verbose: bool = False):
        self.stream = stream or sys.stderr
        self.verbose = verbose

    def info(self, message: str) -> None:
        """A line about the run (cache root, plan); hidden when quiet."""

    def warn(self, message: str) -> None:
        print(f"warning: {message}", file=self.stream, flush=True)

    def note(self, message: str) -> None:
        if self.verbose:
            print(message, file=self.stream, flush=True)

    def close(self) -> None: ...


class PlainReporter(Reporter):
    """Line-oriented output with no control codes: Docker build logs, `nohup` on a pod."""

    INTERVAL = 5.0
    ACTION = "downloading"  # what file_started lines say

    def __init__(self, stream=None, verbose: bool = False):
        super().__init__(stream, verbose)
        self._lock = threading.Lock()
        self._total = 0
        self._done = 0
        self._started = time.monotonic()
        self._last = self._started

    def _line(self, text: str) -> None:
        """One whole line per write: worker threads report at once, and their lines must not interleave."""
        self.stream.write(text + "\n")
        self.stream.flush()

    def info(self, message: str) -> None:
        self._line(message)

    def note(self, message: str) -> None:
        self._line(message)

    def file_started(self, label: str, size: int, already: int) -> None:
        with self._lock:
            self._total += size - already
        resume = f", resuming at {human_bytes(already)}" if already else ""
        self._line(f"{self.ACTION} {label} ({human_bytes(size)}{resume})")

    def advance(self, label: str, nbytes: int) -> None:
        with self._lock:
            self._done += nbytes
            now = time.monotonic()
            if now - self._last < self.INTERVAL:
                return
            self._last = now
            done, total, elapsed = self._done, self._total, now - self._started
        speed = done / elapsed if elapsed else 0
        self._line(f"progress {human_bytes(done)} of {human_bytes(total)} started, {human_bytes(speed)}/s")

    def file_done(self, label: str, transferred: int) -> None:
        self._line(f"done {label}")


class PlainUploadReporter(PlainReporter):
    """The same lines for `push`."""

    ACTION = "uploading"


class RichReporter(Reporter):
    """Progress bars per file and in total, with speed and ETA."""

    def __init__(self, stream=None, verbose: bool = False):
        super().__init__(stream, verbose)
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            DownloadColumn,
            TextColumn,
            TimeRemainingColumn,
            TransferSpeedColumn,
        )
        from rich.progress import (
            Progress as Bars,
        )

        self.console = Console(file=self.stream)
        self.bars = Bars(
            TextColumn("{task.description}", justify="left"),
            BarColumn(),
            DownloadColumn(),
            TransferSpeedColumn(),
            TimeRemainingColumn(),
            console=self.console,
            transient=False,
        )
        self._tasks: dict[str, int] = {}
        self._total = self.bars.add_task("total", total=0)
        self._lock = threading.Lock()
        self.bars.start()

    def info(self, message: str) -> None:
        self.console.print(message, highlight=False, markup=False)

    def note(self, message: str) -> None:
        self.console.print(message, style="yellow", highlight=False, markup=False)

    def warn(self, message: str) -> None:
        self.console.print(f"warning: {message}", style="yellow", highlight=False, markup=False)

    def file_started(self, label: str, size: int, already: int) -> None:
        with self._lock:
            self._tasks[label] = self.bars.add_task(label, total=size, completed=already)
            total = self.bars.tasks[self._total].total or 0
            self.bars.update(self._total, total=total + size, advance=already)

    def advance(self, label: str, nbytes: int) -> None:
        task = self._tasks.get(label)
        if task is not None:
            self.bars.update(task, advance=nbytes)
        self.bars.update(self._total, advance=nbytes)

    def file_done(self, label: str, transferred: int) -> None:
        with self._lock:
            task = self._tasks.pop(label, None)
        if task is not None:
            self.bars.remove_task(task)

    def close(self) -> None:
        self.bars.stop()


def make_reporter(json_output: bool, quiet: bool, verbose: bool, upload: bool = False) -> Reporter:
    if json_output or quiet:
        return Reporter(verbose=verbose)
    if sys.stderr.isatty():
        return RichReporter(verbose=verbose)
    return (PlainUploadReporter if upload else PlainReporter)(verbose=verbose)

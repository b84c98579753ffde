"""How a run shows itself: rich progress bars on a TTY, plain lines for logs, nothing but JSON with --json.

The reporter API, as the engine and the commands call it (all may be called from worker threads):
    planned(files, nbytes)            once, before the first file: what the run will move (optional: without
                                      it there is no total bar, and plain progress counts what is done so far)
    file_started / advance / file_done  per file (see transfer.Progress)
    info(line)   a line about the run (cache root, plan); hidden by -q and --json
    note(line)   retries and waits; shown on a TTY and in logs, with -q only under -v
    warn(line)   always shown
    close()      stop the bars; call before printing the summary

Names from outside (file names from a hub, paths) go through `printable()` before they reach a terminal:
a newline or a right-to-left override in a file name must not forge or reorder output lines.
"""

from __future__ import annotations

import shutil
import sys
import textwrap
import threading
import time
import unicodedata

from .progress import Progress

_ESCAPES = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def printable(text: str) -> str:
    """`text` with control and format characters (newline, escape, right-to-left override, ...) escaped."""
    out = []
    for char in text:
        if unicodedata.category(char) in ("Cc", "Cf", "Cs", "Zl", "Zp"):
            code = ord(char)
            out.append(_ESCAPES.get(char) or (f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"))
        else:
            out.append(char)
    return "".join(out)


def fit(line: str, stream=None) -> str:
    """One output line, escaped; on a terminal, folded so that no line is wider than it."""
    line = printable(line)
    stream = stream or sys.stdout
    if not stream.isatty():
        return line
    width = shutil.get_terminal_size().columns
    if len(line) <= width:
        return line
    indent = " " * min(4, len(line) - len(line.lstrip()) + 4)
    return "\n".join(textwrap.wrap(line, width, subsequent_indent=indent, break_on_hyphens=False))


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
        print(f"warning: {printable(message)}", file=self.stream, flush=True)

    def note(self, message: str) -> None:
        if self.verbose:
            print(printable(message), file=self.stream, flush=True)

    def close(self) -> None: ...


class PlainReporter(Reporter):
    """Line-oriented output with no control codes: Docker build logs, `nohup` on a pod."""

    INTERVAL = 5.0
    VERB = "download"  # downloading ..., downloaded ...

    def __init__(self, stream=None, verbose: bool = False):
        super().__init__(stream, verbose)
        self._lock = threading.Lock()
        self._files = self._bytes = 0  # planned for the run
        self._files_done = self._done = 0
        self._started = time.monotonic()
        self._last = self._started

    def _line(self, text: str) -> None:
        """One whole line per write: worker threads report at once, and their lines must not interleave."""
        self.stream.write(printable(text) + "\n")
        self.stream.flush()

    def info(self, message: str) -> None:
        self._line(message)

    def note(self, message: str) -> None:
        self._line(message)

    def planned(self, files: int, nbytes: int) -> None:
        with self._lock:
            self._files, self._bytes = files, nbytes
            self._started = self._last = time.monotonic()
        if files:
            self._line(f"to {self.VERB}: {files} files, {human_bytes(nbytes)}")

    def file_started(self, label: str, size: int, already: int) -> None:
        resume = f", resuming at {human_bytes(already)}" if already else ""
        self._line(f"{self.VERB}ing {label} ({human_bytes(size)}{resume})")

    def advance(self, label: str, nbytes: int) -> None:
        with self._lock:
            self._done += nbytes
            now = time.monotonic()
            if now - self._last < self.INTERVAL:
                return
            self._last = now
            done, total, files, files_done = self._done, self._bytes, self._files, self._files_done
            elapsed = now - self._started
        speed = human_bytes(done / elapsed if elapsed else 0)
        if not files:  # the caller did not say what the run will move
            self._line(f"progress: {human_bytes(done)} {self.VERB}ed so far, {files_done} files done, {speed}/s")
            return
        percent = f" ({100 * done // total}%)" if total else ""
        self._line(
            f"progress: {human_bytes(done)} of {human_bytes(total)} {self.VERB}ed{percent}, "
            f"{files_done} of {files} files done, {speed}/s"
        )

    def file_done(self, label: str, transferred: int) -> None:
        with self._lock:
            self._files_done += 1
        self._line(f"done {label}")


class PlainUploadReporter(PlainReporter):
    """The same lines for `push`."""

    VERB = "upload"


class RichReporter(Reporter):
    """Progress bars per file and in total, with speed and ETA, each row as wide as the terminal at most."""

    # rich redraws every bar each time one is added: bars for hundreds of small files made drawing the run's
    # main cost (5.5 s instead of 1.1 s for 300 files of 20 KB). Those count in the total bar only.
    FILE_BAR_MIN_SIZE = 1 << 20
    FILE_BARS = 8  # at once

    def __init__(self, stream=None, verbose: bool = False):
        super().__init__(stream, verbose)
        from rich.console import Console
        from rich.progress import BarColumn, DownloadColumn, TextColumn, TimeRemainingColumn, TransferSpeedColumn
        from rich.progress import Progress as Bars
        from rich.table import Column

        self.console = Console(file=self.stream)
        # fixed widths for the numbers, so that only the name is shortened (with an ellipsis) on a narrow terminal
        self.bars = Bars(
            TextColumn("{task.description}", markup=False, table_column=Column(ratio=1, no_wrap=True, min_width=8)),
            BarColumn(bar_width=10, table_column=Column(width=10, no_wrap=True)),
            DownloadColumn(table_column=Column(width=17, no_wrap=True, justify="right")),
            TransferSpeedColumn(table_column=Column(width=11, no_wrap=True, justify="right")),
            TimeRemainingColumn(table_column=Column(width=8, no_wrap=True, justify="right")),
            console=self.console,
            transient=False,
            expand=True,
        )
        self._tasks: dict[str, int] = {}
        self._total: int | None = None  # the total bar, once the run says what it will fetch
        self._lock = threading.Lock()
        self.bars.start()

    def info(self, message: str) -> None:
        self.console.print(printable(message), highlight=False, markup=False, overflow="fold")

    def note(self, message: str) -> None:
        self.console.print(printable(message), style="yellow", highlight=False, markup=False, overflow="fold")

    def warn(self, message: str) -> None:
        self.console.print(f"warning: {printable(message)}", style="yellow", highlight=False, markup=False)

    def planned(self, files: int, nbytes: int) -> None:
        if files:
            self._total = self.bars.add_task(f"total ({files} files)", total=nbytes)

    def file_started(self, label: str, size: int, already: int) -> None:
        with self._lock:
            if size >= self.FILE_BAR_MIN_SIZE and len(self._tasks) < self.FILE_BARS:
                self._tasks[label] = self.bars.add_task(printable(label), total=size, completed=already)

    def advance(self, label: str, nbytes: int) -> None:
        task = self._tasks.get(label)
        if task is not None:
            self.bars.update(task, advance=nbytes)
        if self._total is not None:
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

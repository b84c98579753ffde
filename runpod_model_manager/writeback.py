"""Start writing a file's finished bytes to disk while the rest still arrives, so that the fsync before the
final rename has little left to write: it then waits for the last part, not for the whole file.

Linux's sync_file_range(SYNC_FILE_RANGE_WRITE) starts the writeback and returns; elsewhere this does nothing
and the fsync writes everything, as before. It is never a durability step: only the fsync is.
"""

from __future__ import annotations

import functools
import sys

_START_WRITE = 2  # SYNC_FILE_RANGE_WRITE


@functools.cache
def _sync_file_range():
    if not sys.platform.startswith("linux"):
        return None
    import ctypes  # only here: a few milliseconds of start-up, paid by large files alone

    try:
        call = ctypes.CDLL(None, use_errno=True).sync_file_range
    except (OSError, AttributeError):
        return None
    call.argtypes = (ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint)
    call.restype = ctypes.c_int
    return call


def start_writeback(fd: int, offset: int, length: int) -> None:
    """Ask the kernel to start writing `length` bytes at `offset` of `fd` to disk, without waiting."""
    call = _sync_file_range()
    if call is not None:
        call(fd, offset, length, _START_WRITE)  # an error only leaves the work to the fsync

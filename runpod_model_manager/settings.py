"""Tuning from RPMM_* environment variables, so that a deployment or a test can change it without a CLI option.

Each value is checked against its range: one that is not a number or lies outside stops the run with a
one-line error naming the variable (`inf`, `nan`, `1e309` and a zero timeout are refused).

    variable                  meaning                                                           default  range
    RPMM_RETRIES              attempts in a row without progress, per part, before giving up    6        0-100
    RPMM_RETRY_BACKOFF        first retry delay in seconds, doubled each time, with jitter      0.5      0-3600
    RPMM_RETRY_BACKOFF_MAX    longest delay between two attempts in seconds                     30       0-86400
    RPMM_RETRY_AFTER_MAX      longest Retry-After (429/503) honoured, in seconds                300      0-86400
    RPMM_STALL_TIMEOUT        no byte for this many seconds: drop the connection, retry; also    30       0.01-86400
                              the window over which RPMM_MIN_SPEED is measured
    RPMM_MIN_SPEED            a part receiving fewer bytes per second than this over the stall   1024     0-2**30
                              window counts as stalled (like curl --speed-limit); 0: no floor
    RPMM_CONNECT_TIMEOUT      seconds to open a connection                                      10       0.01-3600
    RPMM_RECORD_INTERVAL      seconds between two resume records of a file in flight           1        0-3600
    RPMM_PREALLOCATE          0: do not reserve a file's full size before its bytes arrive      1        0 or 1
                              (for filesystems where fallocate is emulated by writing zeros)
    RPMM_METADATA_TIMEOUT     the whole of one metadata request (connect, headers, body,        120      0.01-86400
                              redirects), in seconds
    RPMM_METADATA_MAX_BYTES   largest metadata answer accepted; 256 MiB holds a 100k-file       2**28    2**10-2**40
                              listing
    RPMM_PARTIAL_MAX_AGE      seconds a partial download may stay untouched before a later run   604800   0-2**32
                              removes it (never one another process holds); 604800 s: 7 days
    RPMM_LOCK_STALE           seconds without a heartbeat after which a lock file is taken over  60       0.1-86400
                              where flock fails (see locks.py)

  push (to an S3 store; RunPod: PutObject and parts below 500 MB):
    RPMM_PUSH_PART_SIZE       bytes per multipart part, grown for files that would need more   16 MiB   1-500 MB
                              than 10,000 parts
    RPMM_PUSH_PUT_MAX         files up to this size go in one PutObject, larger ones in parts   16 MiB   1-500 MB
    RPMM_PUSH_ATTEMPTS        attempts per request (botocore's standard retries)               10       1-100
    RPMM_PUSH_READ_TIMEOUT    seconds to wait for the answer to a request                      120      0.01-86400
    RPMM_PUSH_COMPLETE_TIMEOUT seconds CompleteMultipartUpload may take (RunPod assembles the   3600     0.01-86400
                              file then)
    RPMM_PUSH_VERIFY_WAIT     seconds before HeadObject asks again for an object it does not    1        0-3600
                              show yet; doubled

  handler.py (a RunPod Serverless worker):
    RPMM_PROGRESS_INTERVAL    seconds between two progress updates of a request (the first one  10       0-3600
                              after that long), which RunPod's /status shows while it runs
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from .errors import UserError

MiB = 1 << 20
RUNPOD_PUT_LIMIT = 500 * 1000**2  # RunPod refuses a PutObject or an upload part of this size or more

# name -> (default, type, lowest, highest)
RANGES: dict[str, tuple[float, type, float, float]] = {
    "RPMM_RETRIES": (6, int, 0, 100),
    "RPMM_RETRY_BACKOFF": (0.5, float, 0, 3600),
    "RPMM_RETRY_BACKOFF_MAX": (30.0, float, 0, 86400),
    "RPMM_RETRY_AFTER_MAX": (300.0, float, 0, 86400),
    "RPMM_STALL_TIMEOUT": (30.0, float, 0.01, 86400),
    "RPMM_MIN_SPEED": (1024.0, float, 0, 1 << 30),
    "RPMM_CONNECT_TIMEOUT": (10.0, float, 0.01, 3600),
    "RPMM_RECORD_INTERVAL": (1.0, float, 0, 3600),
    "RPMM_METADATA_TIMEOUT": (120.0, float, 0.01, 86400),
    "RPMM_METADATA_MAX_BYTES": (1 << 28, int, 1 << 10, 1 << 40),
    "RPMM_PARTIAL_MAX_AGE": (7 * 86400.0, float, 0, 1 << 32),
    "RPMM_LOCK_STALE": (60.0, float, 0.1, 86400),
    "RPMM_PUSH_PART_SIZE": (16 * MiB, int, 1, RUNPOD_PUT_LIMIT),
    "RPMM_PUSH_PUT_MAX": (16 * MiB, int, 1, RUNPOD_PUT_LIMIT),
    "RPMM_PUSH_ATTEMPTS": (10, int, 1, 100),
    "RPMM_PUSH_READ_TIMEOUT": (120.0, float, 0.01, 86400),
    "RPMM_PUSH_COMPLETE_TIMEOUT": (3600.0, float, 0.01, 86400),
    "RPMM_PUSH_VERIFY_WAIT": (1.0, float, 0, 3600),
    "RPMM_PROGRESS_INTERVAL": (10.0, float, 0, 3600),
}


def number(name: str):
    """The value of the RPMM_* variable `name`, or its default when unset or empty."""
    default, kind, low, high = RANGES[name]
    value = os.environ.get(name, "").strip()
    if not value:
        return default
    try:
        parsed = kind(value)
    except ValueError:
        parsed = None
    if parsed is None or not low <= parsed <= high:  # also refuses nan, which compares false
        what = "a whole number" if kind is int else "a number"
        raise UserError(f"{name} must be {what} from {low:g} to {high:g}, got {value!r}.")
    return parsed


def setting(name: str):
    """A dataclass field whose default is read from the RPMM_* variable `name` when an instance is made."""
    return field(default_factory=lambda: number(name))


@dataclass(frozen=True)
class MetadataLimits:
    """Limits of one metadata request (hub_http.fetch), from the RPMM_* variables above."""

    connect_timeout: float = setting("RPMM_CONNECT_TIMEOUT")
    read_timeout: float = setting("RPMM_STALL_TIMEOUT")
    deadline: float = setting("RPMM_METADATA_TIMEOUT")
    max_bytes: int = setting("RPMM_METADATA_MAX_BYTES")


def flag(name: str, default: bool) -> bool:
    value = os.environ.get(name, "").strip().lower()
    if not value:
        return default
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    raise UserError(f"{name} must be 1 or 0, got {value!r}.")

"""Tuning of `push`. Like the download engine's settings, the defaults come from the environment, so that a
deployment or a test can change them without a CLI option; a value that is not a number is a one-line error:

    RPMM_PUSH_PART_SIZE        bytes per multipart part, grown for files that would need > 10,000 parts (16 MiB)
    RPMM_PUSH_PUT_MAX          files smaller than this go in one PutObject, larger ones in parts (16 MiB)
    RPMM_PUSH_ATTEMPTS         attempts per request (botocore's standard retries: 502, 503, dropped links) (10)
    RPMM_PUSH_READ_TIMEOUT     seconds to wait for an answer to a request (120)
    RPMM_PUSH_COMPLETE_TIMEOUT seconds CompleteMultipartUpload may take: RunPod assembles the file then (3600)
    RPMM_PUSH_VERIFY_WAIT      seconds before HeadObject asks again for an object it does not show yet; doubled (1)
    RPMM_RETRY_BACKOFF         first wait before a request that botocore gave up on is sent again; doubled (0.5)
"""

from __future__ import annotations

from dataclasses import dataclass

from runpod_model_manager.errors import UserError
from runpod_model_manager.transfer import MiB, _setting

# RunPod network volumes: PutObject only below 500 MB, parts of at most 500 MB; S3: at most 10,000 parts
PUT_LIMIT = 500 * 1000**2
PART_LIMIT = 500 * 1000**2
MAX_PARTS = 10_000


@dataclass(frozen=True)
class PushSettings:
    workers: int = 8  # objects at once
    connections: int = 8  # parts at once, across all files
    part_size: int = _setting("RPMM_PUSH_PART_SIZE", 16 * MiB, int)
    put_max: int = _setting("RPMM_PUSH_PUT_MAX", 16 * MiB, int)
    attempts: int = _setting("RPMM_PUSH_ATTEMPTS", 10, int)
    connect_timeout: float = _setting("RPMM_CONNECT_TIMEOUT", 10.0)
    read_timeout: float = _setting("RPMM_PUSH_READ_TIMEOUT", 120.0)
    complete_timeout: float = _setting("RPMM_PUSH_COMPLETE_TIMEOUT", 3600.0)
    verify_wait: float = _setting("RPMM_PUSH_VERIFY_WAIT", 1.0)
    backoff: float = _setting("RPMM_RETRY_BACKOFF", 0.5)
    verify_checks: int = 5  # HeadObject calls before an object that does not show counts as not uploaded
    file_attempts: int = 3  # uploads of one object (resuming) before it fails

    def __post_init__(self):
        if not 1 <= self.part_size <= PART_LIMIT:
            raise UserError(f"RPMM_PUSH_PART_SIZE must be between 1 and {PART_LIMIT} bytes (RunPod's part limit).")
        if not 1 <= self.put_max <= PUT_LIMIT:
            raise UserError(f"RPMM_PUSH_PUT_MAX must be between 1 and {PUT_LIMIT} bytes (RunPod's PutObject limit).")
        if self.attempts < 1:
            raise UserError("RPMM_PUSH_ATTEMPTS must be at least 1.")

"""Tuning of `push`: the RPMM_PUSH_* variables, with their ranges, are listed in runpod_model_manager/settings.py."""

from __future__ import annotations

from dataclasses import dataclass

from runpod_model_manager.settings import RUNPOD_PUT_LIMIT, setting

PART_LIMIT = RUNPOD_PUT_LIMIT  # RunPod: parts below 500 MB too
MAX_PARTS = 10_000  # S3's limit of parts per upload


@dataclass(frozen=True)
class PushSettings:
    workers: int = 8  # objects at once
    connections: int = 8  # parts at once, across all files
    part_size: int = setting("RPMM_PUSH_PART_SIZE")
    put_max: int = setting("RPMM_PUSH_PUT_MAX")
    attempts: int = setting("RPMM_PUSH_ATTEMPTS")
    connect_timeout: float = setting("RPMM_CONNECT_TIMEOUT")
    read_timeout: float = setting("RPMM_PUSH_READ_TIMEOUT")
    complete_timeout: float = setting("RPMM_PUSH_COMPLETE_TIMEOUT")
    verify_wait: float = setting("RPMM_PUSH_VERIFY_WAIT")
    backoff: float = setting("RPMM_RETRY_BACKOFF")
    verify_checks: int = 5  # HeadObject calls before an object that does not show counts as not uploaded
    file_attempts: int = 3  # uploads of one object (resuming) before it fails

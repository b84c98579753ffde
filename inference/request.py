"""Validate the fields of a job's input: the audio source and the optional numeric parameters."""

from __future__ import annotations

import numpy as np

from . import fetch
from .audio import decode_audio, decode_base64_audio
from .errors import InputError

AUDIO_FIELDS = ("audio_url", "audio_base64")


def reject_unknown_fields(job_input: dict, allowed: tuple[str, ...]) -> None:
    unknown = sorted(set(job_input) - set(allowed))
    if unknown:
        raise InputError(f"Unknown input field '{unknown[0]}'; this task accepts {', '.join(allowed)}.")


def optional_int(job_input: dict, field: str, low: int, high: int) -> int | None:
    """An integer in [low, high], or None when absent."""
    value = job_input.get(field)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise InputError(f"{field} must be an integer.")
    if not low <= value <= high:
        raise InputError(f"{field} must be between {low} and {high}.")
    return value


def optional_bool(job_input: dict, field: str) -> bool:
    """true or false; false when absent."""
    value = job_input.get(field)
    if value is None:
        return False
    if not isinstance(value, bool):
        raise InputError(f"{field} must be true or false.")
    return value


def optional_float(job_input: dict, field: str, low: float, high: float, default: float) -> float:
    """A number in the open interval (low, high), or `default` when absent."""
    value = job_input.get(field)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise InputError(f"{field} must be a number.")
    if not low < value < high:
        raise InputError(f"{field} must be greater than {low} and less than {high}.")
    return float(value)


def audio_source(job_input: dict) -> tuple[str, str]:
    """(field, value) of the job's one audio field, checked before any model loads or byte downloads."""
    given = [field for field in AUDIO_FIELDS if job_input.get(field) is not None]
    if not given:
        raise InputError("The input needs audio: give audio_url or audio_base64.")
    if len(given) > 1:
        raise InputError("Give either audio_url or audio_base64, not both.")
    field = given[0]
    value = job_input[field]
    if not isinstance(value, str) or not value.strip():
        raise InputError(f"{field} must be a non-empty string.")
    return field, value.strip()


def load_audio(source: tuple[str, str]) -> np.ndarray:
    """The audio of an audio_source() as 16 kHz mono float32."""
    field, value = source
    return decode_audio(fetch.download(value) if field == "audio_url" else decode_base64_audio(value))

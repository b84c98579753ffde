"""The tasks the speaker_diarization project serves (see its `tasks`): job input dict -> result dict.

Each model is loaded from the model cache, offline, the first time a task needs it, and stays loaded
for the life of the worker process.
"""

from __future__ import annotations

import functools
from pathlib import Path

from projects.speaker_diarization import SEGMENTATION, SEGMENTATION_FILE, SPEAKER_EMBEDDING, SPEAKER_EMBEDDING_FILE
from runpod_model_manager.offline import local_model_path
from runpod_model_manager.specs import ModelSpec

from .campplus import CamPlusPlus
from .diarization import DEFAULT_DISTANCE_THRESHOLD, SpeakerTurn, diarize
from .errors import InputError, ModelUnavailableError
from .request import (
    AUDIO_FIELDS,
    audio_source,
    load_audio,
    optional_bool,
    optional_float,
    optional_int,
    reject_unknown_fields,
)
from .segmentation import SpeakerSegmentation
from .vad import DEFAULT_THRESHOLD, speech_segments

MAX_SPEAKERS = 20
MAX_DISTANCE_THRESHOLD = 2.0  # cosine distance lies in [0, 2]


def _model_file(spec: ModelSpec, relative_path: str) -> Path:
    try:
        path = local_model_path(spec) / relative_path
    except (OSError, ValueError):  # what the hub libraries raise for a model that is not cached
        path = None
    if path is None or not path.is_file():
        raise ModelUnavailableError(
            f"Model {spec} ({relative_path}) is not in the model cache; "
            "download it with `download-models --project speaker_diarization` before starting the worker."
        )
    return path


@functools.cache
def speaker_segmentation() -> SpeakerSegmentation:
    return SpeakerSegmentation.from_checkpoint(_model_file(SEGMENTATION, SEGMENTATION_FILE))


@functools.cache
def speaker_embedding() -> CamPlusPlus:
    return CamPlusPlus.from_checkpoint(_model_file(SPEAKER_EMBEDDING, SPEAKER_EMBEDDING_FILE))


def vad(job_input: dict) -> dict:
    """Speech segments. `threshold` (0-1, default 0.5) is the speech probability above which speech starts."""
    reject_unknown_fields(job_input, ("task", *AUDIO_FIELDS, "threshold"))
    threshold = optional_float(job_input, "threshold", 0.0, 1.0, DEFAULT_THRESHOLD)
    source = audio_source(job_input)
    segmentation = speaker_segmentation()
    segments = speech_segments(load_audio(source), segmentation, threshold)
    return {"segments": [{"start": s.start, "end": s.end} for s in segments]}


def speaker_diarization(job_input: dict) -> dict:
    """Speaker turns; overlapping speech gives overlapping turns. `num_speakers` (or `min_speakers` and
    `max_speakers`) bounds the number of speakers; within the bounds, clusters of voices merge while their
    cosine distance is under `threshold`. `exclusive`: also the turns with one speaker at a time;
    `embeddings`: also each speaker's voice embedding (192 numbers, unit length)."""
    fields = ("num_speakers", "min_speakers", "max_speakers", "threshold", "exclusive", "embeddings")
    reject_unknown_fields(job_input, ("task", *AUDIO_FIELDS, *fields))
    num_speakers = optional_int(job_input, "num_speakers", 1, MAX_SPEAKERS)
    min_speakers = optional_int(job_input, "min_speakers", 1, MAX_SPEAKERS)
    max_speakers = optional_int(job_input, "max_speakers", 1, MAX_SPEAKERS)
    if num_speakers and (min_speakers or max_speakers):
        raise InputError("Give num_speakers, or min_speakers and max_speakers, not both.")
    if min_speakers and max_speakers and min_speakers > max_speakers:
        raise InputError("min_speakers must not be greater than max_speakers.")
    threshold = optional_float(job_input, "threshold", 0.0, MAX_DISTANCE_THRESHOLD, DEFAULT_DISTANCE_THRESHOLD)
    exclusive = optional_bool(job_input, "exclusive")
    embeddings = optional_bool(job_input, "embeddings")
    source = audio_source(job_input)
    segmentation, encoder = speaker_segmentation(), speaker_embedding()
    audio = load_audio(source)
    found = diarize(
        audio, segmentation, encoder, num_speakers or min_speakers or 1, num_speakers or max_speakers, threshold
    )
    result = {"num_speakers": len({turn.speaker for turn in found.turns}), "segments": _segments(found.turns)}
    if exclusive:
        result["exclusive_segments"] = _segments(found.exclusive_turns)
    if embeddings:
        result["embeddings"] = {name: [round(float(x), 6) for x in voice] for name, voice in found.embeddings.items()}
    return result


def _segments(turns: list[SpeakerTurn]) -> list[dict]:
    return [{"start": t.start, "end": t.end, "speaker": t.speaker} for t in turns]

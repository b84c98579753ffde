"""Turn request audio (base64 or bytes) into 16 kHz mono float32 samples, within documented limits."""

from __future__ import annotations

import base64
import binascii
import io
from math import gcd

import numpy as np

from .errors import InputError

SAMPLE_RATE = 16000
MAX_AUDIO_BYTES = 25 * 1024 * 1024  # encoded size, for audio_base64 and audio_url alike
MAX_AUDIO_SECONDS = 10 * 60
MIN_AUDIO_SECONDS = 0.1
# Bounds the memory decoding takes (float32, all channels): 10 minutes of 48 kHz stereo.
MAX_DECODED_SAMPLES = MAX_AUDIO_SECONDS * 48000 * 2


def decode_base64_audio(text: str) -> bytes:
    """Standard base64; line breaks and a `data:audio/...;base64,` prefix are accepted."""
    if text.startswith("data:") and "," in text[:100]:
        text = text.split(",", 1)[1]
    if len(text) > (MAX_AUDIO_BYTES // 3 + 1) * 4 * 1.05:  # 5 % slack for line breaks
        raise InputError(f"audio_base64 is larger than the {MAX_AUDIO_BYTES // 2**20} MB limit.")
    try:
        data = base64.b64decode("".join(text.split()), validate=True)
    except (binascii.Error, ValueError):
        raise InputError("audio_base64 is not valid base64.") from None
    if not data:
        raise InputError("audio_base64 is empty.")
    if len(data) > MAX_AUDIO_BYTES:
        raise InputError(f"audio_base64 is larger than the {MAX_AUDIO_BYTES // 2**20} MB limit.")
    return data


def resample(samples: np.ndarray, source_rate: int, target_rate: int = SAMPLE_RATE) -> np.ndarray:
    if source_rate == target_rate:
        return samples
    from scipy.signal import resample_poly

    divisor = gcd(source_rate, target_rate)
    return resample_poly(samples, target_rate // divisor, source_rate // divisor).astype(np.float32)


def decode_audio(data: bytes) -> np.ndarray:
    """WAV, FLAC or OGG (what libsndfile reads) -> 16 kHz mono float32 in [-1, 1]."""
    import soundfile

    if len(data) > MAX_AUDIO_BYTES:
        raise InputError(f"The audio is larger than the {MAX_AUDIO_BYTES // 2**20} MB limit.")
    try:
        with soundfile.SoundFile(io.BytesIO(data)) as sound:
            if sound.samplerate <= 0 or sound.frames <= 0:
                raise InputError("The audio contains no samples.")
            if sound.frames / sound.samplerate > MAX_AUDIO_SECONDS:
                raise InputError(f"The audio is longer than the {MAX_AUDIO_SECONDS // 60} minute limit.")
            if sound.frames * sound.channels > MAX_DECODED_SAMPLES:
                raise InputError("The audio has more samples than 10 minutes of 48 kHz stereo; downsample it.")
            samples = sound.read(dtype="float32", always_2d=True)
            source_rate = sound.samplerate
    except RuntimeError:  # soundfile.LibsndfileError and its older equivalents
        raise InputError("The audio could not be decoded; send WAV, FLAC or OGG.") from None
    if len(samples) / source_rate < MIN_AUDIO_SECONDS:
        raise InputError(f"The audio is shorter than {MIN_AUDIO_SECONDS} seconds.")
    mono = samples.mean(axis=1)
    if not np.all(np.isfinite(mono)):
        raise InputError("The audio contains invalid samples.")
    return np.clip(resample(mono, source_rate), -1.0, 1.0).astype(np.float32)

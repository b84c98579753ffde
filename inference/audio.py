"""Turn request audio (base64 or bytes) into 16 kHz mono float32 samples, within documented limits."""

from __future__ import annotations

import base64
import binascii
import io
from math import gcd

import numpy as np

from .errors import InputError

SAMPLE_RATE = 16000
MAX_AUDIO_SECONDS = 60 * 60
MIN_AUDIO_SECONDS = 0.1
# Encoded sizes. audio_url: an hour of 16 kHz 16-bit WAV fits (115 MB), or of any compressed format. In
# audio_base64 RunPod's request limits (10 MB for /run, 20 MB for /runsync) bind before this one.
MAX_URL_AUDIO_BYTES = 256 * 1024 * 1024
MAX_BASE64_AUDIO_BYTES = 25 * 1024 * 1024
# Bounds the memory decoding takes: channels are mixed block by block, so at most an hour of 48 kHz as
# float32 (0.7 GB) is held before resampling.
MAX_DECODED_FRAMES = MAX_AUDIO_SECONDS * 48000
DECODE_BLOCK_FRAMES = 1 << 20


def decode_base64_audio(text: str) -> bytes:
    """Standard base64; line breaks and a `data:audio/...;base64,` prefix are accepted."""
    if text.startswith("data:") and "," in text[:100]:
        text = text.split(",", 1)[1]
    if len(text) > (MAX_BASE64_AUDIO_BYTES // 3 + 1) * 4 * 1.05:  # 5 % slack for line breaks
        raise InputError(f"audio_base64 is larger than the {MAX_BASE64_AUDIO_BYTES // 2**20} MB limit.")
    try:
        data = base64.b64decode("".join(text.split()), validate=True)
    except (binascii.Error, ValueError):
        raise InputError("audio_base64 is not valid base64.") from None
    if not data:
        raise InputError("audio_base64 is empty.")
    if len(data) > MAX_BASE64_AUDIO_BYTES:
        raise InputError(f"audio_base64 is larger than the {MAX_BASE64_AUDIO_BYTES // 2**20} MB limit.")
    return data


def resample(samples: np.ndarray, source_rate: int, target_rate: int = SAMPLE_RATE) -> np.ndarray:
    if source_rate == target_rate:
        return samples
    from scipy.signal import resample_poly

    divisor = gcd(source_rate, target_rate)
    return resample_poly(samples, target_rate // divisor, source_rate // divisor).astype(np.float32, copy=False)


def mixed_down(sound) -> np.ndarray:
    """The channels' mean, read block by block into one array of the length the file declares (more, where
    that was an estimate: MP3)."""
    mono, filled, beyond = np.empty(sound.frames, dtype=np.float32), 0, []
    for block in sound.blocks(DECODE_BLOCK_FRAMES, dtype="float32", always_2d=True):
        mixed = block.mean(axis=1)
        fits = min(len(mixed), len(mono) - filled)
        mono[filled : filled + fits] = mixed[:fits]
        filled += fits
        if fits < len(mixed):
            beyond.append(mixed[fits:])
    return np.concatenate([mono[:filled], *beyond]) if beyond else mono[:filled]


def decode_audio(data: bytes) -> np.ndarray:
    """Audio that libsndfile reads (WAV, FLAC, OGG, MP3, ...) -> 16 kHz mono float32 in [-1, 1]."""
    import soundfile

    if len(data) > MAX_URL_AUDIO_BYTES:
        raise InputError(f"The audio is larger than the {MAX_URL_AUDIO_BYTES // 2**20} MB limit.")
    try:
        with soundfile.SoundFile(io.BytesIO(data)) as sound:
            if sound.samplerate <= 0 or sound.frames <= 0:
                raise InputError("The audio contains no samples.")
            if sound.frames / sound.samplerate > MAX_AUDIO_SECONDS:
                raise InputError(f"The audio is longer than the {MAX_AUDIO_SECONDS // 60} minute limit.")
            if sound.frames > MAX_DECODED_FRAMES:
                raise InputError(
                    f"The audio has more samples than {MAX_AUDIO_SECONDS // 60} minutes at 48 kHz; downsample it."
                )
            mono = mixed_down(sound)
            source_rate = sound.samplerate
    except RuntimeError:  # soundfile.LibsndfileError and its older equivalents
        raise InputError("The audio could not be decoded; send WAV, FLAC, OGG or MP3.") from None
    if len(mono) / source_rate < MIN_AUDIO_SECONDS:
        raise InputError(f"The audio is shorter than {MIN_AUDIO_SECONDS} seconds.")
    if not np.all(np.isfinite(mono)):
        raise InputError("The audio contains invalid samples.")
    audio = resample(mono, source_rate)
    return np.clip(audio, -1.0, 1.0, out=audio)

"""Silero VAD (v5 interface) on onnxruntime: speech probabilities per 32 ms chunk, then speech segments.

The model is stateful: each call takes 512 new samples at 16 kHz preceded by the previous chunk's last
64 samples, plus the recurrent state returned by the call before (as silero-vad's own OnnxWrapper).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

SAMPLE_RATE = 16000
CHUNK_SAMPLES = 512
CONTEXT_SAMPLES = 64
STATE_SHAPE = (2, 1, 128)

# silero-vad's get_speech_timestamps defaults.
DEFAULT_THRESHOLD = 0.5
MIN_SPEECH_SECONDS = 0.25
MIN_SILENCE_SECONDS = 0.1
SPEECH_PAD_SECONDS = 0.03


def onnx_providers(available: list[str]) -> list[str]:
    """CUDA where onnxruntime-gpu provides it, else CPU."""
    if "CUDAExecutionProvider" in available:
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    return ["CPUExecutionProvider"]


def _create_session(model_path: Path):
    os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")
    import onnxruntime

    options = onnxruntime.SessionOptions()
    # One 576-sample chunk at a time: threads would only add synchronisation overhead.
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    providers = onnx_providers(onnxruntime.get_available_providers())
    return onnxruntime.InferenceSession(str(model_path), sess_options=options, providers=providers)


@dataclass(frozen=True)
class Segment:
    start: float  # seconds
    end: float


class SileroVad:
    def __init__(self, model_path: str | Path):
        self.session = _create_session(Path(model_path))

    def speech_probabilities(self, audio: np.ndarray) -> np.ndarray:
        """Probability of speech for each consecutive 512-sample chunk (the last one zero padded)."""
        n_chunks = -(-len(audio) // CHUNK_SAMPLES)
        padded = np.zeros(CONTEXT_SAMPLES + n_chunks * CHUNK_SAMPLES, dtype=np.float32)
        padded[CONTEXT_SAMPLES : CONTEXT_SAMPLES + len(audio)] = audio
        state = np.zeros(STATE_SHAPE, dtype=np.float32)
        sample_rate = np.array(SAMPLE_RATE, dtype=np.int64)
        probabilities = np.empty(n_chunks, dtype=np.float32)
        for index in range(n_chunks):
            start = index * CHUNK_SAMPLES
            window = padded[start : start + CONTEXT_SAMPLES + CHUNK_SAMPLES][None, :]
            output, state = self.session.run(None, {"input": window, "state": state, "sr": sample_rate})
            probabilities[index] = output[0, 0]
        return probabilities

    def speech_segments(self, audio: np.ndarray, threshold: float = DEFAULT_THRESHOLD) -> list[Segment]:
        return segments_from_probabilities(self.speech_probabilities(audio), len(audio), threshold)


def segments_from_probabilities(
    probabilities: np.ndarray, n_samples: int, threshold: float = DEFAULT_THRESHOLD
) -> list[Segment]:
    """silero-vad's hysteresis: speech starts above `threshold`, ends after 100 ms below threshold - 0.15;
    segments under 250 ms are dropped and the rest padded by 30 ms (half the gap when gaps are short)."""
    end_threshold = max(threshold - 0.15, 0.01)
    min_speech = MIN_SPEECH_SECONDS * SAMPLE_RATE
    min_silence = MIN_SILENCE_SECONDS * SAMPLE_RATE
    pad = int(SPEECH_PAD_SECONDS * SAMPLE_RATE)

    spans: list[list[int]] = []
    speech_start = None
    silence_start = None
    for index, probability in enumerate(probabilities):
        sample = index * CHUNK_SAMPLES
        if probability >= threshold:
            silence_start = None
            if speech_start is None:
                speech_start = sample
        elif speech_start is not None and probability < end_threshold:
            silence_start = sample if silence_start is None else silence_start
            if sample - silence_start >= min_silence:
                if silence_start - speech_start > min_speech:
                    spans.append([speech_start, silence_start])
                speech_start = silence_start = None
    if speech_start is not None and n_samples - speech_start > min_speech:
        spans.append([speech_start, n_samples])

    for index, span in enumerate(spans):
        if index == 0:
            span[0] = max(0, span[0] - pad)
        if index + 1 < len(spans):
            following = spans[index + 1]
            gap = following[0] - span[1]
            widen = gap // 2 if gap < 2 * pad else pad
            span[1] += widen
            following[0] = max(0, following[0] - widen)
        else:
            span[1] = min(n_samples, span[1] + pad)
    return [Segment(round(start / SAMPLE_RATE, 3), round(end / SAMPLE_RATE, 3)) for start, end in spans]

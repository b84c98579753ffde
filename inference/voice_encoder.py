"""Resemblyzer's speaker encoder (GE2E, 256-d d-vectors) ported to numpy.

Same network and features as resemblyzer 0.1.4: 40 mel bands of a 25 ms / 10 ms power spectrogram
(librosa's Slaney filterbank), a 3-layer LSTM (40 -> 256), a 256 -> 256 linear layer, ReLU and L2
normalisation; an utterance is cut into partials of 160 frames (1.6 s) at 1.3 partials per second
and its embedding is the normalised mean of the partial embeddings.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .lstm import lstm_layer, lstm_weights
from .torch_checkpoint import load_checkpoint

SAMPLE_RATE = 16000
MEL_WINDOW_SAMPLES = 400  # 25 ms
MEL_HOP_SAMPLES = 160  # 10 ms
MEL_BANDS = 40
PARTIAL_FRAMES = 160  # 1.6 s
PARTIALS_PER_SECOND = 1.3
MIN_LAST_PARTIAL_COVERAGE = 0.75
LSTM_LAYERS = 3
EMBEDDING_SIZE = 256
# Partials per LSTM pass: bounds memory (the input projection is batch x 160 x 1024 floats per layer).
BATCH_PARTIALS = 64


def _hz_to_slaney_mel(hz: np.ndarray) -> np.ndarray:
    hz = np.asarray(hz, dtype=np.float64)
    linear_step = 200.0 / 3
    log_start_hz, log_step = 1000.0, np.log(6.4) / 27.0
    mel = hz / linear_step
    above = hz >= log_start_hz
    mel[above] = log_start_hz / linear_step + np.log(hz[above] / log_start_hz) / log_step
    return mel


def _slaney_mel_to_hz(mel: np.ndarray) -> np.ndarray:
    mel = np.asarray(mel, dtype=np.float64)
    linear_step = 200.0 / 3
    log_start_hz, log_step = 1000.0, np.log(6.4) / 27.0
    log_start_mel = log_start_hz / linear_step
    hz = mel * linear_step
    above = mel >= log_start_mel
    hz[above] = log_start_hz * np.exp(log_step * (mel[above] - log_start_mel))
    return hz


def mel_filterbank(sample_rate: int = SAMPLE_RATE, n_fft: int = MEL_WINDOW_SAMPLES, bands: int = MEL_BANDS):
    """librosa.filters.mel's default filterbank (Slaney scale, Slaney area normalisation)."""
    fft_freqs = np.linspace(0, sample_rate / 2, 1 + n_fft // 2)
    edges = _slaney_mel_to_hz(np.linspace(0, _hz_to_slaney_mel(np.array([sample_rate / 2]))[0], bands + 2))
    widths = np.diff(edges)
    ramps = edges[:, None] - fft_freqs[None, :]
    rising = -ramps[:-2] / widths[:-1, None]
    falling = ramps[2:] / widths[1:, None]
    weights = np.maximum(0, np.minimum(rising, falling))
    weights *= (2.0 / (edges[2:] - edges[:-2]))[:, None]
    return weights.astype(np.float32)


_MEL_FILTERBANK = mel_filterbank()
# Periodic Hann window, as scipy.signal.get_window("hann", n) and librosa use.
_WINDOW = (0.5 - 0.5 * np.cos(2 * np.pi * np.arange(MEL_WINDOW_SAMPLES) / MEL_WINDOW_SAMPLES)).astype(np.float32)


def mel_spectrogram(wav: np.ndarray) -> np.ndarray:
    """(frames, 40) mel power spectrogram; frame i is centred on sample i * 160 (zero padded)."""
    half = MEL_WINDOW_SAMPLES // 2
    padded = np.pad(np.asarray(wav, dtype=np.float32), (half, half))
    n_frames = 1 + (len(padded) - MEL_WINDOW_SAMPLES) // MEL_HOP_SAMPLES
    frames = np.lib.stride_tricks.sliding_window_view(padded, MEL_WINDOW_SAMPLES)[::MEL_HOP_SAMPLES][:n_frames]
    power = np.abs(np.fft.rfft(frames * _WINDOW, axis=1)).astype(np.float32) ** 2
    return power @ _MEL_FILTERBANK.T


def partial_frame_starts(n_samples: int) -> list[int]:
    """First mel frame of each 160-frame partial covering an utterance of n_samples (resemblyzer's rule)."""
    n_frames = int(np.ceil((n_samples + 1) / MEL_HOP_SAMPLES))
    frame_step = int(np.round(SAMPLE_RATE / PARTIALS_PER_SECOND / MEL_HOP_SAMPLES))
    starts = list(range(0, max(1, n_frames - PARTIAL_FRAMES + frame_step + 1), frame_step))
    last_start_sample = starts[-1] * MEL_HOP_SAMPLES
    coverage = (n_samples - last_start_sample) / (PARTIAL_FRAMES * MEL_HOP_SAMPLES)
    if coverage < MIN_LAST_PARTIAL_COVERAGE and len(starts) > 1:
        starts.pop()
    return starts


def _l2_normalized(rows: np.ndarray) -> np.ndarray:
    # An all-zero row (ReLU can zero everything) stays zero instead of turning into NaNs.
    return rows / np.maximum(np.linalg.norm(rows, axis=1, keepdims=True), 1e-12)


class VoiceEncoder:
    def __init__(self, state: dict[str, np.ndarray]):
        self.layers = [lstm_weights(state, i) for i in range(LSTM_LAYERS)]
        self.linear_weight = np.ascontiguousarray(state["linear.weight"].T)
        self.linear_bias = state["linear.bias"]

    @classmethod
    def from_checkpoint(cls, path: str | Path) -> VoiceEncoder:
        return cls(load_checkpoint(path)["model_state"])

    def embed_mels(self, mels: np.ndarray) -> np.ndarray:
        """(batch, frames, 40) mel spectrograms -> (batch, 256) L2-normalised embeddings."""
        sequence = np.asarray(mels, dtype=np.float32)
        for layer in self.layers:
            sequence = lstm_layer(sequence, [layer])
        return _l2_normalized(np.maximum(sequence[:, -1] @ self.linear_weight + self.linear_bias, 0))

    def embed_utterances(self, wavs: list[np.ndarray], max_partials: int | None = None) -> np.ndarray:
        """(len(wavs), 256) utterance embeddings, as resemblyzer's embed_utterance, partials batched; with
        max_partials, at most that many partials per utterance, evenly spread."""
        partials, owners = [], []
        for index, wav in enumerate(wavs):
            starts = partial_frame_starts(len(wav))
            if max_partials and len(starts) > max_partials:
                starts = [starts[i] for i in np.linspace(0, len(starts) - 1, max_partials).round().astype(int)]
            needed = (starts[-1] + PARTIAL_FRAMES) * MEL_HOP_SAMPLES
            padded = np.pad(wav, (0, max(0, needed - len(wav))))
            mel = mel_spectrogram(padded)
            partials.extend(mel[start : start + PARTIAL_FRAMES] for start in starts)
            owners.extend([index] * len(starts))
        if not partials:
            return np.zeros((0, EMBEDDING_SIZE), dtype=np.float32)
        batches = [partials[i : i + BATCH_PARTIALS] for i in range(0, len(partials), BATCH_PARTIALS)]
        partial_embeds = np.concatenate([self.embed_mels(np.stack(batch)) for batch in batches])
        owners = np.asarray(owners)
        sums = np.zeros((len(wavs), EMBEDDING_SIZE), dtype=np.float32)
        np.add.at(sums, owners, partial_embeds)
        return _l2_normalized(sums)

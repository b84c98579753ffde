"""pyannote's speaker segmentation model (pyannote/segmentation-3.0, a PyanNet) ported to numpy.

For a 10 s chunk of 16 kHz audio it tells, every 270 samples (16.875 ms), which of up to three speakers
local to that chunk speak, at most two at once: SincNet (80 learned band-pass filters, then two
convolutions, each block max-pooled, instance-normalised and leaky-ReLU'd), four bidirectional LSTM layers
of 128 units, two linear layers and 7 "powerset" classes (nobody, one of the three, or two of them).
Frame i of a chunk is computed from its samples [270 i, 270 i + 991).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .lstm import lstm_layer, lstm_weights
from .parallel import parallel_map, threads
from .torch_checkpoint import load_checkpoint

SAMPLE_RATE = 16000
CHUNK_SAMPLES = 10 * SAMPLE_RATE
FRAME_SAMPLES = 270  # the product of SincNet's strides (10 * 3 * 3 * 3)
RECEPTIVE_FIELD_SAMPLES = 991
# Frame i is centred on sample 495 + 270 i: the samples nearest its centre start at FRAME_START_SAMPLES + 270 i.
FRAME_START_SAMPLES = RECEPTIVE_FIELD_SAMPLES // 2 - FRAME_SAMPLES // 2
SINC_STRIDE = 10
LSTM_LAYERS = 4
POOL = 3
NORM_EPS = 1e-5  # torch.nn.InstanceNorm1d's
LEAKY_SLOPE = 0.01  # torch.nn.functional.leaky_relu's
# Which local speakers each powerset class means.
POWERSET = np.array(
    [[0, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 1], [1, 1, 0], [1, 0, 1], [0, 1, 1]],
    dtype=bool,
)
# Chunks per pass: bounds memory (the LSTM input projection is 2 x batch x 589 x 512 floats).
BATCH_CHUNKS = 32
# Rows of the first convolution per matrix product: bounds the memory of its strided windows.
SINC_BLOCK_ROWS = 16384


def sinc_filters(state: dict[str, np.ndarray]) -> np.ndarray:
    """(80, 251) band-pass filters from the learned cut-offs, as asteroid-filterbanks' ParamSincFB: 40
    cosine (even) filters then 40 sine (odd) ones, each windowed and normalised by its band width."""
    prefix = "sincnet.conv1d.0.filterbank."
    window, n = state[prefix + "window_"].astype(np.float64), state[prefix + "n_"].astype(np.float64)
    low = 50.0 + np.abs(state[prefix + "low_hz_"].astype(np.float64))  # min_low_hz = 50
    high = np.clip(low + 50.0 + np.abs(state[prefix + "band_hz_"]), 50.0, SAMPLE_RATE / 2)  # min_band_hz = 50
    band = (high - low)[:, 0]
    ft_low, ft_high = low @ n, high @ n
    cos_left = (np.sin(ft_high) - np.sin(ft_low)) / (n / 2) * window
    sin_left = (np.cos(ft_low) - np.cos(ft_high)) / (n / 2) * window
    cos_filters = np.concatenate([cos_left, 2 * band[:, None], cos_left[:, ::-1]], axis=1)
    sin_filters = np.concatenate([sin_left, np.zeros((len(band), 1)), -sin_left[:, ::-1]], axis=1)
    filters = np.concatenate([cos_filters, sin_filters]) / (2 * np.concatenate([band, band])[:, None])
    return filters.astype(np.float32)


def _instance_norm(x: np.ndarray, weight: np.ndarray, bias: np.ndarray) -> np.ndarray:
    """torch.nn.InstanceNorm1d(affine=True) on (batch, time, channels): each channel of each item on its own."""
    mean = x.mean(axis=1, keepdims=True)
    variance = x.var(axis=1, keepdims=True)
    return (x - mean) / np.sqrt(variance + NORM_EPS) * weight + bias


def _leaky_relu(x: np.ndarray) -> np.ndarray:
    return np.where(x > 0, x, LEAKY_SLOPE * x)


def _max_pool(x: np.ndarray) -> np.ndarray:
    batch, steps, channels = x.shape
    steps -= steps % POOL
    return x[:, :steps].reshape(batch, steps // POOL, POOL, channels).max(axis=2)


def _conv(x: np.ndarray, weight: np.ndarray, bias: np.ndarray) -> np.ndarray:
    """torch.nn.Conv1d (stride 1, no padding) on (batch, time, channels); weight is (out, in, kernel). One
    product per kernel tap: no (batch, time, in * kernel) copy of the input."""
    kernel = weight.shape[2]
    steps = x.shape[1] - kernel + 1
    out = x[:, :steps] @ weight[:, :, 0].T
    for tap in range(1, kernel):
        out += x[:, tap : tap + steps] @ weight[:, :, tap].T
    return out + bias


def frame_samples(first: int, end: int) -> tuple[int, int]:
    """The samples whose nearest frame centre is among frames [first, end)."""
    return FRAME_START_SAMPLES + first * FRAME_SAMPLES, FRAME_START_SAMPLES + end * FRAME_SAMPLES


def frame_seconds(first: int, end: int, n_frames: int, duration: float) -> tuple[float, float]:
    """Start and end in seconds of frames [first, end) of the n_frames that cover `duration` s of audio. The
    first and last frames reach the audio's ends: no frame is nearest to its first and last ~22 ms."""
    a, b = frame_samples(first, end)
    start = 0.0 if first == 0 else min(duration, a / SAMPLE_RATE)
    stop = duration if end >= n_frames else min(duration, b / SAMPLE_RATE)
    return start, stop


def runs(mask: np.ndarray) -> list[tuple[int, int]]:
    """[first, last + 1) of each run of True."""
    edges = np.flatnonzero(np.diff(np.concatenate([[0], mask.astype(np.int8), [0]])))
    return list(zip(edges[::2].tolist(), edges[1::2].tolist(), strict=True))


def chunk_frames(n_samples: int = CHUNK_SAMPLES) -> int:
    """Output frames for n_samples of input (589 for a 10 s chunk)."""
    return (n_samples - RECEPTIVE_FIELD_SAMPLES) // FRAME_SAMPLES + 1


class SpeakerSegmentation:
    def __init__(self, state: dict[str, np.ndarray]):
        self.filters = sinc_filters(state)
        self.filter_sums = self.filters.sum(axis=1)
        self.wav_norm = (float(state["sincnet.wav_norm1d.weight"][0]), float(state["sincnet.wav_norm1d.bias"][0]))
        self.norms = [(state[f"sincnet.norm1d.{i}.weight"], state[f"sincnet.norm1d.{i}.bias"]) for i in range(3)]
        self.convs = [(state[f"sincnet.conv1d.{i}.weight"], state[f"sincnet.conv1d.{i}.bias"]) for i in (1, 2)]
        self.lstm = [[lstm_weights(state, i), lstm_weights(state, i, "_reverse")] for i in range(LSTM_LAYERS)]
        self.linear = [(state[f"linear.{i}.weight"].T.copy(), state[f"linear.{i}.bias"]) for i in range(2)]
        self.classifier = (state["classifier.weight"].T.copy(), state["classifier.bias"])

    @classmethod
    def from_checkpoint(cls, path: str | Path) -> SpeakerSegmentation:
        """pyannote/segmentation-3.0's pytorch_model.bin (a PyTorch Lightning checkpoint)."""
        return cls(load_checkpoint(path)["state_dict"])

    def _sinc_responses(self, audio: np.ndarray) -> np.ndarray:
        """(n, 80) responses of the raw band-pass filters every 10 samples: the convolution is linear, so
        each chunk's input normalisation can be applied to these afterwards."""
        windows = np.lib.stride_tricks.sliding_window_view(audio, self.filters.shape[1])[::SINC_STRIDE]
        return np.concatenate(
            [windows[i : i + SINC_BLOCK_ROWS] @ self.filters.T for i in range(0, len(windows), SINC_BLOCK_ROWS)]
        )

    def _first_block(self, responses: np.ndarray, chunks: np.ndarray, offsets: list[int]) -> np.ndarray:
        """SincNet's first block for each chunk (rows of `responses` from each of `offsets`): the input
        InstanceNorm1d, (x - m) / s * w + b, is affine, so it moves through the linear filters: the chunk's
        response is (w / s) * (r + (b s / w - m) * filter_sums); |w / s| then moves past abs and max-pool."""
        weight, bias = self.wav_norm
        means = chunks.mean(axis=1)
        scales = weight / np.sqrt(chunks.var(axis=1) + NORM_EPS)
        rows = (CHUNK_SAMPLES - self.filters.shape[1]) // SINC_STRIDE + 1
        pooled = np.empty((len(offsets), rows // POOL, self.filters.shape[0]), dtype=np.float32)
        for index, offset in enumerate(offsets):
            shifted = responses[offset : offset + rows] + (bias / scales[index] - means[index]) * self.filter_sums
            np.abs(shifted, out=shifted)
            pooled[index] = _max_pool(shifted[None])[0]
        pooled *= np.abs(scales)[:, None, None]
        return _leaky_relu(_instance_norm(pooled, *self.norms[0]))

    def _forward(self, x: np.ndarray) -> np.ndarray:
        """(chunks, frames', 80) output of the first block -> (chunks, frames, 7) powerset scores."""
        for (conv_weight, conv_bias), norm in zip(self.convs, self.norms[1:], strict=True):
            x = _leaky_relu(_instance_norm(_max_pool(_conv(x, conv_weight, conv_bias)), *norm))
        for directions in self.lstm:
            x = lstm_layer(x, directions)
        for linear_weight, linear_bias in self.linear:
            x = _leaky_relu(x @ linear_weight + linear_bias)
        return x @ self.classifier[0] + self.classifier[1]

    def __call__(self, audio: np.ndarray, starts: list[int]) -> np.ndarray:
        """(len(starts), 589, 7) powerset log-probabilities for each frame of the 10 s chunk that starts at
        each sample offset of `starts` (multiples of 10; zeros past the audio's end)."""
        audio = np.asarray(audio, dtype=np.float32)

        def scored(batch: list[int]) -> np.ndarray:
            # The filter responses of the span the batch covers, computed once for its overlapping chunks.
            low = min(batch)
            responses = self._sinc_responses(_span(audio, low, max(batch) + CHUNK_SAMPLES))
            chunks = np.stack([_span(audio, start, start + CHUNK_SAMPLES) for start in batch])
            return self._forward(
                self._first_block(responses, chunks, [(start - low) // SINC_STRIDE for start in batch])
            )

        # As many batches as there are threads to run them, so that a short request uses every core too.
        size = min(BATCH_CHUNKS, -(-len(starts) // threads()))
        batches = [starts[first : first + size] for first in range(0, len(starts), size)]
        scores = np.concatenate(parallel_map(scored, batches, "segmentation"))
        return scores - np.log(np.exp(scores).sum(axis=-1, keepdims=True))


def _span(audio: np.ndarray, start: int, end: int) -> np.ndarray:
    """Samples [start, end) of `audio`, zeros past its end (a copy of the audio would cost 0.23 GB an hour)."""
    piece = audio[start:end]
    return piece if len(piece) == end - start else np.pad(piece, (0, end - start - len(piece)))


def local_speakers(log_probabilities: np.ndarray, speech_bias: float = 0.0, overlap_bias: float = 0.0) -> np.ndarray:
    """(..., 7) powerset log-probabilities -> (..., 3) booleans: the most probable class's speakers, with
    `speech_bias` added to the log-odds of every class but silence and `overlap_bias` to those of the
    two-speaker classes (above 0: quieter and overlapping speech is kept)."""
    biased = log_probabilities.copy()
    biased[..., 0] -= speech_bias
    biased[..., POWERSET.sum(axis=1) == 2] += overlap_bias
    return POWERSET[np.argmax(biased, axis=-1)]


def speaker_probabilities(log_probabilities: np.ndarray) -> np.ndarray:
    """(..., 7) powerset log-probabilities -> (..., 3) float32: the probability that each local speaker speaks
    (the sum over the classes that include it)."""
    return np.exp(log_probabilities) @ POWERSET.astype(np.float32)

"""3D-Speaker's CAM++ speaker embedding model (iic/speech_campplus_sv_zh_en_16k-common_advanced) in numpy.

Same network and features as 3D-Speaker's speakerlab CAMPPlus (Apache-2.0): 80 log mel filterbank energies
as Kaldi computes them (25 ms Povey windows every 10 ms, pre-emphasis 0.97), each bin's mean over the
segment subtracted; a 2-D convolutional front end (FCM: 32 channels, the frequency axis strided down to
10 bands); a strided TDNN layer; three densely connected TDNN blocks (12, 24 and 16 layers) whose layers
each gate a local convolution with a context-aware mask (from the segment's mean and 100-frame means);
statistics pooling (mean and standard deviation) and a 192-d linear layer with batch norm. Batch norms
are in inference mode (running statistics). Arrays are (batch, time, channels) so that every convolution
is a sum of matrix products, one per kernel tap.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .torch_checkpoint import load_checkpoint

SAMPLE_RATE = 16000
FBANK_WINDOW = 400  # 25 ms
FBANK_HOP = 160  # 10 ms
FBANK_FFT = 512
FBANK_BINS = 80
FBANK_LOW_HZ = 20.0
PREEMPHASIS = 0.97
LOG_FLOOR = np.finfo(np.float32).eps  # Kaldi's and torchaudio's
BN_EPS = 1e-5  # torch.nn.BatchNorm's
BLOCKS = ((12, 1), (24, 2), (16, 2))  # (layers, dilation) of the three dense TDNN blocks
CONTEXT_SEGMENT = 100  # frames per segment of the context-aware mask's segment pooling
GROWTH = 32  # channels each dense TDNN layer adds
FEATURE_SIZE = 512  # channels of the frame features that are pooled
# Rows of the shifted copies one matrix product of the head's 2-d convolutions takes (2048 x 288 floats: 2.3 MB).
CONV_BLOCK_ROWS = 2048


def _kaldi_mel(hz):
    return 1127.0 * np.log(1.0 + np.asarray(hz, dtype=np.float64) / 700.0)


def kaldi_mel_banks() -> np.ndarray:
    """(80, 257) triangular filters on the mel scale, as Kaldi's MelBanks (and torchaudio's get_mel_banks):
    equally spaced in mel from 20 Hz to the Nyquist frequency, evaluated on the FFT bins' mel values."""
    low, high = _kaldi_mel(FBANK_LOW_HZ), _kaldi_mel(SAMPLE_RATE / 2)
    delta = (high - low) / (FBANK_BINS + 1)
    left = low + np.arange(FBANK_BINS)[:, None] * delta
    mel = _kaldi_mel(np.arange(FBANK_FFT // 2) * SAMPLE_RATE / FBANK_FFT)[None, :]
    rising, falling = (mel - left) / delta, (left + 2 * delta - mel) / delta
    banks = np.maximum(0.0, np.minimum(rising, falling))
    return np.pad(banks, ((0, 0), (0, 1))).astype(np.float32)  # no weight on the Nyquist bin


_MEL_BANKS = kaldi_mel_banks()
_POVEY = ((0.5 - 0.5 * np.cos(2 * np.pi * np.arange(FBANK_WINDOW) / (FBANK_WINDOW - 1))) ** 0.85).astype(np.float32)


def fbank(wav: np.ndarray) -> np.ndarray:
    """(frames, 80) Kaldi log mel filterbank energies (no dither, snip_edges): frame i is samples
    [160 i, 160 i + 400)."""
    wav = np.asarray(wav, dtype=np.float32)
    if len(wav) < FBANK_WINDOW:
        return np.zeros((0, FBANK_BINS), dtype=np.float32)
    frames = np.lib.stride_tricks.sliding_window_view(wav, FBANK_WINDOW)[::FBANK_HOP]
    frames = frames - frames.mean(axis=1, keepdims=True)
    emphasised = np.empty_like(frames)
    emphasised[:, 1:] = frames[:, 1:] - PREEMPHASIS * frames[:, :-1]
    emphasised[:, 0] = frames[:, 0] * (1 - PREEMPHASIS)
    spectrum = np.fft.rfft(emphasised * _POVEY, n=FBANK_FFT, axis=1)
    power = (spectrum.real**2 + spectrum.imag**2).astype(np.float32)
    return np.log(np.maximum(power @ _MEL_BANKS.T, LOG_FLOOR))


def _batch_norm(state: dict[str, np.ndarray], prefix: str) -> tuple[np.ndarray, np.ndarray]:
    """Inference-mode BatchNorm as x * scale + shift."""
    scale = 1.0 / np.sqrt(state[prefix + "running_var"] + BN_EPS)
    shift = -state[prefix + "running_mean"] * scale
    if prefix + "weight" in state:  # affine
        scale, shift = scale * state[prefix + "weight"], shift * state[prefix + "weight"] + state[prefix + "bias"]
    return scale.astype(np.float32), shift.astype(np.float32)


def _relu_norm(x: np.ndarray, norm: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
    y = x * norm[0]
    y += norm[1]
    return np.maximum(y, 0.0, out=y)


def _zero_padded(x: np.ndarray, widths: tuple[int, ...]) -> np.ndarray:
    """x with zeros on both sides of its last len(widths) axes, widths[i] on each side of the i-th of them: np.pad's
    zeros without its overhead, which was a sixth of a pass over a short piece of speech (some sixty calls)."""
    widths = (0,) * (x.ndim - len(widths)) + widths
    padded = np.zeros([n + 2 * w for n, w in zip(x.shape, widths, strict=True)], dtype=x.dtype)
    padded[tuple(slice(w, w + n) for n, w in zip(x.shape, widths, strict=True))] = x
    return padded


def _taps(weight: np.ndarray) -> np.ndarray:
    """torch Conv1d weight (out, in, kernel) -> (kernel, in, out) for x @ taps[k]."""
    return np.ascontiguousarray(weight.transpose(2, 1, 0)).astype(np.float32)


def _conv1d(x: np.ndarray, taps: np.ndarray, dilation: int = 1, stride: int = 1) -> np.ndarray:
    """torch Conv1d with 'same' padding ((kernel - 1) / 2 * dilation each side) on (batch, time, in)."""
    kernel = len(taps)
    pad = (kernel - 1) // 2 * dilation
    steps = x.shape[1]
    if kernel == 1:
        return x[:, ::stride] @ taps[0]
    padded = _zero_padded(x, (pad, 0))
    out_steps = (steps + 2 * pad - dilation * (kernel - 1) - 1) // stride + 1
    span = (out_steps - 1) * stride + 1
    out = padded[:, :span:stride] @ taps[0]
    for tap in range(1, kernel):
        start = tap * dilation
        out += padded[:, start : start + span : stride] @ taps[tap]
    return out


def _conv2d(x: np.ndarray, weight: np.ndarray, stride: int) -> np.ndarray:
    """torch Conv2d (padding 1 for 3x3, 0 for 1x1; stride (stride, 1)) on (batch, freq, time, in): for a few
    output bands at a time, the nine shifted copies side by side and one matrix product. Those copies are nine
    times the input: built for all bands at once, they leave the CPU's cache and the convolution ran 2.3-2.7
    times slower."""
    out_channels, in_channels, kernel, _ = weight.shape
    if kernel == 1:
        return x[:, ::stride] @ weight[:, :, 0, 0].T
    flat = weight.transpose(2, 3, 1, 0).reshape(9 * in_channels, out_channels)  # rows: (kf, kt, in)
    bands, steps = (x.shape[1] - 1) // stride + 1, x.shape[2]
    block = max(1, CONV_BLOCK_ROWS // steps)
    out = np.empty((x.shape[0], bands, steps, out_channels), dtype=np.float32)
    columns = np.empty((min(block, bands), steps, 3, 3, in_channels), dtype=np.float32)
    for item, plane in enumerate(x):
        padded = _zero_padded(plane, (1, 1, 0))
        for first in range(0, bands, block):
            count = min(block, bands - first)
            for df in range(3):
                rows = padded[first * stride + df : (first + count - 1) * stride + df + 1 : stride]
                for dt in range(3):
                    columns[:count, :, df, dt] = rows[:, dt : dt + steps]
            product = columns[:count].reshape(-1, 9 * in_channels) @ flat
            out[item, first : first + count] = product.reshape(count, steps, out_channels)
    return out


class CamPlusPlus:
    def __init__(self, state: dict[str, np.ndarray]):
        s = state
        self.head = self._head(s)
        self.tdnn = (_taps(s["xvector.tdnn.linear.weight"]), _batch_norm(s, "xvector.tdnn.nonlinear.batchnorm."))
        self.blocks = []
        for index, (layers, dilation) in enumerate(BLOCKS, start=1):
            block = []
            for layer in range(1, layers + 1):
                p = f"xvector.block{index}.tdnnd{layer}."
                block.append(
                    (
                        _batch_norm(s, p + "nonlinear1.batchnorm."),
                        _taps(s[p + "linear1.weight"])[0],
                        _batch_norm(s, p + "nonlinear2.batchnorm."),
                        _taps(s[p + "cam_layer.linear_local.weight"]),
                        (_taps(s[p + "cam_layer.linear1.weight"])[0], s[p + "cam_layer.linear1.bias"]),
                        (_taps(s[p + "cam_layer.linear2.weight"])[0], s[p + "cam_layer.linear2.bias"]),
                    )
                )
            transit = (
                _batch_norm(s, f"xvector.transit{index}.nonlinear.batchnorm."),
                _taps(s[f"xvector.transit{index}.linear.weight"])[0],
            )
            self.blocks.append((block, dilation, transit))
        self.out_norm = _batch_norm(s, "xvector.out_nonlinear.batchnorm.")
        self.dense = (_taps(s["xvector.dense.linear.weight"])[0], _batch_norm(s, "xvector.dense.nonlinear.batchnorm."))

    @staticmethod
    def _head(s: dict[str, np.ndarray]) -> list:
        """FCM: conv, two residual layers of two blocks (the first strided in frequency), strided conv."""
        blocks = []
        for layer in (1, 2):
            for block in (0, 1):
                p = f"head.layer{layer}.{block}."
                shortcut = (s[p + "shortcut.0.weight"], _batch_norm(s, p + "shortcut.1.")) if block == 0 else None
                stride = 2 if block == 0 else 1
                blocks.append(
                    (
                        stride,
                        (s[p + "conv1.weight"], _batch_norm(s, p + "bn1.")),
                        (s[p + "conv2.weight"], _batch_norm(s, p + "bn2.")),
                        shortcut,
                    )
                )
        return [
            (s["head.conv1.weight"], _batch_norm(s, "head.bn1.")),
            blocks,
            (s["head.conv2.weight"], _batch_norm(s, "head.bn2.")),
        ]

    @classmethod
    def from_checkpoint(cls, path: str | Path) -> CamPlusPlus:
        """3D-Speaker's campplus_cn_en_common.pt (a plain state dict)."""
        return cls(load_checkpoint(path))

    def _front(self, features: np.ndarray) -> np.ndarray:
        """(batch, frames, 80) -> (batch, frames, 320)."""
        (conv1, norm1), blocks, (conv2, norm2) = self.head
        x = features.transpose(0, 2, 1)[..., None]  # (batch, freq, time, 1)
        x = np.maximum(_conv2d(x, conv1, 1) * norm1[0] + norm1[1], 0.0)
        for stride, (w1, n1), (w2, n2), shortcut in blocks:
            out = np.maximum(_conv2d(x, w1, stride) * n1[0] + n1[1], 0.0)
            out = _conv2d(out, w2, 1) * n2[0] + n2[1]
            if shortcut is not None:
                out += _conv2d(x, shortcut[0], stride) * shortcut[1][0] + shortcut[1][1]
            else:
                out += x
            x = np.maximum(out, 0.0)
        x = np.maximum(_conv2d(x, conv2, 2) * norm2[0] + norm2[1], 0.0)  # (batch, 10, time, 32)
        batch, bands, steps, channels = x.shape
        return x.transpose(0, 2, 3, 1).reshape(batch, steps, channels * bands)  # channel-major, as torch

    def frame_features(self, features: np.ndarray) -> np.ndarray:
        """(batch, frames, 80) mean-normalised filterbanks -> (batch, (frames + 1) // 2, 512): the network up to
        its statistics pooling; output frame t is centred on input frame 2 t."""
        x = self._front(np.asarray(features, dtype=np.float32))
        taps, norm = self.tdnn
        x = _relu_norm(_conv1d(x, taps, stride=2), norm)
        for block, dilation, (transit_norm, transit) in self.blocks:
            grown = np.empty((*x.shape[:2], x.shape[2] + len(block) * GROWTH), dtype=np.float32)
            grown[..., : x.shape[2]] = x
            width = x.shape[2]
            for norm1, linear1, norm2, local, (w1, b1), (w2, b2) in block:
                hidden = _relu_norm(_relu_norm(grown[..., :width], norm1) @ linear1, norm2)
                # The mask is the same for all frames of a segment: computed once per segment.
                context = hidden.mean(axis=1, keepdims=True) + _segment_means(hidden)
                mask = 1.0 / (1.0 + np.exp(-(np.maximum(context @ w1 + b1, 0.0) @ w2 + b2)))
                local_features = _conv1d(hidden, local, dilation)
                grown[..., width : width + GROWTH] = local_features * _per_frame(mask, local_features.shape[1])
                width += GROWTH
            x = _relu_norm(grown, transit_norm) @ transit
        return _relu_norm(x, self.out_norm)

    def embed_statistics(self, statistics: np.ndarray) -> np.ndarray:
        """(n, 1024) means then standard deviations of frame features -> (n, 192) embeddings."""
        linear, norm = self.dense
        return (statistics @ linear) * norm[0] + norm[1]

    def embed_features(self, features: np.ndarray) -> np.ndarray:
        """(batch, frames, 80) mean-normalised filterbanks -> (batch, 192) embeddings (not normalised), as
        3D-Speaker's CAMPPlus.forward."""
        x = self.frame_features(features)
        std = x.std(axis=1, ddof=1) if x.shape[1] > 1 else np.full(x.shape[::2], 1e-2, dtype=np.float32)
        return self.embed_statistics(np.concatenate([x.mean(axis=1), std], axis=1))


def _segment_means(x: np.ndarray) -> np.ndarray:
    """(batch, segments, channels): the mean of each 100-frame segment of x's frames (the last one shorter), as
    torch's avg_pool1d with ceil_mode."""
    steps = x.shape[1]
    if steps <= CONTEXT_SEGMENT:
        return x.mean(axis=1, keepdims=True)
    starts = np.arange(0, steps, CONTEXT_SEGMENT)
    return np.add.reduceat(x, starts, axis=1) / np.diff(np.append(starts, steps))[None, :, None]


def _per_frame(per_segment: np.ndarray, steps: int) -> np.ndarray:
    """(batch, segments, channels) -> each frame's segment's row: (batch, steps, channels), or (batch, 1,
    channels) that broadcasts as such where there is one segment."""
    if per_segment.shape[1] == 1:
        return per_segment
    return np.repeat(per_segment, CONTEXT_SEGMENT, axis=1)[:, :steps]

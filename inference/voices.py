"""Voice features for diarization: CAM++ over the speech, one speaker's stretch at a time, and embeddings
pooled from them.

CAM++ is not frame-local: each layer's context-aware mask averages over its whole input (and over 100-frame
segments), so a frame's features carry the voices around it. Run over blocks that hold two people, they
blend them: on the AMI `trn` excerpts the mean cosine similarity between embeddings of two different
speakers' lone speech fell from 0.26 to 0.12 when each stretch between two speaker changes got its own pass
(same-speaker pairs stayed at 0.9). So the speech is cut wherever the segmentation model's speakers change,
and every piece goes through CAM++ on its own.
"""

from __future__ import annotations

import numpy as np

from .campplus import FBANK_HOP, FBANK_WINDOW, FEATURE_SIZE, CamPlusPlus, fbank
from .parallel import parallel_map
from .segmentation import FRAME_SAMPLES, FRAME_START_SAMPLES, frame_samples, runs

# Pieces shorter than this (0.25 s) join a neighbour: too short to say much about a voice.
MIN_PIECE_FRAMES = 15
# Pieces longer than this many filterbank frames (6 s) go through CAM++ in equal blocks: bounds the memory of
# its convolutional front end.
BLOCK_FRAMES = 600
# Window embeddings are computed for this many feature rows (80 s of speech) at a time.
WINDOW_BLOCK_ROWS = 4096


def pieces(speech: np.ndarray, changes: np.ndarray) -> list[tuple[int, int]]:
    """Frame ranges [first, end) of the runs of `speech`, cut where `changes` is on; a piece under
    MIN_PIECE_FRAMES joins the piece before it (the one after it, if it opens its run)."""
    joined: list[tuple[int, int]] = []
    for first, end in runs(speech):
        cuts = [first, *(np.flatnonzero(changes[first + 1 : end]) + first + 1).tolist(), end]
        for a, b in zip(cuts[:-1], cuts[1:], strict=True):
            if joined and joined[-1][1] == a and min(b - a, a - joined[-1][0]) < MIN_PIECE_FRAMES:
                joined[-1] = (joined[-1][0], b)
            else:
                joined.append((a, b))
    return joined


def _blocks(energies: np.ndarray) -> list[tuple[int, np.ndarray]]:
    """A piece's filterbank energies in blocks of about BLOCK_FRAMES (lengths differing by one at most), each
    with its first frame."""
    n_blocks = max(1, round(len(energies) / BLOCK_FRAMES))
    bounds = np.linspace(0, len(energies), n_blocks + 1).astype(int)
    return [(int(low), energies[low:high]) for low, high in zip(bounds[:-1], bounds[1:], strict=True)]


def voice_features(
    audio: np.ndarray, frame_ranges: list[tuple[int, int]], encoder: CamPlusPlus
) -> tuple[np.ndarray, np.ndarray]:
    """CAM++ frame features (a 512-d one every 20 ms) of each range of segmentation frames, each range on its
    own: (n, 512) features and the segmentation frame each is centred on (ascending)."""
    spans = []
    for first, end in frame_ranges:
        a, b = (min(max(s, 0), len(audio)) for s in frame_samples(first, end))
        if b - a >= FBANK_WINDOW:
            spans.append((a, first, end, fbank(audio[a:b])))
    if not spans:
        return np.zeros((0, FEATURE_SIZE), dtype=np.float32), np.zeros(0, dtype=int)
    mean = np.concatenate([energies for *_, energies in spans]).mean(axis=0)
    blocks = [
        (start, first, end, low, block) for start, first, end, energies in spans for low, block in _blocks(energies)
    ]
    # Block by block, so that one long piece is spread over the cores too; the longest first, so that no core is
    # left with a long one at the end while the others wait.
    longest_first = sorted(range(len(blocks)), key=lambda index: -len(blocks[index][-1]))
    computed = parallel_map(
        lambda index: encoder.frame_features((blocks[index][-1] - mean)[None])[0], longest_first, "voices"
    )
    by_index = dict(zip(longest_first, computed, strict=True))
    features = [by_index[index] for index in range(len(blocks))]
    frames = []
    for start, first, end, low, block in blocks:
        # CAM++'s output t is centred on filterbank frame 2 t of its input.
        samples = start + (low + 2 * np.arange((len(block) + 1) // 2)) * FBANK_HOP + FBANK_WINDOW // 2
        frames.append(np.clip((samples - FRAME_START_SAMPLES) // FRAME_SAMPLES, first, end - 1))
    return np.concatenate(features), np.concatenate(frames)


def normalized(rows: np.ndarray) -> np.ndarray:
    return rows / np.maximum(np.linalg.norm(rows, axis=1, keepdims=True), 1e-12)


def pooled(features: np.ndarray, rows: list[np.ndarray], encoder: CamPlusPlus) -> np.ndarray:
    """One normalised embedding per set of feature rows (zeros for an empty set)."""
    statistics = np.zeros((len(rows), 2 * FEATURE_SIZE), dtype=np.float32)
    for index, selected in enumerate(rows):
        if len(selected):
            chosen = features[selected]
            std = chosen.std(axis=0, ddof=1) if len(chosen) > 1 else np.zeros(FEATURE_SIZE)
            statistics[index] = np.concatenate([chosen.mean(axis=0), std])
    embeddings = normalized(encoder.embed_statistics(statistics))
    embeddings[[not len(selected) for selected in rows]] = 0.0
    return embeddings


def window_embeddings(features: np.ndarray, half: int, encoder: CamPlusPlus) -> np.ndarray:
    """A normalised embedding for every feature row, pooled from rows [i - half, i + half]."""
    n = len(features)
    embeddings = [encoder.embed_statistics(np.zeros((0, 2 * FEATURE_SIZE), dtype=np.float32))]  # for no rows
    # In blocks of rows: the float64 running sums of an hour of speech would take gigabytes at once.
    for start in range(0, n, WINDOW_BLOCK_ROWS):
        stop = min(n, start + WINDOW_BLOCK_ROWS)
        low, high = np.clip(np.arange(start, stop) - half, 0, n), np.clip(np.arange(start, stop) + half + 1, 0, n)
        origin = int(low[0])
        values = features[origin : high[-1]].astype(np.float64)
        sums = np.concatenate([np.zeros((1, values.shape[1])), np.cumsum(values, axis=0)])
        squares = np.concatenate([np.zeros((1, values.shape[1])), np.cumsum(values * values, axis=0)])
        low, high = low - origin, high - origin
        counts = (high - low)[:, None]
        mean = (sums[high] - sums[low]) / counts
        spread = np.maximum((squares[high] - squares[low]) / counts - mean**2, 0.0) * counts / np.maximum(counts - 1, 1)
        statistics = np.concatenate([mean, np.sqrt(spread)], axis=1).astype(np.float32)
        embeddings.append(encoder.embed_statistics(statistics))
    return normalized(np.concatenate(embeddings))

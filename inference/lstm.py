"""One layer of torch.nn.LSTM (batch_first) in numpy, one direction or both."""

from __future__ import annotations

import numpy as np

# (input_weight (features, 4 * hidden), hidden_weight (hidden, 4 * hidden), bias (4 * hidden)), from torch's
# weight_ih, weight_hh and bias_ih + bias_hh, with the gates reordered from torch's i, f, g, o to i, f, o, g and
# those of the three sigmoid gates halved: sigmoid(x) = (1 + tanh(x / 2)) / 2, so one tanh over all four gates
# does every gate's non-linearity. Halving is exact in floating point: the results are those of torch's order.
LstmWeights = tuple[np.ndarray, np.ndarray, np.ndarray]


def lstm_weights(state: dict[str, np.ndarray], layer: int, suffix: str = "") -> LstmWeights:
    """The weights of `lstm.*_l{layer}{suffix}` in a torch state dict (suffix "_reverse": the backward ones)."""
    hidden_size = state[f"lstm.weight_hh_l{layer}{suffix}"].shape[1]
    i, f, g, o = (np.arange(hidden_size) + k * hidden_size for k in range(4))
    order = np.concatenate([i, f, o, g])
    scale = np.repeat(np.array([0.5, 0.5, 0.5, 1.0], dtype=np.float32), hidden_size)

    def gates_last(weight: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(weight[order].T * scale)

    bias = state[f"lstm.bias_ih_l{layer}{suffix}"] + state[f"lstm.bias_hh_l{layer}{suffix}"]
    return (
        gates_last(state[f"lstm.weight_ih_l{layer}{suffix}"]),
        gates_last(state[f"lstm.weight_hh_l{layer}{suffix}"]),
        bias[order] * scale,
    )


def lstm_layer(sequence: np.ndarray, directions: list[LstmWeights]) -> np.ndarray:
    """(batch, steps, features) -> (batch, steps, len(directions) * hidden): the forward direction, and with
    a second set of weights the backward one too, both in the same loop over time; outputs concatenated."""
    sequence = np.asarray(sequence, dtype=np.float32)
    batch, steps, _ = sequence.shape
    hidden_weights = np.stack([hidden_weight for _, hidden_weight, _ in directions])
    n, hidden_size = len(directions), hidden_weights.shape[1]
    # The input projection of every step at once, step-major so that each step reads one contiguous block;
    # only the recurrence has to loop.
    gates_in = np.empty((steps, n, batch, 4 * hidden_size), dtype=np.float32)
    for d, (input_weight, _, bias) in enumerate(directions):
        projected = (sequence @ input_weight + bias).transpose(1, 0, 2)
        gates_in[:, d] = projected[::-1] if d == 1 else projected
    hidden = np.zeros((n, batch, hidden_size), dtype=np.float32)
    cell = np.zeros_like(hidden)
    outputs = np.empty((steps, n, batch, hidden_size), dtype=np.float32)
    gates = np.empty((n, batch, 4 * hidden_size), dtype=np.float32)
    # Views of `gates`, made once: each step is a dozen small numpy calls, and per-call overhead (and the GIL
    # handed back and forth with the other threads') is as large as their arithmetic.
    ifo = gates[..., : 3 * hidden_size]
    i, f, o, g = np.split(gates, 4, axis=-1)
    for t in range(steps):
        np.matmul(hidden, hidden_weights, out=gates)
        gates += gates_in[t]
        np.tanh(gates, out=gates)
        ifo += 1.0
        ifo *= 0.5
        cell *= f
        np.multiply(i, g, out=i)
        cell += i
        hidden = outputs[t]
        np.tanh(cell, out=hidden)
        hidden *= o
    if n == 2:
        outputs[:, 1] = outputs[::-1, 1]
    return np.concatenate(list(outputs.transpose(1, 2, 0, 3)), axis=-1)

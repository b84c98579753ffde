"""One layer of torch.nn.LSTM (batch_first) in numpy, one direction or both."""

from __future__ import annotations

import numpy as np

# (input_weight (features, 4 * hidden), hidden_weight (hidden, 4 * hidden), bias (4 * hidden)): torch's
# weight_ih.T, weight_hh.T and bias_ih + bias_hh, gates in torch's order i, f, g, o.
LstmWeights = tuple[np.ndarray, np.ndarray, np.ndarray]


def lstm_weights(state: dict[str, np.ndarray], layer: int, suffix: str = "") -> LstmWeights:
    """The weights of `lstm.*_l{layer}{suffix}` in a torch state dict (suffix "_reverse": the backward ones)."""
    return (
        np.ascontiguousarray(state[f"lstm.weight_ih_l{layer}{suffix}"].T),
        np.ascontiguousarray(state[f"lstm.weight_hh_l{layer}{suffix}"].T),
        state[f"lstm.bias_ih_l{layer}{suffix}"] + state[f"lstm.bias_hh_l{layer}{suffix}"],
    )


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * x))


def lstm_layer(sequence: np.ndarray, directions: list[LstmWeights]) -> np.ndarray:
    """(batch, steps, features) -> (batch, steps, len(directions) * hidden): the forward direction, and with
    a second set of weights the backward one too, both in the same loop over time; outputs concatenated."""
    sequence = np.asarray(sequence, dtype=np.float32)
    batch, steps, _ = sequence.shape
    # The input projection of every step at once; only the recurrence has to loop.
    gates_in = np.stack([sequence @ input_weight + bias for input_weight, _, bias in directions])
    if len(directions) == 2:
        gates_in[1] = gates_in[1][:, ::-1]
    hidden_weights = np.stack([hidden_weight for _, hidden_weight, _ in directions])
    hidden_size = hidden_weights.shape[1]
    hidden = np.zeros((len(directions), batch, hidden_size), dtype=np.float32)
    cell = np.zeros_like(hidden)
    outputs = np.empty((len(directions), batch, steps, hidden_size), dtype=np.float32)
    for t in range(steps):
        gates = gates_in[:, :, t] + np.matmul(hidden, hidden_weights)
        i, f, g, o = np.split(gates, 4, axis=-1)
        cell = _sigmoid(f) * cell + _sigmoid(i) * np.tanh(g)
        hidden = _sigmoid(o) * np.tanh(cell)
        outputs[:, :, t] = hidden
    if len(directions) == 2:
        outputs[1] = outputs[1][:, ::-1]
    return np.concatenate(list(outputs), axis=-1)

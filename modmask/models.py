"""Networks of the paper, written with ordinary layers so masks and ``vmap`` apply to them as they are."""
from __future__ import annotations

import torch
from torch import nn


FNN_INITS = ("pytorch", "xavier_normal")


class FNN(nn.Module):
    """Fully connected ReLU network with configurable hidden sizes.

    ``init``: ``"pytorch"`` (nn.Linear's default, uniform in +-1/sqrt(fan_in)) or ``"xavier_normal"``
    (Xavier normal with the ReLU gain sqrt(2) for hidden layers, gain 1 for the output layer, zero
    biases: the paper's code for permuted MNIST; its weights are 2-3x larger than PyTorch's default).
    """

    def __init__(self, input_size: int, hidden: list[int], output_size: int, init: str = "pytorch"):
        super().__init__()
        if init not in FNN_INITS:
            raise ValueError(f"unknown FNN init {init!r}; choose one of {', '.join(FNN_INITS)}")
        self.init = init  # kept so a fresh copy (permuted MNIST's re-initialisation) uses the same scheme
        sizes = [input_size, *hidden, output_size]
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(sizes[:-1], sizes[1:]))
        if init == "xavier_normal":
            self._xavier_normal()

    @torch.no_grad()
    def _xavier_normal(self):
        last = len(self.layers) - 1
        for i, layer in enumerate(self.layers):
            nn.init.xavier_normal_(layer.weight, gain=1.0 if i == last else nn.init.calculate_gain("relu"))
            layer.bias.zero_()

    def forward(self, x):
        for i, layer in enumerate(self.layers):
            x = layer(x)
            if i < len(self.layers) - 1:
                x = torch.relu(x)
        return x

    def layer_labels(self) -> dict[str, str]:
        n = len(self.layers)
        return {f"layers.{i}.{kind}": ("input layer" if i == 0 else "output layer" if i == n - 1 else f"hidden {i}")
                for i in range(n) for kind in ("weight", "bias")}


class LSTM(nn.Module):
    """Single-layer LSTM built from two linear maps, followed by a linear read-out.

    ``forward(x)``: ``x`` is either ``[B, C]``, presented at each of ``steps`` steps, or a
    time-major sequence ``[T, B, C]``. The output is read after the last step (``[B, O]``) or, with
    ``read_at`` (step indices, 1-based), after each listed step (``[len(read_at), B, O]``). The
    recurrent state is carried through all steps.
    """

    def __init__(self, input_size: int, hidden_size: int, output_size: int, steps: int = 3):
        super().__init__()
        self.hidden_size = hidden_size
        self.steps = steps
        self.input_map = nn.Linear(input_size, 4 * hidden_size)
        self.recurrent_map = nn.Linear(hidden_size, 4 * hidden_size, bias=False)
        self.output = nn.Linear(hidden_size, output_size)

    def forward(self, x, read_at: tuple[int, ...] | None = None):
        if x.dim() == 2:
            sequence = [x] * self.steps
        else:
            sequence = list(x.unbind(0))
        projected = [self.input_map(step_input) for step_input in sequence]
        batch = x.shape[-2]
        h = x.new_zeros(batch, self.hidden_size)
        c = x.new_zeros(batch, self.hidden_size)
        reads = []
        for step, gates_in in enumerate(projected, start=1):
            gates = gates_in + self.recurrent_map(h)
            i, f, g, o = gates.chunk(4, dim=-1)
            c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
            h = torch.sigmoid(o) * torch.tanh(c)
            if read_at is not None and step in read_at:
                reads.append(self.output(h))
        if read_at is None:
            return self.output(h)
        return torch.stack(reads, 0)

    def layer_labels(self) -> dict[str, str]:
        return {"input_map.weight": "input layer", "input_map.bias": "input layer (bias)",
                "recurrent_map.weight": "recurrent", "output.weight": "output layer",
                "output.bias": "output layer (bias)"}


ARCHITECTURES = ("fnn", "lstm")


def build_model(spec: dict, input_size: int, output_size: int) -> nn.Module:
    """Model from a config block: ``{model: fnn, hidden: [...]}`` or ``{model: lstm, hidden: H, steps: T}``."""
    kind = spec["model"]
    if kind == "fnn":
        return FNN(input_size, list(spec["hidden"]), output_size)
    if kind == "lstm":
        return LSTM(input_size, int(spec["hidden"]), output_size, steps=int(spec.get("steps", 3)))
    raise ValueError(f"unknown model {kind!r}; known: {ARCHITECTURES}")


def layer_label(model: nn.Module, name: str) -> str:
    labels = model.layer_labels() if hasattr(model, "layer_labels") else {}
    return labels.get(name, name)

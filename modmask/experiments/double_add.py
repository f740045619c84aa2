"""Double addition (paper section 3.2, P_reuse): tasks, per-architecture forward passes, evaluation.

Architectures see the two pairs differently:
- ``fnn``: two passes, each with only one pair's inputs (the other zeroed), reading that pair's
  outputs. Both passes of a sample run under the same mask sample (they share the batch row).
- ``lstm`` with ``presentation: together``: both pairs at every step, read after the last step.
- ``lstm`` with ``presentation: sequential``: pair 1 in steps 1-3 (read at step 3), pair 2 in
  steps 4-6 (read at step 6), the state carried over. The sequence is time-major ``[T, B, C]``, so
  the mask samples are assigned along dimension 1.
"""
from __future__ import annotations

import pandas as pd
import torch
from torch import nn

from ..data import double_add as data
from ..data.digits import decode_number, digit_loss
from ..masked_model import WithMask, run_in_chunks
from ..masks import BinaryMask, mask_conditions

PER_TASK = True  # its steps: modmask.experiments.per_task
NAME = "double_add"
INPUT_SIZE = data.INPUT_SIZE
OUTPUT_SIZE = data.OUTPUT_SIZE
MASK_TASKS = ("all", "pair1", "pair2")
SHARING_TASKS = ("pair1", "pair2")
PAIRS = (1, 2)


generate = data.generate_table


def training_tensors(df: pd.DataFrame, task: str) -> list[torch.Tensor]:
    if task not in MASK_TASKS:
        raise ValueError(f"unknown double-addition task {task!r}; known: {MASK_TASKS}")
    return list(data.encode(df[df["split"] == "train"]))


def _pair_loss(output, targets, pair):
    out = output[..., (pair - 1) * data.PAIR_OUTPUT:pair * data.PAIR_OUTPUT]
    return digit_loss(out, targets[..., (pair - 1) * 2:pair * 2])


def loss_for(task: str):
    """Full task: both pairs; ``pair1``/``pair2``: only that pair's outputs count."""
    if task == "all":
        return lambda output, targets: 0.5 * (_pair_loss(output, targets, 1) + _pair_loss(output, targets, 2))
    pair = int(task[-1])
    return lambda output, targets: _pair_loss(output, targets, pair)


loss = loss_for("all")


def _join_pairs(first, second):
    return torch.cat([first[..., :data.PAIR_OUTPUT], second[..., data.PAIR_OUTPUT:]], dim=-1)


def _fnn_forward(model, x):
    both = torch.stack([data.pair_inputs(x, 1), data.pair_inputs(x, 2)], dim=1)  # [B, 2, 80]
    out = model(both)
    return _join_pairs(out[:, 0], out[:, 1])


def _sequential(spec: dict) -> bool:
    return spec["model"] == "lstm" and spec.get("presentation", "together") == "sequential"


def _lstm_sequential_forward(steps: int):
    half = steps // 2

    def forward(model, x):
        p1, p2 = data.pair_inputs(x, 1), data.pair_inputs(x, 2)
        sequence = torch.stack([p1] * half + [p2] * half, dim=0)  # [T, B, 80], time-major
        reads = model(sequence, read_at=(half, 2 * half))          # [2, B, 40]
        return _join_pairs(reads[0], reads[1])

    return forward


def forward_for(spec: dict):
    """forward(model, inputs) for an architecture; ``model`` may be a MaskedModel."""
    if spec["model"] == "fnn":
        return _fnn_forward
    if _sequential(spec):
        return _lstm_sequential_forward(int(spec.get("steps", 6)))
    return lambda model, x: model(x)


def masked_batch_dims(spec: dict) -> tuple[int, int]:
    """Where the batch is in what the forward function passes to the model, and in what it gets back."""
    return (1, 1) if _sequential(spec) else (0, 0)


@torch.no_grad()
def evaluate_masks(model: nn.Module, masks: dict[str, BinaryMask], df: pd.DataFrame, device,
             spec: dict) -> dict[str, pd.DataFrame]:
    """Accuracy on each pair (test split) with no mask, each mask and each inverted mask.

    ``confusion``: for each pair's output units, the share of answers equal to that pair's sum,
    to the other pair's sum, or neither (samples whose two sums coincide are left out). Under a
    pair-1 mask it shows whether the pair-2 outputs still compute pair 2 or echo pair 1.
    """
    model.eval()
    forward = forward_for(spec)
    test = df[df["split"] == "test"]
    x, y = data.encode(test)
    sums = {pair: y[:, (pair - 1) * 2] * 10 + y[:, (pair - 1) * 2 + 1] for pair in PAIRS}
    distinct = sums[1] != sums[2]
    rows, confusion = [], []
    for mask_name, inverted, mask in mask_conditions(masks):
        runner = WithMask(model, mask)
        outs = run_in_chunks(lambda inputs: forward(runner, inputs), x, device)
        for pair in PAIRS:
            pred = decode_number(outs[:, (pair - 1) * data.PAIR_OUTPUT:pair * data.PAIR_OUTPUT])
            rows.append({"mask": mask_name, "inverted": inverted, "pair": pair,
                         "accuracy": float((pred == sums[pair]).float().mean()), "n": len(test)})
            own = (pred == sums[pair])[distinct]
            other = (pred == sums[3 - pair])[distinct]
            shares = {"own_sum": own, "other_sum": other, "neither": ~own & ~other}
            for outcome, hits in shares.items():
                confusion.append({"mask": mask_name, "inverted": inverted, "pair": pair, "outcome": outcome,
                                  "fraction": float(hits.float().mean()), "n": int(distinct.sum())})
    return {"accuracy": pd.DataFrame(rows), "confusion": pd.DataFrame(confusion)}

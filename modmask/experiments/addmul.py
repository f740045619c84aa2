"""Addition / multiplication (paper section 3.1): tasks, evaluation tables."""
from __future__ import annotations

import pandas as pd
import torch
from torch import nn

from ..data import addmul as data
from ..data.digits import decode_number, digit_loss
from ..masked_model import WithMask, run_in_chunks
from ..masks import BinaryMask, mask_conditions

PER_TASK = True  # its steps: modmask.experiments.per_task
NAME = "addmul"
INPUT_SIZE = data.INPUT_SIZE
OUTPUT_SIZE = data.OUTPUT_SIZE
MASK_TASKS = ("all", "add", "mul")
SHARING_TASKS = ("add", "mul")
OPERATIONS = data.OPERATIONS
OUTCOMES = ("add_result", "mul_result", "neither")
loss = digit_loss


generate = data.generate_table


def training_tensors(df: pd.DataFrame, task: str) -> list[torch.Tensor]:
    rows = data.task_rows(df[df["split"] == "train"], task)
    if rows.empty:
        raise ValueError(f"no training rows for task {task!r}")
    return list(data.encode(rows))


def predict(model: nn.Module, mask: BinaryMask | None, x: torch.Tensor, device) -> torch.Tensor:
    return decode_number(run_in_chunks(WithMask(model, mask), x, device))


def evaluate_masks(model: nn.Module, masks: dict[str, BinaryMask], df: pd.DataFrame, device,
             spec: dict | None = None) -> dict[str, pd.DataFrame]:
    """Accuracy per operation and split for no mask, each mask and each inverted mask; operation confusion.

    Confusion: for each requested operation, the share of answers equal to the addition result,
    the multiplication result, or neither. Problems whose two results coincide (e.g. 2+2, 2*2) are
    left out of it, since their answer cannot tell the operations apart.
    """
    model.eval()
    x, _ = data.encode(df)
    add_result = torch.tensor(((df["a"] + df["b"]) % 100).to_numpy())
    mul_result = torch.tensor(((df["a"] * df["b"]) % 100).to_numpy())
    target = torch.tensor(df["result"].to_numpy())
    op = df["op"].to_numpy()
    split = df["split"].to_numpy()
    distinct = (add_result != mul_result).numpy()
    accuracy_rows, confusion_rows = [], []
    for mask_name, inverted, mask in mask_conditions(masks):
        pred = predict(model, mask, x, device)
        correct = (pred == target).numpy()
        for operation in OPERATIONS:
            for split_name in sorted(set(split)):
                sel = (op == operation) & (split == split_name)
                accuracy_rows.append({"mask": mask_name, "inverted": inverted, "operation": operation,
                                      "split": split_name, "accuracy": float(correct[sel].mean()),
                                      "n": int(sel.sum())})
            sel = (op == operation) & distinct
            is_add = (pred == add_result).numpy()[sel]
            is_mul = (pred == mul_result).numpy()[sel]
            shares = {"add_result": is_add.mean(), "mul_result": is_mul.mean(),
                      "neither": (~is_add & ~is_mul).mean()}
            for outcome in OUTCOMES:
                confusion_rows.append({"mask": mask_name, "inverted": inverted, "operation": operation,
                                       "outcome": outcome, "fraction": float(shares[outcome]), "n": int(sel.sum())})
    return {"accuracy": pd.DataFrame(accuracy_rows), "confusion": pd.DataFrame(confusion_rows)}

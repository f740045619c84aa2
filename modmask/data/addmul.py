"""Addition / multiplication of two 2-digit numbers, result mod 100 (paper section 3.1).

Input (42): operand a and b as two one-hot digits each (4 x 10) + a 2-way operation one-hot.
Output (20): the tens and ones digit of the result. Only 2 x 100 x 100 = 20,000 problems exist, so
the data set is all of them; an optional held-out fraction gives problems never trained on.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
import torch

from .digits import digit_targets, one_hot_digits

OPERATIONS = ("add", "mul")
INPUT_SIZE = 42
OUTPUT_SIZE = 20


def generate_table(settings: dict, seed: int) -> pd.DataFrame:
    """The data set from the experiment's ``data`` config block."""
    return generate(settings.get("heldout_fraction", 0.0), seed)


def generate(heldout_fraction: float = 0.0, seed: int = 0) -> pd.DataFrame:
    """Every problem once, with a ``split`` column: ``train`` or ``heldout``."""
    a, b = np.meshgrid(np.arange(100), np.arange(100), indexing="ij")
    a, b = a.ravel(), b.ravel()
    frames = []
    for op in OPERATIONS:
        result = (a + b) % 100 if op == "add" else (a * b) % 100
        frames.append(pd.DataFrame({"a": a, "b": b, "op": op, "result": result}))
    df = pd.concat(frames, ignore_index=True)
    rng = np.random.default_rng(seed)
    heldout = rng.random(len(df)) < heldout_fraction
    df["split"] = np.where(heldout, "heldout", "train")
    df["a"] = df["a"].astype("int64")
    df["b"] = df["b"].astype("int64")
    df["result"] = df["result"].astype("int64")
    return df


def encode(df: pd.DataFrame) -> tuple[torch.Tensor, torch.Tensor]:
    a = torch.tensor(df["a"].to_numpy())
    b = torch.tensor(df["b"].to_numpy())
    op = torch.tensor((df["op"] == "mul").to_numpy().astype("int64"))
    x = torch.cat([one_hot_digits(a), one_hot_digits(b), torch.nn.functional.one_hot(op, 2).float()], dim=1)
    return x, digit_targets(torch.tensor(df["result"].to_numpy()))


def task_rows(df: pd.DataFrame, task: str) -> pd.DataFrame:
    """Rows a mask task trains on: ``all`` (control), ``add`` or ``mul``."""
    if task == "all":
        return df
    if task not in OPERATIONS:
        raise ValueError(f"unknown add/mul task {task!r}; known: all, add, mul")
    return df[df["op"] == task]

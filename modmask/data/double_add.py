"""Double addition (paper section 3.2): two pairs of 2-digit numbers, a+b and c+d mod 100.

Input (80): a, b, c, d as two one-hot digits each. Output (40): tens and ones of (a+b) % 100 on
units 0-19, of (c+d) % 100 on units 20-39. There are 10^8 problems, so train and test sets are
random draws (seeded) and almost never overlap.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
import torch

from .digits import digit_targets, one_hot_digits

INPUT_SIZE = 80
OUTPUT_SIZE = 40
PAIR_INPUT = 40   # input units per pair
PAIR_OUTPUT = 20  # output units per pair


def generate_table(settings: dict, seed: int) -> pd.DataFrame:
    """The data set from the experiment's ``data`` config block."""
    return generate(int(settings.get("train_size", 200000)), int(settings.get("test_size", 10000)), seed)


def generate(train_size: int, test_size: int, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    n = train_size + test_size
    df = pd.DataFrame({name: rng.integers(0, 100, n, dtype=np.int64) for name in "abcd"})
    df["split"] = np.where(np.arange(n) < train_size, "train", "test")
    return df


def encode(df: pd.DataFrame) -> tuple[torch.Tensor, torch.Tensor]:
    """Inputs [N, 80] and targets [N, 4] (pair 1 tens, ones, pair 2 tens, ones)."""
    a, b, c, d = (torch.tensor(df[k].to_numpy()) for k in "abcd")
    x = torch.cat([one_hot_digits(a), one_hot_digits(b), one_hot_digits(c), one_hot_digits(d)], dim=1)
    y = torch.cat([digit_targets((a + b) % 100), digit_targets((c + d) % 100)], dim=1)
    return x, y


def pair_inputs(x: torch.Tensor, pair: int) -> torch.Tensor:
    """The inputs with the other pair's units zeroed (pair is 1 or 2)."""
    keep = torch.zeros(INPUT_SIZE, dtype=x.dtype, device=x.device)
    keep[(pair - 1) * PAIR_INPUT:pair * PAIR_INPUT] = 1
    return x * keep

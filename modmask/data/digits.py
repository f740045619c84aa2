"""Shared encoding for the arithmetic tasks: 2-digit numbers as one-hot digits, two digit heads out."""
from __future__ import annotations

import torch
import torch.nn.functional as F


def one_hot_digits(numbers: torch.Tensor) -> torch.Tensor:
    """[N] ints in [0, 100) -> [N, 20] (tens one-hot, ones one-hot)."""
    return torch.cat([F.one_hot(numbers // 10, 10), F.one_hot(numbers % 10, 10)], dim=1).float()


def digit_targets(numbers: torch.Tensor) -> torch.Tensor:
    """[N] ints in [0, 100) -> [N, 2] (tens, ones) class targets."""
    return torch.stack([numbers // 10, numbers % 10], dim=1)


def digit_loss(output: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy of the tens and ones heads; ``output`` [..., 20], ``targets`` [..., 2]."""
    return 0.5 * (F.cross_entropy(output[..., :10].reshape(-1, 10), targets[..., 0].reshape(-1))
                  + F.cross_entropy(output[..., 10:20].reshape(-1, 10), targets[..., 1].reshape(-1)))


def decode_number(output: torch.Tensor) -> torch.Tensor:
    """[..., 20] scores -> [...] predicted 2-digit number."""
    return output[..., :10].argmax(-1) * 10 + output[..., 10:20].argmax(-1)

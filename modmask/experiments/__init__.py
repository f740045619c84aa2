"""Experiments: each module supplies data generation, training tensors per mask task, a loss and
an evaluation. Training loops, masks and I/O are shared."""
from __future__ import annotations

import importlib

EXPERIMENTS = ("addmul",)


def get(name: str):
    if name not in EXPERIMENTS:
        raise ValueError(f"unknown experiment {name!r}; known: {EXPERIMENTS}")
    return importlib.import_module(f"{__name__}.{name}")

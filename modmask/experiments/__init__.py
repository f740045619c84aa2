"""Experiments: each module supplies data generation, training tensors per mask task, a loss and
an evaluation. Training loops, masks and I/O are shared.

An experiment module defines ``NAME``, ``INPUT_SIZE``, ``OUTPUT_SIZE``, ``MASK_TASKS``,
``SHARING_TASKS`` (masks compared for sharing), ``generate(settings, seed) -> DataFrame``,
``training_tensors(df, task) -> [inputs, targets]``, ``loss(output, targets)`` and
``evaluate(model, masks, df, device, spec) -> {table name: DataFrame}``. Optional:
``loss_for(task)`` (a task-specific loss), ``forward_for(spec)`` (how an architecture is run on
the inputs), ``masked_batch_dims(spec)`` (where the batch is in what that forward passes on) and
``network_from_file(data)`` (the untrained architecture of a saved network file, modmask.steps; by
default ``models.build_model(spec, INPUT_SIZE, OUTPUT_SIZE)``).
"""
from __future__ import annotations

import importlib

EXPERIMENTS = ("addmul", "double_add", "permuted_mnist", "scan", "cifar10", "mathematics")


def get(name: str):
    if name not in EXPERIMENTS:
        raise ValueError(f"unknown experiment {name!r}; known: {EXPERIMENTS}")
    return importlib.import_module(f"{__name__}.{name}")


def loss_for(exp, task: str):
    return exp.loss_for(task) if hasattr(exp, "loss_for") else exp.loss


def forward_for(exp, spec: dict):
    return exp.forward_for(spec) if hasattr(exp, "forward_for") else None


def masked_batch_dims(exp, spec: dict) -> tuple[int, int]:
    return exp.masked_batch_dims(spec) if hasattr(exp, "masked_batch_dims") else (0, 0)


def network_from_file(exp, data: dict):
    """The architecture (untrained) of a saved network file's contents."""
    if hasattr(exp, "network_from_file"):
        return exp.network_from_file(data)
    from ..models import build_model

    return build_model(data["spec"], exp.INPUT_SIZE, exp.OUTPUT_SIZE)

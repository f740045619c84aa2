"""Experiments: each module is one experiment of the paper, as configuration of the shared pieces
(models, masks, training loops, metrics). Holding no paths and no provenance, it answers what the
workflow's generic steps (:mod:`modmask.steps`) ask of it.

The protocol. Every experiment module defines ``NAME`` and three steps, each taking a :class:`Step`:

- ``train_network(step) -> (model, history, extra)``: a network trained from ``step.data``;
  ``extra`` (a dict) is saved in the network file beside it (e.g. a vocabulary);
- ``train_mask(step) -> (mask, history, extra)``: the mask ``step.name`` on the frozen
  ``step.network``;
- ``evaluate(step) -> {table name: DataFrame}``: the tables of one run, from its network(s) and masks.

Optional: ``load_data(path)`` (what a data input file holds; default: a Parquet table),
``network_from_file(contents)`` (the untrained architecture of a saved network; default
``models.build_model(spec, INPUT_SIZE, OUTPUT_SIZE)``), ``mask_seed(seed, name)`` (default: see
``modmask.steps.mask_seed``), further evaluation-kind steps a rule names (CIFAR-10's
``stability``), and ``run_settings(block, name) -> {part: settings}`` (what a run's config hash
covers at each stage: the parts ``data``, the architecture, ``pretrain`` and ``mask``).

Experiments that pretrain a network on one table and train one mask per task of it (add/mul, double
addition) set ``PER_TASK = True`` and supply only ``INPUT_SIZE``, ``OUTPUT_SIZE``, ``SHARING_TASKS``,
``generate(settings, seed)``, ``training_tensors(df, task)``, ``loss`` and
``evaluate_masks(model, masks, df, device, spec) -> {table: DataFrame}``, plus, optionally,
``loss_for(task)``, ``forward_for(spec)`` and ``masked_batch_dims(spec)``: the three steps come from :mod:`modmask.experiments.per_task`.
Permuted MNIST is the one experiment with its own DAG: one job trains every task in order
(``permuted_mnist.run``).
"""
from __future__ import annotations

import importlib
import logging
from dataclasses import dataclass, field
from typing import Any

EXPERIMENTS = ("addmul", "double_add", "permuted_mnist", "scan", "cifar10", "mathematics")
STEPS = ("train_network", "train_mask", "evaluate")


@dataclass
class Step:
    """What one workflow job hands to an experiment's step: its settings and loaded inputs, no paths.

    ``settings``: the stage's config block (``train`` holds it as TrainSettings); ``data``: each data
    input by its name (a list input as ``{name: data}``); ``network``, ``network_file``: the job's
    network (eval mode, on ``device``) and the rest of its file (``spec``, vocabularies, ...);
    ``networks``, ``masks``: further networks and masks by name; ``name``: the mask a mask step trains;
    ``checkpoint_path`` / ``identity``: where and under what identity training checkpoints.
    """
    settings: dict
    seed: int
    device: Any
    log: logging.Logger
    spec: dict | None = None
    data: dict = field(default_factory=dict)
    network: Any = None
    network_file: dict = field(default_factory=dict)
    networks: dict = field(default_factory=dict)
    masks: dict = field(default_factory=dict)
    name: str | None = None
    checkpoint_path: str | None = None
    identity: str = ""
    checkpoint_every: int = 0

    @property
    def train(self):
        """``settings`` as TrainSettings (with the job's checkpoint interval)."""
        from ..training import TrainSettings

        return TrainSettings.from_config(self.settings, checkpoint_every=self.checkpoint_every)


def get(name: str):
    if name not in EXPERIMENTS:
        raise ValueError(f"unknown experiment {name!r}; known: {EXPERIMENTS}")
    return importlib.import_module(f"{__name__}.{name}")


def step_function(exp, step: str):
    """The experiment's ``step`` (a protocol step, or another step its rules name), or, for a per-task
    experiment, the shared one of :mod:`modmask.experiments.per_task`."""
    if hasattr(exp, step):
        return getattr(exp, step)
    if step in STEPS and getattr(exp, "PER_TASK", False):
        from . import per_task

        return lambda job_step: getattr(per_task, step)(exp, job_step)
    raise ValueError(f"experiment {exp.NAME!r} has no {step!r} step (modmask.experiments.{exp.NAME}.{step})")


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


def run_settings(exp, block: dict, name: str) -> dict:
    """The settings one run (``name``: its architecture, or its task) of an experiment with its own config
    block depends on, by part: ``data``, the architecture, ``pretrain``, ``mask``. Default: the block's
    ``architectures.<name>`` with its ``pretrain`` / ``mask`` overrides."""
    if hasattr(exp, "run_settings"):
        return exp.run_settings(block, name)
    from ..config import network_spec, stage_settings

    return {"data": block["data"], "arch": network_spec(block, name),
            "pretrain": stage_settings(block, name, "pretrain"), "mask": stage_settings(block, name, "mask")}

"""Workflow steps of permuted MNIST (paper section 3.3): one (variant, seed) run, and its tables.

Kept apart from :mod:`modmask.pipeline` so that the code versions of the other experiments'
stages do not depend on it.
"""
from __future__ import annotations

import logging
from pathlib import Path

import pandas as pd

from . import steps
from .data import mnist
from .experiments import permuted_mnist
from .io import load_checkpoint, load_torch, save_torch, write_parquet

NOT_SETTINGS = ("mnist_dir", "download", "mirror", "verify")  # where the data comes from, not what it is


def run_settings(block: dict, variant: str) -> dict:
    """What one run of the ``permuted_mnist`` config block depends on: tasks, network, training, the
    data subset and the variant's mask init; not where MNIST lies or whether it was downloaded."""
    data = {k: v for k, v in block["data"].items() if k not in NOT_SETTINGS}
    return {"tasks": block["tasks"], "architecture": block["architecture"], "train": block["train"], "data": data,
            "mask_init": block["variants"][variant]}


def provenance(block: dict, variant: str, seed: int, scale: str, code: str) -> dict:
    """The columns every table row of a run carries."""
    return steps.provenance(permuted_mnist.NAME, scale, {"variant": variant}, seed, run_settings(block, variant), code)


def load_mnist(data_block: dict, seed: int = 0):
    """MNIST from ``data_block["mnist_dir"]``, cut to ``train_size`` / ``test_size`` (fixed subsets)."""
    data = mnist.load(data_block["mnist_dir"], verify=data_block.get("verify", True))
    return {split: mnist.subset(*data[split], data_block.get(f"{split}_size"), seed) for split in data}


def permuted_mnist_run(block: dict, variant: str, seed: int, device, out_path, log: logging.Logger,
                       provenance: dict, checkpoint_every: int = 0) -> None:
    """One (variant, seed) of permuted MNIST: all tasks in order, resumable after each task and within one."""
    # A paper-length run spans sessions, and the code may change between them (a refactor, a fix):
    # its progress belongs to the settings, seed and variant, and each task records the code version
    # that trained it, so the tables say which code produced each row.
    identity = str({key: value for key, value in provenance.items() if key != "code_version"})
    progress_path = Path(f"{out_path}.ckpt")
    task_checkpoint = Path(f"{out_path}.task.ckpt") if checkpoint_every else None

    def save_progress(state):
        save_torch({"identity": identity, **state}, progress_path)

    def load_progress():
        state = load_checkpoint(progress_path, log)  # None also when it is corrupt: moved aside, start afresh
        if state is None:
            return None
        if state.get("identity") != identity:
            log.warning("ignoring %s: it belongs to different settings", progress_path)
            return None
        return state

    data = load_mnist(block["data"])
    log.info("MNIST from %s: %d training, %d test images", block["data"]["mnist_dir"], len(data["train"][1]),
             len(data["test"][1]))
    run = permuted_mnist.run(block, variant, data, seed, device, log, identity=identity,
                             task_checkpoint_path=task_checkpoint, save_progress=save_progress,
                             load_progress=load_progress, checkpoint_every=checkpoint_every,
                             code_version=provenance.get("code_version", ""))
    save_torch({**run, "provenance": provenance}, out_path)
    if progress_path.exists():
        progress_path.unlink()


def permuted_mnist_tables(run_paths, out_paths: dict, log: logging.Logger) -> None:
    """The ``sharing``, ``layers`` and ``accuracy`` tables over all runs (variants and seeds)."""
    parts: dict[str, list[pd.DataFrame]] = {name: [] for name in out_paths}
    for path in run_paths:
        run = load_torch(path)
        for name, df in permuted_mnist.tables(run, run["provenance"]).items():
            if name in parts:
                parts[name].append(df)
    for name, path in out_paths.items():
        df = pd.concat(parts[name], ignore_index=True)
        write_parquet(df, path, {"sources": [str(p) for p in run_paths]})
        log.info("wrote %s (%d rows)", path, len(df))

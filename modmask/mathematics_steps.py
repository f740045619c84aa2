"""Workflow steps of the Mathematics Dataset experiment (paper section 3.5, Fig. 5): train a task's
network, train a mask on a subset of its levels, evaluate one (task, seed). Plain functions of paths
and config blocks; the workflow's rules call them through thin scripts.

Config block (``mathematics``), besides its ``data`` settings::

    network: {model: transformer, d_model: 256, heads: 4, d_ff: 512, encoder_layers: 3, decoder_layers: 3}
    pretrain: {lr: 1.0e-4, adam_betas: [0.9, 0.995], adam_eps: 1.0e-9, grad_clip: 1.0, ...}   # TrainSettings
    mask: {mask_samples: 8, lr: 0.03, beta: 2.0e-5, ...}                                        # TrainSettings
    task_settings:            # per-task overrides of pretrain / mask (the paper's table), merged over the above
      arithmetic__add_or_sub: {pretrain: {batch_size: 256, steps: 30000}, mask: {batch_size: 256, ...}}

Kept apart from :mod:`modmask.pipeline` and :mod:`modmask.scan_steps` so that the code versions of the
other experiments' stages do not depend on this one's.
"""
from __future__ import annotations

import logging
from typing import Sequence

import pandas as pd

from . import steps
from .config import task_stage_settings
from .data.vocab import Vocabulary
from .experiments import mathematics
from .io import read_parquet, with_provenance, write_parquet
from .seq2seq import Seq2Seq
from .training import TrainSettings

STAGE_BLOCKS = {"network": ("data", "network", "pretrain"), "mask": ("data", "network", "pretrain", "mask"),
                "evaluate": ("data", "network", "pretrain", "mask")}


def network_spec(block: dict) -> dict:
    """The architecture of every task's network (the ``network`` block)."""
    return dict(block["network"])


def stage_settings(block: dict, task: str, stage: str) -> dict:
    """The ``pretrain`` or ``mask`` block with ``task_settings.<task>.<stage>`` merged over it
    (``task_settings: null`` in a smaller scale's config drops the paper's per-task table)."""
    return task_stage_settings(block, task, stage)


def provenance(block: dict, task: str, seed: int, stage: str, scale: str, code: str, **columns) -> dict:
    """Columns every row of a stage's outputs carries. The config hash covers what the stage depends on:
    the data settings, the network, its training and (masks, evaluation) the task's mask settings."""
    blocks = {"data": block["data"], "network": network_spec(block),
              "pretrain": stage_settings(block, task, "pretrain"), "mask": stage_settings(block, task, "mask")}
    return steps.provenance(mathematics.NAME, scale, {"task": task}, seed,
                            {k: blocks[k] for k in STAGE_BLOCKS[stage]}, code, **columns)


def train_network(arch_spec: dict, train_block: dict, train_path, seed: int, device, out_path,
                  log: logging.Logger, provenance: dict, checkpoint_every: int = 0) -> None:
    """A network trained on every level of one task's training table."""
    df = read_parquet(train_path)
    settings = TrainSettings.from_config(train_block, checkpoint_every=checkpoint_every)
    model, history = mathematics.pretrain(df, arch_spec, settings, seed, device, log,
                                          checkpoint_path=f"{out_path}.ckpt", identity=str(provenance))
    steps.save_network(out_path, mathematics.NAME, arch_spec, model, history, provenance,
                       vocabulary=mathematics.vocabulary().to_dict())


def load_network(path, device="cpu") -> tuple[Seq2Seq, Vocabulary]:
    """A saved network (eval mode) and the vocabulary it was trained with."""
    model, data = steps.load_network(path, mathematics.NAME, device)
    return model, Vocabulary.from_dict(data["vocabulary"])


def train_mask(mask_block: dict, subset: str, net_path, train_path, seed: int, device, out_path,
               log: logging.Logger, provenance: dict, checkpoint_every: int = 0) -> None:
    """A mask on the task's frozen network for one subset of its training table: ``control`` (every level)
    or ``easy`` (:data:`~modmask.experiments.mathematics.SUBSETS`)."""
    if subset not in mathematics.SUBSETS:
        raise ValueError(f"unknown mask subset {subset!r}; known: {list(mathematics.SUBSETS)}")
    df = read_parquet(train_path)
    model, vocab = load_network(net_path, device)
    settings = TrainSettings.from_config(mask_block, checkpoint_every=checkpoint_every)
    mask, history = mathematics.train_level_mask(model, df, settings, seed, device, log,
                                                 levels=mathematics.SUBSETS[subset], vocab=vocab,
                                                 checkpoint_path=f"{out_path}.ckpt", identity=str(provenance))
    steps.save_mask(out_path, mask, history, provenance, subset=subset)


def evaluate(net_path, mask_paths: dict, test_path, device, out_path, log: logging.Logger, provenance: dict,
             levels: Sequence[str] = mathematics.LEVELS) -> pd.DataFrame:
    """Table ``accuracy`` of one (task, seed): exact answer match on the test rows of each of ``levels``,
    for the network without a mask (``mask`` "none") and through each mask of ``mask_paths``
    (``{"control": path, "easy": path}``). Columns: provenance, then mask, test_level, correct, total,
    accuracy. Returns the table it wrote."""
    test = read_parquet(test_path)
    model, vocab = load_network(net_path, device)
    masks = {name: steps.load_mask(path).binary() for name, path in mask_paths.items()}
    rows = mathematics.accuracy_rows(model, {"none": None, **masks}, test, device, levels=list(levels), vocab=vocab)
    accuracy = pd.DataFrame(rows)
    for row in accuracy.itertuples():
        log.info("mask %s, %s test: %.4f (%d/%d)", row.mask, row.test_level, row.accuracy, row.correct, row.total)
    table = with_provenance(accuracy, provenance)
    write_parquet(table, out_path, provenance)
    log.info("wrote %s (%d rows)", out_path, len(table))
    return table


# ---- the workflow's jobs (modmask.steps.run) ------------------------------------------------------------

def network_job(job: steps.Job) -> None:
    steps.network_step(job, train_network)


def mask_job(job: steps.Job) -> None:
    log, device = job.start()
    subset = job.wildcards["math_mask"]
    train_mask(job.json("settings"), subset, job.input["network"], job.input["train"],
               steps.mask_seed(job.seed, subset), device, job.output["mask"], log, job.provenance,
               checkpoint_every=job.checkpoint_every)


def evaluate_job(job: steps.Job) -> None:
    log, device = job.start()
    evaluate(job.input["network"], steps.files_by_name(job.input["masks"], "mask_"), job.input["test"], device,
             job.output["accuracy"], log, job.provenance)

"""Workflow steps of SCAN (paper section 3.4): train a network on a split, train a mask on a split,
evaluate one (architecture, seed). Plain functions of paths and config blocks; the rules in
``rules/scan.smk`` call them through thin scripts.

Kept apart from :mod:`modmask.pipeline` so that the code versions of the other experiments'
stages do not depend on SCAN's.
"""
from __future__ import annotations

import logging
from pathlib import Path

import pandas as pd

from . import steps
from .config import network_spec, stage_settings
from .experiments import scan
from .io import read_parquet
from .training import TrainSettings

STAGE_BLOCKS = {"network": ("data", "arch", "pretrain"), "mask": ("data", "arch", "pretrain", "mask"),
                "evaluate": ("data", "arch", "pretrain", "mask")}


def provenance(block: dict, arch: str, seed: int, stage: str, scale: str, code: str, **columns) -> dict:
    """Columns every row of a stage's outputs carries. The config hash covers what the stage depends on:
    the data settings, the network, its training, and (masks, evaluation) the mask settings."""
    blocks = {"data": block["data"], "arch": network_spec(block, arch),
              "pretrain": stage_settings(block, arch, "pretrain"), "mask": stage_settings(block, arch, "mask")}
    return steps.provenance(scan.NAME, scale, {"arch": arch}, seed, {k: blocks[k] for k in STAGE_BLOCKS[stage]}, code,
                            **columns)


def train_network(arch_spec: dict, train_block: dict, train_path, seed: int, device, out_path,
                  log: logging.Logger, provenance: dict, checkpoint_every: int = 0) -> None:
    """A network trained on one split's training table (IID pretraining or the direct baseline)."""
    df = read_parquet(train_path)
    settings = TrainSettings.from_config(train_block, checkpoint_every=checkpoint_every)
    model, history = scan.pretrain(df, arch_spec, settings, seed, device, log, checkpoint_path=f"{out_path}.ckpt",
                                   identity=str(provenance))
    in_vocab, out_vocab = scan.vocabularies()
    steps.save_network(out_path, scan.NAME, arch_spec, model, history, provenance,
                       vocabularies={"command": in_vocab.to_dict(), "actions": out_vocab.to_dict()})


def load_network(path, device="cpu"):
    return steps.load_network(path, scan.NAME, device)[0]


def train_mask(mask_block: dict, net_path, train_path, seed: int, device, out_path, log: logging.Logger,
               provenance: dict, checkpoint_every: int = 0) -> None:
    """A mask on the IID-trained network for one split's training table."""
    df = read_parquet(train_path)
    model = load_network(net_path, device)
    settings = TrainSettings.from_config(mask_block, checkpoint_every=checkpoint_every)
    mask, history = scan.train_split_mask(model, df, settings, seed, device, log, checkpoint_path=f"{out_path}.ckpt",
                                          identity=str(provenance))
    steps.save_mask(out_path, mask, history, provenance)


def evaluate(net_path, mask_paths: dict, direct_paths: dict, test_paths: dict, device, out_paths: dict,
             log: logging.Logger, provenance: dict) -> None:
    """Tables ``accuracy`` and ``output_weights`` of one (architecture, seed).

    ``accuracy``: the IID-trained network without a mask and with each split's mask, and each directly
    trained network without a mask, on every split's test set. ``output_weights`` (Fig. 4b): per
    split mask and output token, the decoder output weights the IID mask keeps and the split's removes.
    """
    in_vocab, out_vocab = scan.vocabularies()
    tests = {split: scan.encode(read_parquet(path), in_vocab, out_vocab) for split, path in test_paths.items()}
    model = load_network(net_path, device)
    masks = {split: steps.load_mask(path).binary() for split, path in mask_paths.items()}
    rows = scan.accuracy_rows(model, {"none": None, **masks}, tests, device, network="pretrained",
                              trained_on=scan.IID)
    for split, path in direct_paths.items():
        rows += scan.accuracy_rows(load_network(path, device), {"none": None}, tests, device, network="direct",
                                   trained_on=split)
    accuracy = pd.DataFrame(rows)
    for row in accuracy.itertuples():
        log.info("%s network (trained on %s), mask %s, %s test: %.4f (%d/%d)", row.network, row.trained_on,
                 row.mask, row.test_split, row.accuracy, row.correct, row.total)
    weights = []
    if scan.IID in masks and scan.OUTPUT_LAYER in masks[scan.IID].bits:
        for split, mask in masks.items():
            if split != scan.IID:
                weights += [{"mask": split, **row}
                            for row in scan.removed_output_weights(masks[scan.IID], mask, out_vocab)]
    steps.write_tables({"accuracy": accuracy, "output_weights": pd.DataFrame(weights)}, out_paths, provenance, log)


# ---- the workflow's jobs (modmask.steps.run) ------------------------------------------------------------

def _by_folder(paths) -> dict:
    """{split: path} for files in a folder named after their split (data/scan/<split>/test.parquet)."""
    return {Path(p).parent.name: p for p in paths}


def network_job(job: steps.Job) -> None:
    steps.network_step(job, train_network)


def mask_job(job: steps.Job) -> None:
    log, device = job.start()
    train_mask(job.json("settings"), job.input["network"], job.input["train"],
               steps.mask_seed(job.seed, job.wildcards["split"]), device, job.output["mask"], log, job.provenance,
               checkpoint_every=job.checkpoint_every)


def evaluate_job(job: steps.Job) -> None:
    log, device = job.start()
    evaluate(job.input["network"], steps.files_by_name(job.input["masks"], "mask_"),
             steps.files_by_name(job.input["direct"], "network_"), _by_folder(job.input["tests"]), device, job.output,
             log, job.provenance)

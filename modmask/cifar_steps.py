"""Workflow steps of CIFAR-10 (paper section 3.6, appendix B.1): prepare the data, train a network,
train a mask, evaluate one (architecture, seed), score mask stability. Plain functions of paths and
config blocks; the rules in ``rules/cifar10.smk`` call them through thin scripts.
"""
from __future__ import annotations

import logging
from pathlib import Path

import pandas as pd
import torch

from . import steps
from .config import network_spec, seeds, stage_settings
from .data import cifar10 as cifar_data
from .experiments import cifar10
from .io import load_torch, with_provenance, write_parquet
from .training import TrainSettings

STAGE_BLOCKS = {"network": ("data", "arch", "pretrain"), "mask": ("data", "arch", "pretrain", "mask"),
                "evaluate": ("data", "arch", "pretrain", "mask")}


def provenance(block: dict, arch: str, seed: int, stage: str, scale: str, code: str, **columns) -> dict:
    """Columns every row of a stage's outputs carries; the config hash covers what the stage depends on."""
    blocks = {"data": block["data"], "arch": network_spec(block, arch),
              "pretrain": stage_settings(block, arch, "pretrain"), "mask": stage_settings(block, arch, "mask")}
    return steps.provenance(cifar10.NAME, scale, {"arch": arch}, seed, {k: blocks[k] for k in STAGE_BLOCKS[stage]},
                            code, **columns)


def load_data(path, part: str) -> tuple[torch.Tensor, torch.Tensor]:
    cache = cifar_data.check_cache(load_torch(path), path)
    return cache[part]["images"], cache[part]["labels"]


def train_network(arch_spec: dict, train_block: dict, data_path, seed: int, device, out_path,
                  log: logging.Logger, provenance: dict, checkpoint_every: int = 0) -> None:
    settings = TrainSettings.from_config(train_block, checkpoint_every=checkpoint_every)
    model, history = cifar10.pretrain(load_data(data_path, "train"), arch_spec, settings, seed, device, log,
                                      augment=bool(train_block.get("augment", False)),
                                      checkpoint_path=f"{out_path}.ckpt", identity=str(provenance))
    test = load_data(data_path, "test")
    accuracy = float((cifar10.predictions(model, None, test[0], device) == test[1]).float().mean())
    log.info("test accuracy %.4f", accuracy)
    steps.save_network(out_path, cifar10.NAME, arch_spec, model, history, provenance, test_accuracy=accuracy)


def load_network(path, device="cpu"):
    return steps.load_network(path, cifar10.NAME, device)[0]


def train_mask(mask_block: dict, net_path, data_path, removed: tuple[str, ...], seed: int, device, out_path,
               log: logging.Logger, provenance: dict, control_path=None, checkpoint_every: int = 0) -> None:
    """A mask without the ``removed`` classes; with ``control_path``, its output layer is the control's."""
    model = load_network(net_path, device)
    settings = TrainSettings.from_config(mask_block, checkpoint_every=checkpoint_every)
    control = steps.load_mask(control_path, device) if control_path else None
    mask, history = cifar10.train_class_mask(model, load_data(data_path, "train"), settings, seed, device, log,
                                             removed=removed, fixed_output=control,
                                             checkpoint_path=f"{out_path}.ckpt", identity=str(provenance))
    steps.save_mask(out_path, mask, history, provenance, removed=list(removed))


def evaluate(net_path, mask_paths: dict, data_path, device, out_paths: dict, log: logging.Logger,
             provenance: dict) -> None:
    """Tables ``accuracy`` and ``confusion`` of one (architecture, seed): the network without a mask,
    with the control mask and with each class-removal mask, on the full test set."""
    model = load_network(net_path, device)
    masks = {cifar10.NONE: (None, None)}
    for name, path in mask_paths.items():
        removed = load_torch(path).get("removed") or []
        masks[name] = (steps.load_mask(path).binary(), removed[0] if removed else None)
    accuracy, confusion = cifar10.evaluate_masks(model, masks, load_data(data_path, "test"), device, log)
    steps.write_tables({"accuracy": accuracy, "confusion": confusion}, out_paths, provenance, log)


def stability(pair_paths: dict[str, list], out_path, log: logging.Logger, provenance: dict) -> None:
    """IoU of the two masks (different seeds) of each class pair, over all masked weights."""
    rows = []
    for pair, paths in pair_paths.items():
        first, second = (steps.load_mask(p).binary() for p in paths)
        row = {"pair": pair, **cifar10.stability_row(first, second)}
        log.info("pair %s: IoU %.4f (%d of %d weights in both)", pair, row["iou"], row["intersection"], row["union"])
        rows.append(row)
    write_parquet(with_provenance(pd.DataFrame(rows), provenance), out_path, provenance)


def pair_name(pair: tuple[str, str]) -> str:
    return "+".join(pair)


def pair_classes(name: str) -> tuple[str, ...]:
    classes = tuple(name.split("+"))
    for c in classes:
        cifar10.class_index(c)
    return classes


# ---- the files of the workflow's jobs (rules/cifar10.smk) ------------------------------------------------

def mask_inputs(results: str, cache: str, arch: str, seed, mask: str) -> dict:
    """A mask job's inputs; a removal mask also needs the control mask, whose output layer it keeps."""
    run = f"{results}/cifar10/{arch}/seed{seed}"
    inputs = {"data": cache, "network": f"{run}/network.pt"}
    if mask != cifar10.CONTROL:
        inputs["control"] = f"{run}/mask_control.pt"
    return inputs


def stability_masks(block: dict, results: str, arch: str, seed) -> list[str]:
    """Both masks of every class pair of one network (``<pair>_mask0.pt``, ``<pair>_mask1.pt``); the pairs are
    drawn from the network's seed."""
    pairs = [pair_name(p) for p in cifar10.class_pairs(block["stability"]["pairs"], int(seed))]
    return [f"{results}/cifar10/{arch}/seed{seed}/stability/{pair}_mask{s}.pt" for pair in pairs for s in (0, 1)]


def table_inputs(block: dict, results: str, table: str) -> list[str]:
    """Per-run files of one CIFAR-10 table: every (architecture, seed), or the stability networks."""
    if table == "stability":
        arch = block["stability"]["architecture"]
        networks = range(block["stability"]["networks"])
        return [f"{results}/cifar10/{arch}/seed{seed}/stability.parquet" for seed in networks]
    return [f"{results}/cifar10/{arch}/seed{seed}/{table}.parquet" for arch in block["architectures"]
            for seed in seeds(block)]


# ---- the workflow's jobs (modmask.steps.run) ------------------------------------------------------------

def network_job(job: steps.Job) -> None:
    steps.network_step(job, train_network, data="data")


def mask_job(job: steps.Job) -> None:
    """A class-removal mask (or the control). Seeds: the control seed*1000, without class c seed*1000 + c + 1."""
    name = job.wildcards["cifar_mask"]
    removed = () if name == cifar10.CONTROL else (name[len("without_"):],)
    seed = job.seed * 1000 + (cifar10.class_index(removed[0]) + 1 if removed else 0)
    log, device = job.start(seed)
    train_mask(job.json("settings"), job.input["network"], job.input["data"], removed, seed, device,
               job.output["mask"], log, job.provenance, control_path=job.input.get("control"),
               checkpoint_every=job.checkpoint_every)


def stability_mask_job(job: steps.Job) -> None:
    """One of the two masks of a class pair. Seeds distinct from the class-removal masks' (seed*1000 + 0..10):
    seed*1000 + 500 + 100 * mask_seed + 10 * first class + second class."""
    first, second = pair_classes(job.wildcards["pair"])
    seed = (job.seed * 1000 + 500 + 100 * int(job.wildcards["mask_seed"])
            + 10 * cifar10.class_index(first) + cifar10.class_index(second))
    log, device = job.start(seed)
    train_mask(job.json("settings"), job.input["network"], job.input["data"], (first, second), seed, device,
               job.output["mask"], log, job.provenance, checkpoint_every=job.checkpoint_every)


def evaluate_job(job: steps.Job) -> None:
    log, device = job.start()
    evaluate(job.input["network"], steps.files_by_name(job.input["masks"], "mask_"), job.input["data"], device,
             job.output, log, job.provenance)


def stability_job(job: steps.Job) -> None:
    log, _ = job.start()
    pairs: dict[str, list] = {}
    for path in sorted(job.input["masks"]):  # <pair>_mask0.pt, <pair>_mask1.pt
        pairs.setdefault(Path(path).stem.rsplit("_mask", 1)[0], []).append(path)
    stability(pairs, job.output["stability"], log, job.provenance)

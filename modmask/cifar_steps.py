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
from .config import network_spec, stage_settings
from .data import cifar10 as cifar_data
from .experiments import cifar10
from .io import load_torch, save_torch, with_provenance, write_parquet
from .training import TrainSettings

STAGE_BLOCKS = {"network": ("data", "arch", "pretrain"), "mask": ("data", "arch", "pretrain", "mask"),
                "evaluate": ("data", "arch", "pretrain", "mask")}


def provenance(block: dict, arch: str, seed: int, stage: str, scale: str, code: str, **columns) -> dict:
    """Columns every row of a stage's outputs carries; the config hash covers what the stage depends on."""
    blocks = {"data": block["data"], "arch": network_spec(block, arch),
              "pretrain": stage_settings(block, arch, "pretrain"), "mask": stage_settings(block, arch, "mask")}
    return steps.provenance(cifar10.NAME, scale, {"arch": arch}, seed, {k: blocks[k] for k in STAGE_BLOCKS[stage]},
                            code, **columns)


def source_folder(data_block: dict, download_folder: str | None) -> tuple[str, str]:
    """Where the images come from: ("batches", folder) or ("jpeg", archive)."""
    if data_block.get("cifar_dir"):
        return "batches", data_block["cifar_dir"]
    if data_block.get("download"):
        return "batches", download_folder
    if data_block.get("jpeg_archive"):
        return "jpeg", data_block["jpeg_archive"]
    raise ValueError("cifar10.data: set cifar_dir (an existing cifar-10-batches-py), download: true, or "
                     "jpeg_archive (the shared JPEG copy)")


def prepare_data(data_block: dict, source, work_dir, out_path, log: logging.Logger) -> None:
    """The uint8 tensor cache every other job reads, from a folder of official batches or the JPEG
    archive (converted once into that layout under ``work_dir``)."""
    source = Path(source)
    if source.name.endswith(".tar.gz"):
        log.info("converting %s into the cifar-10-batches-py layout under %s (once)", source, work_dir)
        source = cifar_data.local_copy(source, work_dir)
    log.info("reading CIFAR-10 from %s", source)
    data = cifar_data.load(source, verify=True)
    cache = cifar10.data_cache(data, data_block.get("train_size"), data_block.get("test_size"),
                               int(data_block.get("seed", 0)))
    save_torch(cache, out_path)
    log.info("wrote %s: %d training and %d test images", out_path, len(cache["train"]["labels"]),
             len(cache["test"]["labels"]))


def load_data(path, part: str) -> tuple[torch.Tensor, torch.Tensor]:
    cache = cifar10.check_cache(load_torch(path), path)
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


def download(folder, log: logging.Logger) -> Path:
    log.info("downloading CIFAR-10 into %s", folder)
    return cifar_data.download(folder)


# ---- the workflow's jobs (modmask.steps.run) ------------------------------------------------------------

def network_job(job: steps.Job) -> None:
    log, device = job.start()
    train_network(job.json("arch"), job.json("settings"), job.input["data"], job.seed, device, job.output["network"],
                  log, job.provenance, checkpoint_every=job.checkpoint_every)


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
    masks = {Path(p).stem[len("mask_"):]: p for p in job.input["masks"]}
    evaluate(job.input["network"], masks, job.input["data"], device, job.output, log, job.provenance)


def stability_job(job: steps.Job) -> None:
    log, _ = job.start()
    pairs: dict[str, list] = {}
    for path in sorted(job.input["masks"]):  # <pair>_mask0.pt, <pair>_mask1.pt
        pairs.setdefault(Path(path).stem.rsplit("_mask", 1)[0], []).append(path)
    stability(pairs, job.output["stability"], log, job.provenance)

"""Workflow steps of the experiments of the ``experiments`` config block (add/mul, double addition):
pretrain a network, train a mask per task, evaluate. Plain functions of paths and config blocks; the
``<stage>_job`` functions at the end are what ``modmask.steps.run`` calls for their rules."""
from __future__ import annotations

import logging

from . import experiments, steps
from .io import read_parquet
from .masks import MaskSelection, WeightMask
from .metrics import probability_histogram, sharing_table, weights_kept
from .models import build_model, layer_label
from .training import BatchSampler, TrainSettings, train_mask, train_network


def pretrain(experiment: str, arch_spec: dict, train_block: dict, data_path, seed: int, device, out_path,
             log: logging.Logger, provenance: dict, checkpoint_path=None) -> None:
    exp = experiments.get(experiment)
    df = read_parquet(data_path)
    model = build_model(arch_spec, exp.INPUT_SIZE, exp.OUTPUT_SIZE).to(device)
    settings = TrainSettings.from_config(train_block)
    sampler = BatchSampler(exp.training_tensors(df, "all"), settings.batch_size, seed, device)
    log.info("pretraining %s (%d parameters) for %d steps", arch_spec, sum(p.numel() for p in model.parameters()),
             settings.steps)
    history = train_network(model, sampler, experiments.loss_for(exp, "all"), settings,
                            forward=experiments.forward_for(exp, arch_spec), checkpoint_path=checkpoint_path,
                            identity=str(provenance), log=log)
    steps.save_network(out_path, experiment, arch_spec, model, history, provenance)


def mask_selection(block: dict) -> MaskSelection:
    return MaskSelection(include=tuple(block.get("include", (r".*",))), exclude=tuple(block.get("exclude", ())),
                         mask_biases=bool(block.get("mask_biases", False)), mask_norms=bool(block.get("mask_norms", False)))


def train_task_mask(experiment: str, task: str, mask_block: dict, net_path, data_path, seed: int, device, out_path,
                    log: logging.Logger, provenance: dict, checkpoint_path=None) -> None:
    exp = experiments.get(experiment)
    df = read_parquet(data_path)
    model, saved = steps.load_network(net_path, experiment, device)
    for p in model.parameters():
        p.requires_grad_(False)
    batch_dim, output_batch_dim = experiments.masked_batch_dims(exp, saved["spec"])
    settings = TrainSettings.from_config(mask_block)
    sampler = BatchSampler(exp.training_tensors(df, task), settings.batch_size, seed, device)
    mask = WeightMask.for_module(model, mask_selection(mask_block), settings.initial_logit)
    log.info("training mask for task %r: %d masked weights, K=%d, beta %g, %d steps", task, mask.numel(),
             settings.mask_samples, settings.beta, settings.steps)
    mask, history = train_mask(model, sampler, experiments.loss_for(exp, task), settings, mask=mask, seed=seed,
                               batch_dim=batch_dim, output_batch_dim=output_batch_dim,
                               forward=experiments.forward_for(exp, saved["spec"]),
                               checkpoint_path=checkpoint_path, identity=str(provenance), log=log)
    steps.save_mask(out_path, mask, history, provenance)


def evaluate(experiment: str, net_path, mask_paths: dict, data_path, device, out_paths: dict,
             log: logging.Logger, provenance: dict) -> None:
    """Writes the experiment's tables plus ``layers`` (weights kept) and ``sharing`` tables."""
    exp = experiments.get(experiment)
    df = read_parquet(data_path)
    model, saved = steps.load_network(net_path, experiment, device)
    logits = {task: steps.load_mask(path) for task, path in mask_paths.items()}
    masks = {task: mask.binary() for task, mask in logits.items()}
    labels = {n: layer_label(model, n) for n in next(iter(masks.values())).names}
    tables = exp.evaluate(model, masks, df, device, saved["spec"])
    tables["layers"] = weights_kept(masks, labels)
    tables["sharing"] = sharing_table({t: masks[t] for t in exp.SHARING_TASKS}, labels)
    tables["histogram"] = probability_histogram(logits)
    steps.write_tables(tables, out_paths, provenance, log)


# ---- the workflow's jobs (modmask.steps.run) ------------------------------------------------------------

def _settings(job: steps.Job) -> dict:
    settings = job.json("settings")
    settings.setdefault("checkpoint_every", job.checkpoint_every)
    return settings


def network_job(job: steps.Job) -> None:
    log, device = job.start()
    pretrain(job.experiment, job.json("arch"), _settings(job), job.input["data"], job.seed, device,
             job.output["network"], log, job.provenance, checkpoint_path=job.params["checkpoint"])


def mask_job(job: steps.Job) -> None:
    log, device = job.start()
    task = job.wildcards["task"]
    train_task_mask(job.experiment, task, _settings(job), job.input["network"], job.input["data"],
                    steps.mask_seed(job.seed, task), device, job.output["mask"], log, job.provenance,
                    checkpoint_path=job.params["checkpoint"])


def evaluate_job(job: steps.Job) -> None:
    log, device = job.start()
    masks = {task: job.input[task] for task in job.params["tasks"]}
    evaluate(job.experiment, job.input["network"], masks, job.input["data"], device, job.output, log, job.provenance)

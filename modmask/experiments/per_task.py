"""The steps of experiments that pretrain a network on one table and train one mask per task of it
(add/mul, double addition; paper sections 3.1-3.2). Each takes the experiment module first; see
:mod:`modmask.experiments` for what such a module supplies."""
from __future__ import annotations

from . import Step, forward_for, loss_for, masked_batch_dims
from ..masks import MaskSelection, WeightMask
from ..metrics import probability_histogram, sharing_table, weights_kept
from ..models import build_model, layer_label
from ..training import BatchSampler, train_mask as train_mask_logits, train_network as train_weights


def train_network(exp, step: Step):
    df = step.data["data"]
    model = build_model(step.spec, exp.INPUT_SIZE, exp.OUTPUT_SIZE).to(step.device)
    settings = step.train
    sampler = BatchSampler(exp.training_tensors(df, "all"), settings.batch_size, step.seed, step.device)
    step.log.info("pretraining %s (%d parameters) for %d steps", step.spec,
                  sum(p.numel() for p in model.parameters()), settings.steps)
    history = train_weights(model, sampler, loss_for(exp, "all"), settings, forward=forward_for(exp, step.spec),
                            checkpoint_path=step.checkpoint_path, identity=step.identity, log=step.log)
    return model, history, {}


def mask_selection(block: dict) -> MaskSelection:
    """Which parameters a mask covers (the mask block's ``include``, ``exclude``, ``mask_biases``, ``mask_norms``)."""
    return MaskSelection(include=tuple(block.get("include", (r".*",))), exclude=tuple(block.get("exclude", ())),
                         mask_biases=bool(block.get("mask_biases", False)),
                         mask_norms=bool(block.get("mask_norms", False)))


def train_mask(exp, step: Step):
    """The mask of task ``step.name`` on the frozen network."""
    model, spec = step.network, step.network_file["spec"]
    for p in model.parameters():
        p.requires_grad_(False)
    batch_dim, output_batch_dim = masked_batch_dims(exp, spec)
    settings = step.train
    sampler = BatchSampler(exp.training_tensors(step.data["data"], step.name), settings.batch_size, step.seed,
                           step.device)
    mask = WeightMask.for_module(model, mask_selection(step.settings), settings.initial_logit)
    step.log.info("training mask for task %r: %d masked weights, K=%d, beta %g, %d steps", step.name, mask.numel(),
                  settings.mask_samples, settings.beta, settings.steps)
    mask, history = train_mask_logits(model, sampler, loss_for(exp, step.name), settings, mask=mask, seed=step.seed,
                                      batch_dim=batch_dim, output_batch_dim=output_batch_dim,
                                      forward=forward_for(exp, spec), checkpoint_path=step.checkpoint_path,
                                      identity=step.identity, log=step.log)
    return mask, history, {}


def evaluate(exp, step: Step):
    """The experiment's tables (``evaluate_masks``) plus ``layers`` (weights kept), ``sharing`` (of the
    masks of ``SHARING_TASKS``) and ``histogram`` (of the masks' keep probabilities)."""
    model = step.network
    masks = {task: mask.binary() for task, mask in step.masks.items()}
    labels = {n: layer_label(model, n) for n in next(iter(masks.values())).names}
    tables = exp.evaluate_masks(model, masks, step.data["data"], step.device, step.network_file["spec"])
    tables["layers"] = weights_kept(masks, labels)
    tables["sharing"] = sharing_table({t: masks[t] for t in exp.SHARING_TASKS}, labels)
    tables["histogram"] = probability_histogram(step.masks)
    return tables

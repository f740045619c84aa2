"""Permuted MNIST transfer with masks (paper section 3.3, Fig. 3 and 15).

One network learns 11 tasks in turn; task t is MNIST with the fixed pixel permutation t (task 0
the identity). Per task the weights and a fresh mask train together (:func:`train_jointly`).
Afterwards the weights in the task's final mask are frozen for all later tasks, every other weight
is re-initialised, and the next task gets a new mask. The first layer is always re-initialised and
never frozen: it has to undo each task's permutation. The measurement: per layer, the fraction of
task t's weights that an earlier task already used.

This is not a pretrain-then-mask experiment, so it has its own DAG instead of the three steps of the
other experiment modules: one job per (variant, seed) runs :func:`run` (``modmask.steps.sequential_run``),
one collects :func:`tables` over all runs (``rules/permuted_mnist.smk``).
"""
from __future__ import annotations

import logging

import pandas as pd
import torch
from torch import nn
from torch.nn import functional as F

from ..data import mnist
from ..masked_model import run_with_mask
from ..masks import BinaryMask, MaskSelection, WeightMask
from ..metrics import TOTAL
from ..models import FNN
from ..training import BatchSampler, History, TrainSettings, train_jointly

NAME = "permuted_mnist"
INPUT_SIZE = mnist.PIXELS
OUTPUT_SIZE = mnist.CLASSES
SELECTION = MaskSelection(mask_biases=True)  # the paper masks the biases here
RUN_FORMAT = "modmask.PermutedMnistRun/1"


def build_network(hidden: list[int], init: str = "pytorch") -> FNN:
    return FNN(INPUT_SIZE, list(hidden), OUTPUT_SIZE, init=init)


def first_layer(model: FNN) -> list[str]:
    """Names of the first layer's parameters (always re-initialised, never frozen)."""
    return [f"layers.0.{n}" for n, _ in model.layers[0].named_parameters()]


def layer_labels(model: FNN) -> dict[str, str]:
    """``layer 1`` ... ``layer L`` for weights (the paper's numbering), ``layer k (bias)`` for biases."""
    labels = {}
    for i, layer in enumerate(model.layers):
        for name, _ in layer.named_parameters():
            labels[f"layers.{i}.{name}"] = f"layer {i + 1}" + (" (bias)" if name == "bias" else "")
    return labels


def task_seed(seed: int, task: int) -> int:
    """Seed of everything random in task ``task`` of run ``seed`` (initialisation, batches, mask noise)."""
    return seed * 1000 + task


def fresh_parameters(model: FNN, seed: int) -> dict[str, torch.Tensor]:
    """Parameters of a freshly initialised copy of ``model`` (its sizes and init scheme), from ``seed``."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        fresh = build_network([layer.out_features for layer in model.layers[:-1]], model.init)
    return {n: p.detach() for n, p in fresh.named_parameters()}


@torch.no_grad()
def reinitialise(model: FNN, keep: dict[str, torch.Tensor], seed: int) -> None:
    """Re-initialise every parameter entry of ``model`` except those with ``keep`` bits set.

    Parameters missing from ``keep`` are re-initialised entirely (the first layer).
    """
    fresh = fresh_parameters(model, seed)
    for name, param in model.named_parameters():
        new = fresh[name].to(param.device, param.dtype)
        if name in keep:
            new = torch.where(keep[name].to(param.device), param, new)
        param.copy_(new)


def frozen_entries(used: BinaryMask | None, model: FNN) -> dict[str, torch.Tensor]:
    """The entries of the parameters that stay fixed: all weights used so far, except the first layer."""
    if used is None:
        return {}
    skip = set(first_layer(model))
    return {n: b for n, b in used.bits.items() if n not in skip}


@torch.no_grad()
def initial_logits(mask: WeightMask, frozen: dict[str, torch.Tensor], init: dict, default: float) -> None:
    """Set a new task's mask logits.

    ``init`` empty (the normal init, Fig. 3): every logit ``default``. With ``used_logit`` and
    ``new_logit`` (Fig. 15): frozen (already used) entries start at ``used_logit``, all others at
    ``new_logit``. The first task has no used weights, so it always gets the normal init.
    """
    if not init or not frozen:
        for name in mask.names:
            mask.logits[name.replace(".", "__")].fill_(default)
        return
    for name in mask.names:
        logit = mask.logits[name.replace(".", "__")]
        used = frozen.get(name, torch.zeros(logit.shape, dtype=torch.bool)).to(logit.device)
        logit.copy_(torch.where(used, torch.full_like(logit, float(init["used_logit"])),
                                torch.full_like(logit, float(init["new_logit"]))))


def sharing_rows(mask: BinaryMask, earlier: BinaryMask | None, labels: dict[str, str],
                 reinitialised: list[str]) -> list[dict]:
    """Per parameter and in total: weights of this task's mask, how many an earlier task used, the fraction.

    ``earlier`` is the union of the earlier tasks' final masks (None for the first task: nothing shared).
    """
    rows, own_total, shared_total = [], 0, 0
    for index, name in enumerate(mask.names):
        own = int(mask.bits[name].sum())
        shared = int((mask.bits[name] & earlier.bits[name]).sum()) if earlier is not None else 0
        if name not in reinitialised:
            own_total += own
            shared_total += shared
        rows.append({"layer": name, "layer_label": labels.get(name, name), "layer_index": index,
                     "reinitialised": name in reinitialised, "used": own, "shared": shared,
                     "shared_fraction": shared / own if own else float("nan")})
    rows.append({"layer": TOTAL, "layer_label": "total (without layer 1)", "layer_index": len(mask.names),
                 "reinitialised": False, "used": own_total, "shared": shared_total,
                 "shared_fraction": shared_total / own_total if own_total else float("nan")})
    return rows


def capacity_rows(mask: BinaryMask, frozen_after: dict[str, torch.Tensor], labels: dict[str, str]) -> list[dict]:
    """Per parameter: its size, the weights the task's mask keeps, and the fraction frozen after the task."""
    rows = []
    for index, name in enumerate(mask.names):
        size = mask.bits[name].numel()
        frozen = int(frozen_after[name].sum()) if name in frozen_after else 0
        rows.append({"layer": name, "layer_label": labels.get(name, name), "layer_index": index, "size": size,
                     "kept": int(mask.bits[name].sum()), "kept_fraction": int(mask.bits[name].sum()) / size,
                     "frozen": frozen, "frozen_fraction": frozen / size})
    return rows


@torch.no_grad()
def accuracy(model: nn.Module, mask: BinaryMask | None, x: torch.Tensor, y: torch.Tensor, device,
             chunk: int = 4096) -> float:
    correct = 0
    for i in range(0, len(y), chunk):
        out = run_with_mask(model, mask, x[i:i + chunk].to(device))
        correct += int((out.argmax(-1).cpu() == y[i:i + chunk]).sum())
    return correct / max(len(y), 1)


NOT_SETTINGS = ("mnist_dir", "download", "mirror", "verify")  # where the data comes from, not what it is


def run_settings(block: dict, variant: str) -> dict:
    """What one run of the ``permuted_mnist`` config block depends on: tasks, network, training, the
    data subset and the variant's mask init; not where MNIST lies or whether it was downloaded."""
    data = {k: v for k, v in block["data"].items() if k not in NOT_SETTINGS}
    return {"tasks": block["tasks"], "architecture": block["architecture"], "train": block["train"], "data": data,
            "mask_init": block["variants"][variant]}


def run_data(data_block: dict, log: logging.Logger, seed: int = 0):
    """MNIST from ``data_block["mnist_dir"]``, cut to ``train_size`` / ``test_size`` (fixed subsets)."""
    data = mnist.load(data_block["mnist_dir"], verify=data_block.get("verify", True))
    data = {split: mnist.subset(*data[split], data_block.get(f"{split}_size"), seed) for split in data}
    log.info("MNIST from %s: %d training, %d test images", data_block["mnist_dir"], len(data["train"][1]),
             len(data["test"][1]))
    return data


def settings_for(block: dict) -> TrainSettings:
    return TrainSettings.from_config(block["train"])


def run(block: dict, variant: str, data: dict, seed: int, device, log: logging.Logger,
        task_checkpoint_path=None, identity: str = "", save_progress=None,
        load_progress=None, checkpoint_every: int = 0, code_version: str = "") -> dict:
    """All tasks of one (variant, seed) in order; returns the run's per-task results.

    ``block``: the run's settings (``tasks``, ``architecture``, ``train``, ``mask_init``: the variant's
    ``{used_logit, new_logit}``, empty for the normal init); ``variant`` only names the run.
    ``data``: ``{"train": (images, labels), "test": (...)}`` as :func:`mnist.load` gives.
    ``save_progress(state)`` / ``load_progress()`` persist the state after each finished task, so
    a restarted job continues with the next task (and inside a task from its last checkpoint).
    ``code_version`` is recorded with each task it trains (a resumed run may span code versions).
    """
    settings = TrainSettings.from_config(block["train"], checkpoint_every=checkpoint_every)
    init = block.get("mask_init") or {}
    n_tasks = int(block["tasks"])
    perms = mnist.permutations(n_tasks, seed)
    x_train, y_train = mnist.flatten(data["train"][0]), data["train"][1]
    x_test, y_test = mnist.flatten(data["test"][0]), data["test"][1]
    model = build_network(block["architecture"]["hidden"], block["architecture"].get("init", "pytorch")).to(device)
    labels = layer_labels(model)
    reinit_names = first_layer(model)
    tasks: list[dict] = []
    used: BinaryMask | None = None
    state = load_progress() if load_progress else None
    if state is not None:
        model.load_state_dict(state["model"])
        tasks = state["tasks"]
        used = BinaryMask.from_file_dict(state["used"]) if state["used"] is not None else None
        log.info("resuming after task %d of %d", len(tasks) - 1, n_tasks)
        earlier = sorted({t.get("code_version", "") for t in tasks} - {code_version})
        if earlier:
            log.warning("finished tasks were trained by code version(s) %s, the rest runs under %s; "
                        "each task's rows carry the version that trained it", ", ".join(earlier), code_version)
    for task in range(len(tasks), n_tasks):
        frozen = frozen_entries(used, model)
        reinitialise(model, frozen, task_seed(seed, task))
        mask = WeightMask.for_module(model, SELECTION, settings.initial_logit)
        initial_logits(mask, frozen, init, settings.initial_logit)
        sampler = BatchSampler([mnist.permute(x_train, perms[task]), y_train], settings.batch_size,
                               task_seed(seed, task), device)
        log.info("task %d/%d (variant %s): %d weights frozen, %d masked, %d steps", task, n_tasks - 1, variant,
                 sum(int(b.sum()) for b in frozen.values()), mask.numel(), settings.steps)
        history: History = train_jointly(
            model, mask, sampler, F.cross_entropy, settings, frozen=frozen, seed=task_seed(seed, task),
            checkpoint_path=task_checkpoint_path, identity=f"{identity} task {task}", log=log,
            steps_after=(n_tasks - 1 - task) * settings.steps)
        final = mask.binary()
        x_task = mnist.permute(x_test, perms[task])
        result = {
            "task": task,
            "code_version": code_version,
            "mask": final.to_file_dict(),
            "sharing": sharing_rows(final, used, labels, reinit_names),
            "accuracy": {"own_mask": accuracy(model, final, x_task, y_test, device),
                         "no_mask": accuracy(model, None, x_task, y_test, device)},
            "history": history.rows,
        }
        used = final if used is None else used | final
        result["capacity"] = capacity_rows(final, frozen_entries(used, model), labels)
        tasks.append(result)
        log.info("task %d: accuracy %.4f with its mask (%.4f without); shared %s", task,
                 result["accuracy"]["own_mask"], result["accuracy"]["no_mask"],
                 ", ".join(f"{r['layer_label']} {r['shared_fraction']:.3f}" for r in result["sharing"]
                           if not r["layer"].endswith("bias")))
        if save_progress:
            save_progress({"model": {k: v.cpu() for k, v in model.state_dict().items()}, "tasks": tasks,
                           "used": used.to_file_dict()})
    return {"format": RUN_FORMAT, "variant": variant, "seed": seed, "tasks": tasks,
            "permutations": perms}


# Carrying an unfinished run to another machine (modmask.carry): a run's progress after a task without
# what the next task overwrites. At a task's start every parameter entry outside the frozen ones is
# re-initialised (:func:`reinitialise`), so only the frozen entries' values matter: a few thousand numbers
# instead of the whole network, and the run resumes from them bit for bit.
PORTABLE_FORMAT = "modmask.PermutedMnistProgress/1"


def _first_layer_name(name: str) -> bool:
    return name.startswith("layers.0.")  # the names first_layer() gives


def portable_progress(state: dict) -> dict:
    """``state`` (a run's progress: identity, model, tasks, used) cut to what the remaining tasks need."""
    used = BinaryMask.from_file_dict(state["used"])
    model = state["model"]
    frozen = {name: bits for name, bits in used.bits.items() if not _first_layer_name(name)}
    return {"format": PORTABLE_FORMAT, "identity": state["identity"], "tasks": state["tasks"],
            "used": state["used"], "shapes": {name: list(value.shape) for name, value in model.items()},
            "frozen_values": {name: model[name][bits.to(model[name].device)].clone() for name, bits in frozen.items()}}


def finished_progress(run: dict, identity: str) -> dict:
    """A finished run (:func:`run`'s result) as the portable progress after its last task: resumed, it
    trains nothing and writes the same run again."""
    used = BinaryMask.union([BinaryMask.from_file_dict(task["mask"]) for task in run["tasks"]])
    return {"format": PORTABLE_FORMAT, "identity": identity, "tasks": run["tasks"], "used": used.to_file_dict(),
            "shapes": {name: list(bits.shape) for name, bits in used.bits.items()}, "frozen_values": {},
            "finished": True}


def resumable_progress(portable: dict) -> dict:
    """The progress :func:`run` resumes from, rebuilt from :func:`portable_progress`'s (zeros where the
    next task re-initialises)."""
    if portable.get("format") != PORTABLE_FORMAT:
        raise ValueError(f"not a carried permuted-MNIST progress (format {portable.get('format')!r})")
    used = BinaryMask.from_file_dict(portable["used"])
    model = {name: torch.zeros(shape) for name, shape in portable["shapes"].items()}
    for name, values in portable["frozen_values"].items():
        model[name][used.bits[name]] = values
    return {"identity": portable["identity"], "model": model, "tasks": portable["tasks"], "used": portable["used"]}


def tables(run: dict, provenance: dict) -> dict[str, pd.DataFrame]:
    """Tidy tables of one run: ``sharing`` and ``layers`` (a row per task and layer), ``accuracy`` (per task)."""
    sharing, layers, acc = [], [], []
    for result in run["tasks"]:
        # the code version that trained this task (runs resumed across versions), else the run's
        task = {"task": result["task"]}
        version = result.get("code_version") or provenance.get("code_version")
        if version is not None:
            task["code_version"] = version
        sharing += [{**task, **row} for row in result["sharing"]]
        layers += [{**task, **row} for row in result["capacity"]]
        acc += [{**task, "mask": name, "accuracy": value} for name, value in result["accuracy"].items()]
    out = {"sharing": pd.DataFrame(sharing), "layers": pd.DataFrame(layers), "accuracy": pd.DataFrame(acc)}
    columns = list(provenance)
    for name, df in out.items():
        for key in columns:
            if key not in df.columns:
                df[key] = provenance[key]
        out[name] = df[columns + [c for c in df.columns if c not in columns]]
    return out

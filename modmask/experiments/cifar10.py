"""CIFAR-10 class removal and mask stability (paper section 3.6, appendix B.1; Fig. 6, 18-21).

A CNN is trained on all ten classes. A *control* mask is trained on all classes; for each class c a
mask is trained on the data without c, with the output layer's mask fixed to the control's (so the
removed class keeps its output weights and any drop comes from the layers below). Each mask is scored
by a confusion matrix on the full test set; its difference from the control's shows where the removed
class's images go. Stability: masks trained without a random pair of classes, twice with different
seeds, compared by IoU over all masked weights, each mask trained on its own (the original code
shared the output layer's logits between the two, which inflated the IoU).

Images stay uint8 in memory (50,000 x 3 x 32 x 32 is 150 MB, four times less than float); batches
are augmented (ResNet) and normalised on the fly.
"""
from __future__ import annotations

import logging

import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn

from ..cnn import build_cnn
from ..io import load_torch
from ..data import cifar10 as cifar_data
from ..masked_model import run_with_mask
from ..masks import BinaryMask, MaskSelection, WeightMask
from ..metrics import iou
from .. import training
from ..training import BatchSampler, History, TrainSettings

NAME = "cifar10"
CLASSES = cifar_data.CLASSES
OUTPUT_LAYER = "output.weight"
CONTROL = "control"
NONE = "none"
# Convolution and linear weights; BatchNorm parameters and biases are not masked (the paper's choice).
SELECTION = MaskSelection()


def without_mask_name(removed: str | tuple[str, ...]) -> str:
    removed = (removed,) if isinstance(removed, str) else tuple(removed)
    return "without_" + "+".join(removed)


def class_index(name: str) -> int:
    if name not in CLASSES:
        raise ValueError(f"unknown CIFAR-10 class {name!r}; classes: {', '.join(CLASSES)}")
    return CLASSES.index(name)


def without_classes(images: torch.Tensor, labels: torch.Tensor, removed: tuple[str, ...]):
    keep = torch.ones_like(labels, dtype=torch.bool)
    for name in removed:
        keep &= labels != class_index(name)
    return images[keep], labels[keep]


class ImageSampler:
    """Random batches of uint8 images, optionally with crop + flip augmentation; seeded and resumable."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, batch_size: int, seed: int, device,
                 augment: bool = False):
        self.batches = BatchSampler([images, labels], batch_size, seed, device)
        self.augment = augment
        self.generator = torch.Generator()
        self.generator.manual_seed(seed + 1)

    def __call__(self):
        images, labels = self.batches()
        if self.augment:
            images = cifar_data.augment(images.cpu(), self.generator).to(images.device)
        return images, labels

    def state_dict(self):
        return {"batches": self.batches.state_dict(), "generator": self.generator.get_state()}

    def load_state_dict(self, state):
        self.batches.load_state_dict(state["batches"])
        self.generator.set_state(state["generator"])


def normalized(model, images):
    return model(cifar_data.normalize(images))


def loss(logits, labels):
    return F.cross_entropy(logits, labels)


# ---- training -----------------------------------------------------------------------------------

def pretrain(train: tuple[torch.Tensor, torch.Tensor], spec: dict, settings: TrainSettings, seed: int, device,
             log: logging.Logger, augment: bool = False, checkpoint_path=None,
             identity: str = "") -> tuple[nn.Module, History]:
    model = build_cnn(spec, seed).to(device)
    sampler = ImageSampler(*train, settings.batch_size, seed, device, augment=augment)
    log.info("training %s (%d parameters) on %d images for %d steps%s", spec["model"],
             sum(p.numel() for p in model.parameters()), len(train[1]), settings.steps,
             ", crop + flip augmentation" if augment else "")
    history = training.train_network(model, sampler, loss, settings, forward=normalized,
                                     checkpoint_path=checkpoint_path, identity=identity, log=log)
    return model.eval(), history


def train_class_mask(model: nn.Module, train: tuple[torch.Tensor, torch.Tensor], settings: TrainSettings,
                     seed: int, device, log: logging.Logger, removed: tuple[str, ...] = (),
                     fixed_output: WeightMask | None = None, checkpoint_path=None,
                     identity: str = "", monitor=None) -> tuple[WeightMask, History]:
    """A mask on the frozen ``model`` for the training images without the ``removed`` classes.

    ``fixed_output``: a (control) mask whose output-layer logits this mask uses and never trains.
    ``monitor``: see :func:`modmask.training.train_mask`. The network runs in eval mode, so BatchNorm uses its
    running statistics.
    """
    for p in model.parameters():
        p.requires_grad_(False)
    images, labels = without_classes(*train, removed)
    mask = WeightMask.for_module(model, SELECTION, settings.initial_logit)
    if fixed_output is not None:
        mask.fix(OUTPUT_LAYER, fixed_output.logit(OUTPUT_LAYER))
    sampler = ImageSampler(images, labels, settings.batch_size, seed, device)
    log.info("training a mask without %s on %d images: %d masked weights%s, K=%d, beta %g, %d steps",
             ", ".join(removed) or "any class", len(labels), mask.numel(),
             " (output layer fixed to the control mask's)" if fixed_output is not None else "",
             settings.mask_samples, settings.beta, settings.steps)
    return training.train_mask(model, sampler, loss, settings, mask=mask, seed=seed, forward=normalized,
                               checkpoint_path=checkpoint_path, identity=identity, log=log, monitor=monitor)


# ---- evaluation ---------------------------------------------------------------------------------

@torch.no_grad()
def predictions(model: nn.Module, mask: BinaryMask | None, images: torch.Tensor, device,
                chunk: int = 1000) -> torch.Tensor:
    model.eval()
    out = []
    for start in range(0, len(images), chunk):
        batch = cifar_data.normalize(images[start:start + chunk].to(device))
        out.append(run_with_mask(model, mask, batch).argmax(-1).cpu())
    return torch.cat(out)


def confusion_counts(labels: torch.Tensor, predicted: torch.Tensor, n: int = len(CLASSES)) -> torch.Tensor:
    """``[true, predicted]`` counts."""
    return torch.bincount(labels * n + predicted, minlength=n * n).reshape(n, n)


def mask_tables(counts: torch.Tensor, mask: str, removed_class: str | None) -> tuple[list[dict], list[dict]]:
    """Per-class accuracy rows and confusion rows (row-normalised fractions) of one mask."""
    totals = counts.sum(1)
    accuracy, confusion = [], []
    for i, true in enumerate(CLASSES):
        total = int(totals[i])
        accuracy.append({"mask": mask, "removed_class": removed_class, "class": true, "correct": int(counts[i, i]),
                         "total": total, "accuracy": float(counts[i, i]) / total if total else float("nan")})
        for j, predicted in enumerate(CLASSES):
            confusion.append({"mask": mask, "removed_class": removed_class, "true_class": true,
                              "predicted_class": predicted, "count": int(counts[i, j]),
                              "fraction": float(counts[i, j]) / total if total else float("nan")})
    return accuracy, confusion


def evaluate_masks(model: nn.Module, masks: dict[str, tuple[BinaryMask | None, str | None]],
                   test: tuple[torch.Tensor, torch.Tensor], device, log: logging.Logger):
    """``accuracy`` and ``confusion`` rows of each named (mask, removed class) on the test set."""
    images, labels = test
    accuracy, confusion = [], []
    for name, (mask, removed) in masks.items():
        counts = confusion_counts(labels, predictions(model, mask, images, device))
        a, c = mask_tables(counts, name, removed)
        accuracy += a
        confusion += c
        overall = float(counts.diagonal().sum()) / len(labels)
        removed_acc = f", {removed} {a[class_index(removed)]['accuracy']:.3f}" if removed else ""
        log.info("mask %s: test accuracy %.4f%s", name, overall, removed_acc)
    return pd.DataFrame(accuracy), pd.DataFrame(confusion)


def stability_row(a: BinaryMask, b: BinaryMask) -> dict:
    """IoU of two masks over all masked weights, with the counts behind it."""
    both, either = (a & b).count(), (a | b).count()
    return {"intersection": both, "union": either, "kept_a": a.count(), "kept_b": b.count(), "iou": iou(a, b)}


def class_pairs(count: int, seed: int) -> list[tuple[str, str]]:
    """``count`` distinct random class pairs (sorted names), drawn from ``seed``."""
    generator = torch.Generator()
    generator.manual_seed(seed)
    pairs = [(CLASSES[i], CLASSES[j]) for i in range(len(CLASSES)) for j in range(i + 1, len(CLASSES))]
    if count > len(pairs):
        raise ValueError(f"asked for {count} class pairs; CIFAR-10 has {len(pairs)}")
    order = torch.randperm(len(pairs), generator=generator)[:count]
    return [pairs[i] for i in order.tolist()]


def network_from_file(data: dict) -> nn.Module:
    """The architecture of a saved CIFAR-10 network (modmask.steps.load_network fills in its weights)."""
    return build_cnn(data["spec"], seed=0)


# ---- the workflow's steps (modmask.experiments protocol) -------------------------------------------

def load_data(path) -> dict:
    """The image cache of rule cifar10_data (checked; no code runs, see io.load_torch)."""
    return cifar_data.check_cache(load_torch(path), path)


def _part(cache: dict, part: str) -> tuple[torch.Tensor, torch.Tensor]:
    return cache[part]["images"], cache[part]["labels"]


def removed_classes(mask_name: str) -> tuple[str, ...]:
    """The classes a mask is trained without, from its name: ``control`` (none), ``without_<class>``, or a
    stability mask ``<class>+<class>_mask<0|1>``."""
    if mask_name == CONTROL:
        return ()
    if mask_name.startswith("without_"):
        removed = (mask_name[len("without_"):],)
    else:
        removed = tuple(mask_name.rsplit("_mask", 1)[0].split("+"))
    for name in removed:
        class_index(name)
    return removed


def mask_seed(seed: int, mask_name: str) -> int:
    """The control seed*1000, without class c seed*1000 + c + 1; stability masks, distinct from those:
    seed*1000 + 500 + 100 * mask seed + 10 * first class + second class."""
    removed = removed_classes(mask_name)
    if len(removed) == 2:
        return (seed * 1000 + 500 + 100 * int(mask_name.rsplit("_mask", 1)[1]) + 10 * class_index(removed[0])
                + class_index(removed[1]))
    return seed * 1000 + (class_index(removed[0]) + 1 if removed else 0)


def train_network(step):
    """A CNN on all ten classes; its file keeps the test accuracy."""
    cache = step.data["data"]
    model, history = pretrain(_part(cache, "train"), step.spec, step.train, step.seed, step.device, step.log,
                              augment=bool(step.settings.get("augment", False)),
                              checkpoint_path=step.checkpoint_path, identity=step.identity)
    images, labels = _part(cache, "test")
    accuracy = float((predictions(model, None, images, step.device) == labels).float().mean())
    step.log.info("test accuracy %.4f", accuracy)
    return model, history, {"test_accuracy": accuracy}


def train_mask(step):
    """The mask ``step.name`` (:func:`removed_classes`); with a ``control`` mask among the inputs, its
    output layer is the control's."""
    removed = removed_classes(step.name)
    mask, history = train_class_mask(step.network, _part(step.data["data"], "train"), step.train, step.seed,
                                     step.device, step.log, removed=removed, fixed_output=step.masks.get(CONTROL),
                                     checkpoint_path=step.checkpoint_path, identity=step.identity)
    return mask, history, {"removed": list(removed)}


def evaluate(step) -> dict[str, pd.DataFrame]:
    """Tables ``accuracy`` and ``confusion`` of one (architecture, seed): the network without a mask, with
    the control mask and with each class-removal mask, on the full test set."""
    masks = {NONE: (None, None)}
    for name, mask in step.masks.items():
        removed = removed_classes(name)
        masks[name] = (mask.binary(), removed[0] if removed else None)
    accuracy, confusion = evaluate_masks(step.network, masks, _part(step.data["data"], "test"), step.device,
                                         step.log)
    return {"accuracy": accuracy, "confusion": confusion}


def stability(step) -> dict[str, pd.DataFrame]:
    """Table ``stability``: IoU of the two masks (``<pair>_mask0``, ``<pair>_mask1``) of each class pair,
    over all masked weights."""
    pairs: dict[str, list] = {}
    for name in sorted(step.masks):
        pairs.setdefault(name.rsplit("_mask", 1)[0], []).append(step.masks[name].binary())
    rows = []
    for pair, (first, second) in pairs.items():
        row = {"pair": pair, **stability_row(first, second)}
        step.log.info("pair %s: IoU %.4f (%d of %d weights in both)", pair, row["iou"], row["intersection"],
                      row["union"])
        rows.append(row)
    return {"stability": pd.DataFrame(rows)}

"""modmask: find functional modules in trained networks with differentiable binary weight masks.

A reimplementation of Csordás, van Steenkiste & Schmidhuber, "Are Neural Nets Modular? Inspecting
Functional Modularity Through Differentiable Weight Masks" (ICLR 2021).

Typical use on your own model::

    mask, history = train_mask(model, BatchSampler([x, y], 128, seed=0), loss_fn,
                               TrainSettings(steps=2000, lr=1e-2, beta=1e-4, mask_samples=4))
    kept = mask.binary()                      # deterministic mask: logit > 0
    out = run_with_mask(model, kept, x)       # the subnetwork
    out = run_with_mask(model, ~kept, x)      # its complement
"""
from __future__ import annotations

import importlib

__version__ = "0.1.0"
# Exported name -> the submodule defining it. Loaded on first access (PEP 562), so that importing one
# submodule (``modmask.data.scan``) does not import torch and the mask engine, and so that a workflow
# step's code version (modmask.code_versions) covers only the modules it really uses.
LAZY_EXPORTS = {
    "BatchNotDivisibleError": "masked_model",
    "MaskedModel": "masked_model",
    "run_with_mask": "masked_model",
    "BinaryMask": "masks",
    "MaskSelection": "masks",
    "WeightMask": "masks",
    "iomin": "metrics",
    "iou": "metrics",
    "shared_fraction": "metrics",
    "sharing_table": "metrics",
    "weights_kept": "metrics",
    "FNN": "models",
    "LSTM": "models",
    "BatchSampler": "training",
    "TrainSettings": "training",
    "train_mask": "training",
    "train_network": "training",
}
__all__ = sorted(LAZY_EXPORTS)


def __getattr__(name: str):
    if name in LAZY_EXPORTS:
        value = getattr(importlib.import_module(f"{__name__}.{LAZY_EXPORTS[name]}"), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(LAZY_EXPORTS))

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
from .masked_model import BatchNotDivisibleError, MaskedModel, run_with_mask
from .masks import BinaryMask, MaskSelection, WeightMask
from .metrics import iomin, iou, shared_fraction, sharing_table, weights_kept
from .models import FNN, LSTM
from .training import BatchSampler, TrainSettings, train_mask, train_network

__version__ = "0.1.0"
__all__ = ["BatchNotDivisibleError", "BatchSampler", "BinaryMask", "FNN", "LSTM", "MaskSelection", "MaskedModel",
           "TrainSettings", "WeightMask", "iomin", "iou", "run_with_mask", "shared_fraction", "sharing_table",
           "train_mask", "train_network", "weights_kept"]

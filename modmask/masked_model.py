"""Run any ``nn.Module`` under sampled weight masks, K mask samples per batch in one pass.

The batch is cut into K contiguous chunks along its batch dimension (``batch_dim``; 1 for
time-major ``[T, B, C]`` inputs) and chunk k runs with mask sample k. The K masked copies of each
weight are built by one fused kernel and the module is evaluated once with ``torch.func.vmap``
over ``functional_call``: linear layers become batched matmuls, convolutions grouped convolutions,
and the module's own code is not touched.

Three paths (``MaskedModel.path``), see :mod:`modmask.module_support`: ``"vectorised"`` (the one
pass), ``"fused-loop"`` (the one pass, with each recurrent or attention layer run as K calls of
PyTorch's fused kernels inside it) and ``"per-sample"`` (K separate passes, exact; for models
with recurrent cells, and taken automatically, with one warning, when ``vmap`` cannot run the
module).
"""
from __future__ import annotations

import logging
import warnings
from typing import Callable

import torch
from torch import nn
from torch.func import functional_call, vmap
from torch.utils import _pytree as pytree

from . import fused_linear
from .gumbel import COMPILE_MIN_ELEMENTS, NoiseSource, counter_uniform, sample_masked_weights
from .masks import BinaryMask, WeightMask
from .module_support import (PerSampleFallbackWarning, TrainModeError, check_train_mode, describe_vmap_failure,
                             fused_loop_modules, linear_modules, masked_call, per_sample_reason,
                             running_stat_modules)

_log = logging.getLogger("modmask.masked_model")

KERNEL_CHOICES = ("auto", "compiled", "eager", "fused")
# what the vectorised pass holds in place of a weight that the fused kernels read (see MaskedModel.forward)
_READ_BY_FUSED_FORWARD = torch.empty(0)

__all__ = ["BatchNotDivisibleError", "MaskedModel", "PerSampleFallbackWarning", "TrainModeError", "WithMask",
           "run_in_chunks", "run_with_mask"]


class BatchNotDivisibleError(ValueError):
    pass


def _split_batch(x, k: int, dim: int):
    """[..., B, ...] -> [..., K, B/K, ...] (chunks of consecutive samples)."""
    size = x.shape[dim]
    if size % k:
        raise BatchNotDivisibleError(
            f"batch size {size} (dimension {dim} of an input of shape {tuple(x.shape)}) is not divisible "
            f"by the number of mask samples {k}")
    return x.reshape(*x.shape[:dim], k, size // k, *x.shape[dim + 1:])


def _merge_batch(y, dim: int):
    return y.reshape(*y.shape[:dim], y.shape[dim] * y.shape[dim + 1], *y.shape[dim + 2:])


def _map_structure(fn, value):
    if isinstance(value, torch.Tensor):
        return fn(value)
    if isinstance(value, (tuple, list)):
        return type(value)(_map_structure(fn, v) for v in value)
    if isinstance(value, dict):
        return {k: _map_structure(fn, v) for k, v in value.items()}
    return value


class MaskedModel(nn.Module):
    """A frozen (or jointly trained) module plus a :class:`WeightMask`.

    ``batch_dim`` is where the batch lives in every tensor input, ``output_batch_dim`` (default the
    same) in every tensor output. ``kernels`` is ``"auto"``, ``"compiled"``, ``"eager"`` or ``"fused"`` (masked
    ``nn.Linear`` layers through :mod:`modmask.fused_linear` on the CPU, the rest as ``"auto"``; agrees with
    the others to float32 rounding, not bit for bit).
    ``noise_kind``: ``"counter"`` (default; the kernels hash counter keys into noise, nothing K x N
    is drawn or stored) or ``"torch"`` (uniform noise drawn from PyTorch generators into a buffer).

    Modules in training mode: dropout works (each mask sample draws its own dropout noise); a layer
    that would update running statistics (BatchNorm) raises :class:`TrainModeError`.
    """

    def __init__(self, module: nn.Module, mask: WeightMask, mask_samples: int = 4, temperature: float = 1.0,
                 batch_dim: int = 0, output_batch_dim: int | None = None, seed: int = 0,
                 kernels: str = "auto", train_weights: bool = False, noise_kind: str = "counter"):
        super().__init__()
        if mask_samples < 1:
            raise ValueError(f"mask_samples must be >= 1, got {mask_samples}")
        if kernels not in KERNEL_CHOICES:
            raise ValueError(f"kernels must be one of {', '.join(map(repr, KERNEL_CHOICES))}, got {kernels!r}")
        params = dict(module.named_parameters())
        unknown = [n for n in mask.names if n not in params]
        if unknown:
            raise KeyError(f"mask covers parameters the module lacks: {unknown}")
        self.module = module
        self.mask = mask
        self.mask_samples = mask_samples
        self.temperature = temperature
        # Samples keep a weight with probability sigmoid(logit_scale * logit); training raises it
        # above 1 to sharpen the masks (TrainSettings.sharpen_fraction). The threshold M = 1[logit > 0]
        # does not depend on it.
        self.logit_scale = 1.0
        self.batch_dim = batch_dim
        self.output_batch_dim = batch_dim if output_batch_dim is None else output_batch_dim
        self.train_weights = train_weights
        device = params[mask.names[0]].device
        self.noise = NoiseSource(seed, device, kind=noise_kind)
        total = mask.numel() * mask_samples
        self.use_compiled = kernels == "compiled" or (kernels in ("auto", "fused") and total >= COMPILE_MIN_ELEMENTS)
        self.kernels = kernels
        self._noise_buffer: torch.Tensor | None = None
        # found once: the module's structure is fixed while it is masked
        self._fused = fused_loop_modules(module)
        self._linears = linear_modules(module, mask.names)
        self._running_stats = running_stat_modules(module)
        # why K separate passes are used: a layer that is faster that way, or what vmap could not run
        # (op, module, reason) once the vectorised pass failed on this module; None: the one pass
        self._fallback: str | None = per_sample_reason(module)
        # kernels="fused": the plain nn.Linear layers that may take the fused path (not those inside a fused-loop
        # layer, which reads their weights itself), and why it was turned off for this model, if it was
        self._fusable = [(name, sub) for name, sub in self._linears
                         if not any(name.startswith(f"{outer}.") for outer, _ in self._fused)]
        self._fused_off: str | None = None
        self._fused_announced = False

    @property
    def path(self) -> str:
        """How :meth:`forward` runs the K samples: ``"vectorised"`` (one ``vmap`` pass), ``"fused-loop"``
        (one pass; recurrent and attention layers inside it as K calls of their fused kernels) or
        ``"per-sample"`` (K passes: for models with recurrent cells, and once the vectorised pass has
        failed on this module). Known for sure after the first forward."""
        if self._fallback is not None:
            return "per-sample"
        return "fused-loop" if self._fused else "vectorised"

    @property
    def fused_loop_modules(self) -> list[str]:
        """Names of the submodules that run as K calls of their fused kernels inside the vectorised pass."""
        return [name for name, _ in self._fused]

    # -- sampling ----------------------------------------------------------------------------
    def _weights(self) -> dict[str, torch.Tensor]:
        params = dict(self.module.named_parameters())
        if self.train_weights:
            return {n: params[n] for n in self.mask.names}
        return {n: params[n].detach() for n in self.mask.names}

    def draw_noise(self) -> dict[str, torch.Tensor]:
        """Fresh uniform noise for every masked parameter, shape (K, *param.shape).

        This is the noise :meth:`sample_weights` without ``noise`` would use for the same step (it
        advances the noise source by one step), materialised: for counter noise, the hashed values.
        """
        k = self.mask_samples
        if self.noise.kind == "counter":
            keys = self._next_keys()
            return {n: counter_uniform(keys[n], logit.shape, logit.dtype) for n, logit in self.mask.items()}
        total = self.mask.numel()
        first = self.mask.logit(self.mask.names[0])
        buffer = self._noise_buffer
        # One reused buffer: a fresh multi-GB allocation each step costs more than the sampling.
        # Autograd's version counter still catches a backward through an overwritten sample.
        if buffer is None or buffer.numel() != k * total or buffer.device != first.device:
            buffer = self._noise_buffer = torch.empty(k, total, device=first.device, dtype=first.dtype)
        self.noise.fill_(buffer)
        noise, offset = {}, 0
        for name, logit in self.mask.items():
            n = logit.numel()
            noise[name] = buffer[:, offset:offset + n].view(k, *logit.shape)
            offset += n
        return noise

    def _next_keys(self) -> dict[str, torch.Tensor]:
        keys = self.noise.keys(len(self.mask.names), self.mask_samples)
        return dict(zip(self.mask.names, keys))

    def _step_noise(self, noise: dict[str, torch.Tensor] | None) -> dict[str, torch.Tensor]:
        if noise is None:
            noise = self._next_keys() if self.noise.kind == "counter" else self.draw_noise()
        return noise

    def _scaled_logit(self, logit: torch.Tensor) -> torch.Tensor:
        return logit if self.logit_scale == 1.0 else logit * self.logit_scale

    def sample_weights(self, noise: dict[str, torch.Tensor] | None = None,
                       skip: frozenset[str] = frozenset()) -> dict[str, torch.Tensor]:
        """K masked copies of each masked parameter (but those in ``skip``), shape (K, *param.shape).

        ``noise`` maps each masked parameter to float noise (K, *shape) or int32 counter keys (K, 2);
        without it the next step's noise is used (counter keys, never materialised, by default).
        """
        noise = self._step_noise(noise)
        weights = self._weights()
        return {n: sample_masked_weights(weights[n], self._scaled_logit(logit), noise[n], self.temperature,
                                         self.use_compiled)
                for n, logit in self.mask.items() if n not in skip}

    def _fused_linear_specs(self, noise: dict[str, torch.Tensor]) -> dict[str, tuple]:
        """``{weight name: (weight, scaled logits, keys, use_compiled)}`` of the masked ``nn.Linear`` weights that take the
        fused path this step (``kernels="fused"``, see :mod:`modmask.fused_linear`)."""
        if self.kernels != "fused" or self._fused_off is not None or self._fallback is not None:
            return {}
        weights, specs = self._weights(), {}
        for name, _ in self._fusable:
            key = f"{name}.weight" if name else "weight"
            logit = self.mask.logit(key)
            if fused_linear.supports(weights[key], logit, noise[key], self.temperature):
                specs[key] = (weights[key], self._scaled_logit(logit), noise[key], self.use_compiled)
        specs = specs if specs and fused_linear.available() else {}
        if not self._fused_announced and torch.is_grad_enabled():
            self._fused_announced = True
            if specs:
                _log.info("kernels 'fused': %d of %d masked weights through modmask.fused_linear (%s)", len(specs),
                          len(self.mask.names), ", ".join(specs))
            else:
                _log.info("kernels 'fused': no masked weight can take them here (they need a plain nn.Linear on "
                          "the CPU, float32, counter noise, temperature 1 and a C compiler); default kernels")
        return specs

    def _others(self, replaced) -> dict[str, torch.Tensor]:
        state = {n: (p if self.train_weights else p.detach()) for n, p in self.module.named_parameters()
                 if n not in replaced}
        state.update(dict(self.module.named_buffers()))
        return state

    # -- forward passes ----------------------------------------------------------------------
    def forward(self, *args, noise: dict[str, torch.Tensor] | None = None, **kwargs):
        """Vectorised pass: chunk k of the batch runs with mask sample k."""
        check_train_mode(self._running_stats, self.mask_samples)
        k = self.mask_samples
        noise = self._step_noise(noise)
        fused = self._fused_linear_specs(noise)
        sampled = self.sample_weights(noise, skip=frozenset(fused))
        # a fused layer's weight is read by its fused forward only; code that reads it anywhere else gets an
        # empty tensor and fails, and the step runs again without the fused kernels (below), never unmasked
        others = {**self._others({**sampled, **fused}), **{name: _READ_BY_FUSED_FORWARD for name in fused}}
        split_args = _map_structure(lambda t: _split_batch(t, k, self.batch_dim), (args, kwargs))
        if self._fallback is not None:
            return self._per_sample(sampled, others, split_args)

        def one_sample(weights, a, kw):
            return functional_call(self.module, {**others, **weights}, a, kw)

        in_dims = _in_dims(split_args, self.batch_dim)
        try:
            with masked_call(self._fused, self._linears, fused):
                out = vmap(one_sample, in_dims=(0, *in_dims), out_dims=self.output_batch_dim,
                           randomness="different")(sampled, *split_args)
        except Exception as error:  # noqa: BLE001 - confirmed below by the exact per-sample path
            if fused:   # the same step without the fused kernels (the same keys: the same masks) decides
                self._fused_off = f"{type(error).__name__}: {error}"
                warnings.warn(f"MaskedModel: kernels 'fused' turned off for this model, which the default kernels "
                              f"run instead; with them the vectorised pass failed ({self._fused_off}), for "
                              f"example because the model reads a masked nn.Linear's weight outside the layer's "
                              f"forward.", RuntimeWarning, stacklevel=2)
                return self.forward(*args, noise=noise, **kwargs)
            return self._fall_back(error, sampled, others, split_args)
        return _tree_map_tensors(lambda t: _merge_batch(t, self.output_batch_dim), out)

    def forward_loop(self, *args, noise: dict[str, torch.Tensor] | None = None, **kwargs):
        """Reference implementation: K separate passes, one per mask sample and batch chunk."""
        check_train_mode(self._running_stats, self.mask_samples)
        k = self.mask_samples
        sampled = self.sample_weights(noise)
        others = self._others(sampled)
        chunks = _map_structure(lambda t: _split_batch(t, k, self.batch_dim), (args, kwargs))
        return self._per_sample(sampled, others, chunks)

    def _per_sample(self, sampled, others, chunks):
        """K ``functional_call`` passes; the outputs concatenated along ``output_batch_dim``."""
        buffers = dict(self.module.named_buffers())
        versions = {n: b._version for n, b in buffers.items()}
        outs = []
        with masked_call(self._fused, self._linears):
            for i in range(self.mask_samples):
                a, kw = _map_structure(lambda t: t.select(self.batch_dim, i), chunks)
                weights = {n: w[i] for n, w in sampled.items()}
                outs.append(functional_call(self.module, {**others, **weights}, tuple(a), kw))
                if i == 0:
                    _check_buffers_unchanged(buffers, versions, self.mask_samples)
        return _concat_outputs(outs, self.output_batch_dim)

    def _fall_back(self, error: Exception, sampled, others, split_args):
        """The vectorised pass failed: run the same samples as K passes. If that works, vmap could not
        run the module: warn once and use K passes from now on; if not, the error is the module's."""
        out = self._per_sample(sampled, others, split_args)
        self._fallback = describe_vmap_failure(error, self.module)
        warnings.warn(
            f"MaskedModel: torch.func.vmap cannot run {self._fallback}; running the {self.mask_samples} mask "
            f"samples as {self.mask_samples} separate passes instead (exact, slower). This warning is shown "
            f"once per MaskedModel.", PerSampleFallbackWarning, stacklevel=3)
        return out

    def forward_with(self, mask: BinaryMask | None, *args, **kwargs):
        """Ordinary pass with a deterministic mask (or none): what evaluation uses."""
        return run_with_mask(self.module, mask, *args, **kwargs)

    def regularizer(self, beta: float, batch_size: int) -> torch.Tensor:
        """The paper's ``beta * sum(logits) / mask batch size``."""
        return beta * self.mask.regularizer() / batch_size

    def add_regularizer_gradient_(self, beta: float, batch_size: int) -> torch.Tensor:
        """After ``task_loss.backward()``: add the gradient of :meth:`regularizer` to the trainable logits'
        gradients in place and return the regulariser's value (without a graph).

        The same numbers as ``(task_loss + regularizer(...)).backward()``: that gradient is one constant,
        computed here by the same operations on a scalar, and added to each logit gradient by one add, as
        autograd's accumulation does; but autograd would also make a full-size copy of the constant per
        logit tensor and add out of place (about 4% of a permuted-MNIST step).
        """
        with torch.no_grad():
            value = self.regularizer(beta, batch_size)
        unit = torch.zeros((), dtype=value.dtype, device=value.device, requires_grad=True)
        (beta * unit / batch_size).backward()
        constant = unit.grad
        for logit in self.mask.trainable_parameters():
            if logit.grad is None:   # no gradient from the task: autograd's would be the constant alone
                logit.grad = torch.full_like(logit, constant.item())
            else:
                logit.grad.add_(constant)
        return value


def _in_dims(value, dim):
    if isinstance(value, torch.Tensor):
        return dim
    if isinstance(value, (tuple, list)):
        return type(value)(_in_dims(v, dim) for v in value)
    if isinstance(value, dict):
        return {k: _in_dims(v, dim) for k, v in value.items()}
    return None


def _tree_map_tensors(fn, value):
    """``fn`` on every tensor of a (pytree) structure; registered containers such as Hugging Face's
    ``ModelOutput`` keep their type."""
    return pytree.tree_map(lambda v: fn(v) if isinstance(v, torch.Tensor) else v, value)


def _concat_outputs(outs: list, dim: int):
    """The K per-sample outputs as one: tensors concatenated along ``dim``; anything else must agree."""
    if isinstance(outs[0], torch.Tensor):
        return torch.cat(outs, dim=dim)
    leaves, specs = zip(*(pytree.tree_flatten(o) for o in outs))
    if any(spec != specs[0] for spec in specs[1:]):
        raise ValueError("MaskedModel: the mask samples' passes returned differently structured outputs")
    merged = []
    for column in zip(*leaves):
        first = column[0]
        if isinstance(first, torch.Tensor):
            merged.append(torch.cat(column, dim=dim))
        elif all(v is first for v in column) or (
                isinstance(first, (int, float, str, bool, type(None))) and all(v == first for v in column)):
            merged.append(first)
        else:
            raise TypeError(
                f"MaskedModel: an output of type {type(first).__name__} is not a tensor and differs between "
                f"the mask samples' passes, so it cannot be merged (for a Hugging Face model, pass "
                f"use_cache=False)")
    return pytree.tree_unflatten(merged, specs[0])


def _check_buffers_unchanged(buffers: dict[str, torch.Tensor], versions: dict[str, int], k: int) -> None:
    changed = [n for n, b in buffers.items() if b._version != versions[n]]
    if changed:
        raise TrainModeError(
            f"MaskedModel: the pass of mask sample 0 changed the buffer(s) {changed} in place; the {k} "
            f"mask samples' passes would change them {k} times. Put the modules that own them in eval "
            f"mode (model.eval()) before running masks.")


def run_with_mask(module: nn.Module, mask: BinaryMask | None, *args, **kwargs):
    """Run ``module`` with its masked parameters multiplied by a binary mask (no mask: as it is)."""
    if mask is None:
        return module(*args, **kwargs)
    return functional_call(module, mask.masked_parameters(module), args, kwargs, strict=False)


class WithMask(nn.Module):
    """``module`` under a fixed binary mask (or none), for code that takes a model, e.g. a forward function."""

    def __init__(self, module: nn.Module, mask: BinaryMask | None):
        super().__init__()
        self.module, self.mask = module, mask

    def forward(self, *args, **kwargs):
        return run_with_mask(self.module, self.mask, *args, **kwargs)


@torch.no_grad()
def run_in_chunks(fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, device, chunk: int = 4096):
    """``fn`` over ``x`` in chunks of ``chunk`` rows on ``device``; the outputs concatenated on the CPU."""
    return torch.cat([fn(x[i:i + chunk].to(device)).cpu() for i in range(0, len(x), chunk)])

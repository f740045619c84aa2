"""Run any ``nn.Module`` under sampled weight masks, K mask samples per batch in one pass.

The batch is cut into K contiguous chunks along its batch dimension (``batch_dim``; 1 for
time-major ``[T, B, C]`` inputs) and chunk k runs with mask sample k. The K masked copies of each
weight are built by one fused kernel and the module is evaluated once with ``torch.func.vmap``
over ``functional_call``: linear layers become batched matmuls, convolutions grouped convolutions,
and the module's own code is not touched.
"""
from __future__ import annotations

from typing import Callable

import torch
from torch import nn
from torch.func import functional_call, vmap

from .gumbel import COMPILE_MIN_ELEMENTS, NoiseSource, counter_uniform, sample_masked_weights
from .masks import BinaryMask, WeightMask


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
    same) in every tensor output. ``kernels`` is ``"auto"``, ``"compiled"`` or ``"eager"``.
    ``noise_kind``: ``"counter"`` (default; the kernels hash counter keys into noise, nothing K x N
    is drawn or stored) or ``"torch"`` (uniform noise drawn from PyTorch generators into a buffer).
    """

    def __init__(self, module: nn.Module, mask: WeightMask, mask_samples: int = 4, temperature: float = 1.0,
                 batch_dim: int = 0, output_batch_dim: int | None = None, seed: int = 0,
                 kernels: str = "auto", train_weights: bool = False, noise_kind: str = "counter"):
        super().__init__()
        if mask_samples < 1:
            raise ValueError(f"mask_samples must be >= 1, got {mask_samples}")
        if kernels not in ("auto", "compiled", "eager"):
            raise ValueError(f"kernels must be 'auto', 'compiled' or 'eager', got {kernels!r}")
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
        self.use_compiled = kernels == "compiled" or (kernels == "auto" and total >= COMPILE_MIN_ELEMENTS)
        self._noise_buffer: torch.Tensor | None = None

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

    def sample_weights(self, noise: dict[str, torch.Tensor] | None = None) -> dict[str, torch.Tensor]:
        """K masked copies of each masked parameter, shape (K, *param.shape).

        ``noise`` maps each masked parameter to float noise (K, *shape) or int32 counter keys (K, 2);
        without it the next step's noise is used (counter keys, never materialised, by default).
        """
        if noise is None:
            noise = self._next_keys() if self.noise.kind == "counter" else self.draw_noise()
        weights = self._weights()
        scale = self.logit_scale
        return {n: sample_masked_weights(weights[n], logit if scale == 1.0 else logit * scale, noise[n],
                                         self.temperature, self.use_compiled)
                for n, logit in self.mask.items()}

    def _others(self, replaced) -> dict[str, torch.Tensor]:
        state = {n: (p if self.train_weights else p.detach()) for n, p in self.module.named_parameters()
                 if n not in replaced}
        state.update(dict(self.module.named_buffers()))
        return state

    # -- forward passes ----------------------------------------------------------------------
    def forward(self, *args, noise: dict[str, torch.Tensor] | None = None, **kwargs):
        """Vectorised pass: chunk k of the batch runs with mask sample k."""
        k = self.mask_samples
        sampled = self.sample_weights(noise)
        others = self._others(sampled)
        split_args = _map_structure(lambda t: _split_batch(t, k, self.batch_dim), (args, kwargs))

        def one_sample(weights, a, kw):
            return functional_call(self.module, {**others, **weights}, a, kw)

        in_dims = _in_dims(split_args, self.batch_dim)
        out = vmap(one_sample, in_dims=(0, *in_dims), out_dims=self.output_batch_dim)(sampled, *split_args)
        return _map_structure(lambda t: _merge_batch(t, self.output_batch_dim), out)

    def forward_loop(self, *args, noise: dict[str, torch.Tensor] | None = None, **kwargs):
        """Reference implementation: K separate passes, one per mask sample and batch chunk."""
        k = self.mask_samples
        sampled = self.sample_weights(noise)
        others = self._others(sampled)
        chunks = _map_structure(lambda t: _split_batch(t, k, self.batch_dim), (args, kwargs))
        outs = []
        for i in range(k):
            a, kw = _map_structure(lambda t: t.select(self.batch_dim, i), chunks)
            weights = {n: w[i] for n, w in sampled.items()}
            outs.append(functional_call(self.module, {**others, **weights}, tuple(a), kw))
        if isinstance(outs[0], torch.Tensor):
            return torch.cat(outs, dim=self.output_batch_dim)
        return _map_structure_zip(lambda *ts: torch.cat(ts, dim=self.output_batch_dim), outs)

    def forward_with(self, mask: BinaryMask | None, *args, **kwargs):
        """Ordinary pass with a deterministic mask (or none): what evaluation uses."""
        return run_with_mask(self.module, mask, *args, **kwargs)

    def regularizer(self, beta: float, batch_size: int) -> torch.Tensor:
        """The paper's ``beta * sum(logits) / mask batch size``."""
        return beta * self.mask.regularizer() / batch_size


def _in_dims(value, dim):
    if isinstance(value, torch.Tensor):
        return dim
    if isinstance(value, (tuple, list)):
        return type(value)(_in_dims(v, dim) for v in value)
    if isinstance(value, dict):
        return {k: _in_dims(v, dim) for k, v in value.items()}
    return None


def _map_structure_zip(fn, values):
    first = values[0]
    if isinstance(first, torch.Tensor):
        return fn(*values)
    if isinstance(first, (tuple, list)):
        return type(first)(_map_structure_zip(fn, [v[i] for v in values]) for i in range(len(first)))
    if isinstance(first, dict):
        return {k: _map_structure_zip(fn, [v[k] for v in values]) for k in first}
    return first


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

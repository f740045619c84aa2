"""Gumbel-sigmoid mask sampling with a straight-through estimator.

For a logit ``l`` and uniform noise ``u`` the soft sample is
``s = sigmoid((l + log(u / (1 - u))) / tau)`` (the difference of two Gumbel variables is a
logistic variable, so this is the paper's ``l - log(log U1 / log U2)`` with one uniform draw).
The hard sample is ``b = 1[s > 0.5] = 1[u > sigmoid(-l)]``, hence ``P(b = 1) = sigmoid(l)`` for
every temperature. The straight-through estimator passes the gradient of ``b`` to ``s``.

The work that scales with K x (number of weights) dominates a mask-training step, so it is done in
exactly three passes over memory: drawing the noise, one fused "compare and select" pass in the
forward, and one fused pass in the backward that recomputes ``ds/dl`` from the stored noise and
reduces over the K samples. With ``tau == 1`` the derivative needs no transcendental function:
``s(1 - s) = p q u (1 - u) / (q + (p - q) u)^2`` with ``p = sigmoid(l)``, ``q = sigmoid(-l)``.
"""
from __future__ import annotations

import math
import threading
import warnings
from concurrent.futures import ThreadPoolExecutor

import torch

# Keep uniform noise strictly inside (0, 1) so logit(u) is finite; drawing in [eps, 1 - eps) costs
# nothing extra, unlike a clamp pass.
NOISE_EPS = 1e-6
# Below this many noise elements per step the compiled kernels are not worth their compile time.
COMPILE_MIN_ELEMENTS = 1 << 22


def soft_sample(logits: torch.Tensor, noise: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """The paper's soft Gumbel-sigmoid sample, written plainly (reference for tests and plots)."""
    return torch.sigmoid((logits + torch.log(noise) - torch.log1p(-noise)) / temperature)


def reference_hard_sample(logits: torch.Tensor, noise: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """Straight-through binary sample via autograd: ``(1[s > 0.5] - s).detach() + s``."""
    s = soft_sample(logits, noise, temperature)
    return ((s > 0.5).to(s.dtype) - s).detach() + s


# ---- elementwise kernels: each is one pass over the K x N noise -------------------------------

def _forward_kernel(weight, logits, noise):
    # u > sigmoid(-l)  <=>  l + logit(u) > 0  <=>  s > 0.5
    return torch.where(noise > torch.sigmoid(-logits), weight, torch.zeros((), dtype=weight.dtype, device=weight.device))


def _logit_grad_kernel_t1(grad, weight, logits, noise):
    p = torch.sigmoid(logits)
    q = torch.sigmoid(-logits)
    d = q + (p - q) * noise
    return (grad * (noise * (1.0 - noise) / (d * d))).sum(0) * (weight * p * q)


def _logit_grad_kernel(grad, weight, logits, noise, inv_temperature: float):
    s = torch.sigmoid((logits + torch.log(noise) - torch.log1p(-noise)) * inv_temperature)
    return (grad * (s * (1.0 - s))).sum(0) * weight * inv_temperature


def _weight_grad_kernel(grad, logits, noise):
    return (grad * (noise > torch.sigmoid(-logits)).to(grad.dtype)).sum(0)


class _Kernels:
    """Eager or ``torch.compile``d versions of the three kernels; falls back to eager on failure."""

    def __init__(self):
        self._compiled = None
        self._lock = threading.Lock()
        self.compile_failed = False

    def get(self, use_compiled: bool):
        eager = (_forward_kernel, _logit_grad_kernel_t1, _logit_grad_kernel, _weight_grad_kernel)
        if not use_compiled or self.compile_failed:
            return eager
        with self._lock:
            if self._compiled is None:
                self._compiled = tuple(torch.compile(k, dynamic=True) for k in eager)
        return self._compiled

    def run(self, use_compiled: bool, index: int, *args):
        try:
            return self.get(use_compiled)[index](*args)
        except Exception as error:  # a missing compiler or backend must not stop training
            if not use_compiled or self.compile_failed:
                raise
            self.compile_failed = True
            warnings.warn(f"torch.compile of the mask kernels failed ({type(error).__name__}: {error}); "
                          "using eager kernels", RuntimeWarning)
            return self.get(False)[index](*args)


KERNELS = _Kernels()


class StraightThroughMask(torch.autograd.Function):
    """Masked weights for K samples: ``out[k] = weight * b_k`` with ``b_k`` the hard sample.

    Inputs: ``weight`` (shape S), ``logits`` (S), ``noise`` (K, *S) uniform in (0, 1).
    Gradients flow to ``logits`` through the straight-through estimator, and to ``weight`` when it
    requires grad (weights and masks trained together).
    """

    @staticmethod
    def forward(ctx, weight, logits, noise, temperature: float, use_compiled: bool):
        ctx.save_for_backward(weight, logits, noise)
        ctx.temperature = temperature
        ctx.use_compiled = use_compiled
        return KERNELS.run(use_compiled, 0, weight, logits, noise)

    @staticmethod
    def backward(ctx, grad):
        weight, logits, noise = ctx.saved_tensors
        grad_weight = grad_logits = None
        if ctx.needs_input_grad[1]:
            if ctx.temperature == 1.0:
                grad_logits = KERNELS.run(ctx.use_compiled, 1, grad, weight, logits, noise)
            else:
                grad_logits = KERNELS.run(ctx.use_compiled, 2, grad, weight, logits, noise, 1.0 / ctx.temperature)
        if ctx.needs_input_grad[0]:
            grad_weight = KERNELS.run(ctx.use_compiled, 3, grad, logits, noise)
        return grad_weight, grad_logits, None, None, None


def sample_masked_weights(weight, logits, noise, temperature: float = 1.0, use_compiled: bool = False):
    """K straight-through masked copies of ``weight``; see :class:`StraightThroughMask`."""
    if noise.shape[1:] != weight.shape or logits.shape != weight.shape:
        raise ValueError(f"shape mismatch: weight {tuple(weight.shape)}, logits {tuple(logits.shape)}, "
                         f"noise {tuple(noise.shape)} (expected (K, *weight.shape))")
    if temperature <= 0:
        raise ValueError(f"temperature must be positive, got {temperature}")
    return StraightThroughMask.apply(weight, logits, noise, float(temperature), use_compiled)


class NoiseSource:
    """Seeded uniform noise for all mask samples of a step, written into one reused buffer.

    PyTorch's CPU generator is sequential, and at K x 16M weights drawing the noise costs as much
    as the network's matmuls. The buffer is therefore split into a fixed number of streams with
    their own generators, filled in parallel threads. The split does not depend on the thread
    count, so the same seed gives the same noise on any machine of the same device type.
    """

    CPU_STREAMS = 4

    def __init__(self, seed: int, device: torch.device | str = "cpu"):
        self.device = torch.device(device)
        streams = self.CPU_STREAMS if self.device.type == "cpu" else 1
        self.generators = []
        for index in range(streams):
            generator = torch.Generator(device=self.device)
            generator.manual_seed((int(seed) * 1_000_003 + index) % (2 ** 63))
            self.generators.append(generator)
        self._pool = None

    def state_dict(self):
        return {"states": [g.get_state() for g in self.generators]}

    def load_state_dict(self, state):
        for generator, value in zip(self.generators, state["states"]):
            generator.set_state(value)

    def fill_(self, buffer: torch.Tensor) -> torch.Tensor:
        flat = buffer.view(-1)
        if len(self.generators) == 1:
            flat.uniform_(NOISE_EPS, 1.0 - NOISE_EPS, generator=self.generators[0])
            return buffer
        chunk = math.ceil(flat.numel() / len(self.generators))
        parts = [(flat[i * chunk:(i + 1) * chunk], g) for i, g in enumerate(self.generators)]
        threads = max(1, min(torch.get_num_threads(), len(parts)))
        if threads == 1 or flat.numel() < (1 << 16):
            for part, generator in parts:
                part.uniform_(NOISE_EPS, 1.0 - NOISE_EPS, generator=generator)
            return buffer
        if self._pool is None or self._pool._max_workers != threads:
            self._pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="mask-noise")
        list(self._pool.map(lambda pg: pg[0].uniform_(NOISE_EPS, 1.0 - NOISE_EPS, generator=pg[1]), parts))
        return buffer

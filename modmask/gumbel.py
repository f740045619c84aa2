"""Gumbel-sigmoid mask sampling with a straight-through estimator.

For a logit ``l`` and uniform noise ``u`` the soft sample is
``s = sigmoid((l + log(u / (1 - u))) / tau)`` (the difference of two Gumbel variables is a
logistic variable, so this is the paper's ``l - log(log U1 / log U2)`` with one uniform draw).
The hard sample is ``b = 1[s > 0.5] = 1[u > sigmoid(-l)]``, hence ``P(b = 1) = sigmoid(l)`` for
every temperature. The straight-through estimator passes the gradient of ``b`` to ``s``.

Noise comes in one of two forms, accepted everywhere a ``noise`` argument appears:

* a float tensor ``(K, *shape)`` of uniform values in (0, 1) (any source; what tests and plots use);
* an int32 tensor ``(K, 2)`` of *counter keys*: the uniform value of element ``i`` of sample ``k`` is
  a hash of ``(i, key[k])`` (:func:`counter_uniform`). The kernels compute it where they need it,
  so the K x N noise is never drawn, stored or read back - at K x 16M weights drawing and storing it
  cost more than the masking itself. :func:`counter_uniform` materialises exactly the same values.

The work that scales with K x (number of weights) is one fused "compare and select" pass in the
forward and one fused pass in the backward that recomputes ``ds/dl`` from the noise and sums over
the K samples (written as an unrolled sum so the compiled kernel is a single pointwise loop). On the
CPU the forward pass also saves ``ds/dl`` per entry and sample, and the backward reads it instead of
hashing again (see "saved factors").
With ``tau == 1`` the derivative needs no transcendental function:
``s(1 - s) = p q u (1 - u) / (q + (p - q) u)^2`` with ``p = sigmoid(l)``, ``q = sigmoid(-l)``.
"""
from __future__ import annotations

import contextlib
import logging
import math
import os
import tempfile
import threading
import time
import warnings
from concurrent.futures import ThreadPoolExecutor

import torch

try:  # POSIX only; elsewhere concurrent jobs simply compile side by side
    import fcntl
except ImportError:  # pragma: no cover
    fcntl = None

_log = logging.getLogger("modmask.gumbel")

# Keep uniform noise strictly inside (0, 1) so logit(u) is finite; drawing in [eps, 1 - eps) costs
# nothing extra, unlike a clamp pass. (Counter noise lies in [2^-24, 1 - 2^-24].)
NOISE_EPS = 1e-6
# Below this many noise elements per step the compiled kernels are not worth their compile time.
COMPILE_MIN_ELEMENTS = 1 << 18
# On the CPU the forward saves the factors its backward needs instead of hashing the noise twice (see
# "saved factors" below); on a GPU arithmetic is cheaper than the memory traffic, so it hashes again.
SAVE_FACTORS_ON_CPU = True
# 1-D parameters (biases) with fewer mask elements (K x size) than this use the eager kernels even
# when the model's are compiled: they cost little either way, and would otherwise compile a 1-D
# variant of each kernel (about 45 s, cold). Small matrices share the compiled 2-D kernels.
COMPILE_MIN_PARAMETER_ELEMENTS = 1 << 15


def soft_sample(logits: torch.Tensor, noise: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """The paper's soft Gumbel-sigmoid sample, written plainly (reference for tests and plots)."""
    return torch.sigmoid((logits + torch.log(noise) - torch.log1p(-noise)) / temperature)


def reference_hard_sample(logits: torch.Tensor, noise: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """Straight-through binary sample via autograd: ``(1[s > 0.5] - s).detach() + s``."""
    s = soft_sample(logits, noise, temperature)
    return ((s > 0.5).to(s.dtype) - s).detach() + s


# ---- counter-based noise ----------------------------------------------------------------------
# A stateless hash of (element index, key) gives each element its uniform value, so any kernel can
# recompute the noise instead of storing it. The hash is Wellons' "lowbias32" (a bijection of 32-bit
# integers with near-ideal avalanche), applied twice with a 64-bit key in between; the keys of every
# (step, parameter, sample) come from splitmix64 of the seed and a step counter. All arithmetic is on
# int32 with wrap-around, the same in eager and compiled code and on any device.

_MASK32 = (1 << 32) - 1
_HASH_C1 = 0x7FEB352D
_HASH_C2 = 0x846CA68B - (1 << 32)  # as a signed int32


def _to_int32(value: int) -> int:
    value &= _MASK32
    return value - (1 << 32) if value >= (1 << 31) else value


def _hash32(x: torch.Tensor) -> torch.Tensor:
    # ">>" on int32 is arithmetic, so mask the shifted-in sign bits to get a logical shift
    x = x ^ ((x >> 16) & 0xFFFF)
    x = x * _HASH_C1
    x = x ^ ((x >> 15) & 0x1FFFF)
    x = x * _HASH_C2
    return x ^ ((x >> 16) & 0xFFFF)


def _counter_uniform(index: torch.Tensor, key_a, key_b, dtype) -> torch.Tensor:
    h = _hash32(_hash32(index ^ key_a) ^ key_b)
    # top 23 bits -> (j + 0.5) / 2^23, exactly representable in float32, strictly inside (0, 1).
    # Computed in float32 at least: j overflows float16 (max 65504), which made every such value inf.
    # Rounded to a 16-bit float, values near 1 become 1.0 (logit(u) = inf: bit 1, s(1 - s) = 0).
    wide = dtype if dtype == torch.float64 else torch.float32
    return ((((h >> 9) & 0x7FFFFF).to(wide) + 0.5) * (1.0 / (1 << 23))).to(dtype)


def _index(like: torch.Tensor) -> torch.Tensor:
    return torch.arange(like.numel(), device=like.device, dtype=torch.int32).view(like.shape)


_TRANSPOSED_INDEX: dict[tuple, torch.Tensor] = {}


def _transposed_index(shape, device) -> torch.Tensor:
    """Contiguous ``(cols, rows)`` tensor of the element indices of a ``(rows, cols)`` tensor's transpose.

    Stored, not computed in the kernel: a transposed index expression compiles to a loop that does not
    vectorise (3x slower than reading this tensor).
    """
    key = (tuple(shape), str(device))
    if key not in _TRANSPOSED_INDEX:
        index = torch.arange(shape[0] * shape[1], device=device, dtype=torch.int32).view(shape)
        _TRANSPOSED_INDEX[key] = index.t().contiguous()
    return _TRANSPOSED_INDEX[key]


def counter_uniform(keys: torch.Tensor, shape, dtype=torch.float32) -> torch.Tensor:
    """The uniform noise ``(K, *shape)`` that the counter keys ``keys`` ``(K, 2)`` stand for."""
    keys = _check_keys(keys)
    index = torch.arange(math.prod(shape), device=keys.device, dtype=torch.int32).view(*shape)
    return _all_uniform(keys, index, dtype)


def _all_uniform(noise, index, dtype, like=None):
    """Noise of all K samples at once, ``(K, *S)``: float noise as it is, counter keys hashed at the
    element indices ``index`` (default: those of ``like``)."""
    if noise.dtype != torch.int32:
        return noise
    if index is None:
        index = _index(like)
    key_shape = (noise.shape[0],) + (1,) * index.dim()
    return _counter_uniform(index.unsqueeze(0), noise[:, 0].view(key_shape), noise[:, 1].view(key_shape), dtype)


def _check_keys(keys: torch.Tensor) -> torch.Tensor:
    if keys.dtype != torch.int32 or keys.dim() != 2 or keys.shape[1] != 2:
        raise ValueError(f"counter keys must be an int32 tensor of shape (K, 2), got {keys.dtype} {tuple(keys.shape)}")
    return keys


def _splitmix64(value: int) -> int:
    value = (value + 0x9E3779B97F4A7C15) & ((1 << 64) - 1)
    value = ((value ^ (value >> 30)) * 0xBF58476D1CE4E5B9) & ((1 << 64) - 1)
    value = ((value ^ (value >> 27)) * 0x94D049BB133111EB) & ((1 << 64) - 1)
    return value ^ (value >> 31)


def counter_keys(seed: int, step: int, stream: int, samples: int) -> torch.Tensor:
    """Keys ``(samples, 2)`` for one parameter (``stream``) at one step; distinct inputs, unrelated keys."""
    base = _splitmix64(_splitmix64(_splitmix64(int(seed) & ((1 << 64) - 1)) ^ int(step)) ^ (int(stream) << 20))
    rows = []
    for k in range(samples):
        value = _splitmix64(base ^ k)
        rows.append((_to_int32(value), _to_int32(value >> 32)))
    return torch.tensor(rows, dtype=torch.int32)


def _uniform(noise, k: int, index, dtype):
    if noise.dtype == torch.int32:
        return _counter_uniform(index, noise[k, 0], noise[k, 1], dtype)
    return noise[k]


# ---- elementwise kernels: each is one pass over K x N --------------------------------------
# ``noise`` is either the float noise (K, *S) or int32 counter keys (K, 2); the branch is taken at
# trace time, so a compiled kernel exists per kind.

def _forward_kernel(weight, logits, noise):
    # u > sigmoid(-l)  <=>  l + logit(u) > 0  <=>  s > 0.5
    zero = torch.zeros((), dtype=weight.dtype, device=weight.device)
    threshold = torch.sigmoid(-logits)
    if noise.dtype != torch.int32:
        return torch.where(noise > threshold, weight, zero)
    index = _index(weight)
    return torch.stack([torch.where(_uniform(noise, k, index, logits.dtype) > threshold, weight, zero)
                        for k in range(noise.shape[0])])


def _logit_grad_kernel_t1(grad, weight, logits, noise, index=None):
    p = torch.sigmoid(logits)
    q = torch.sigmoid(-logits)
    if index is None and noise.dtype == torch.int32:
        index = _index(weight)
    total = None
    for k in range(grad.shape[0]):  # unrolled: one pointwise loop, no strided reduction
        u = _uniform(noise, k, index, logits.dtype)
        d = q + (p - q) * u
        term = grad[k] * (u * (1.0 - u) / (d * d))
        total = term if total is None else total + term
    return total * (weight * p * q)


def _logit_grad_kernel(grad, weight, logits, noise, inv_temperature: float, index=None):
    if index is None and noise.dtype == torch.int32:
        index = _index(weight)
    total = None
    for k in range(grad.shape[0]):
        u = _uniform(noise, k, index, logits.dtype)
        s = torch.sigmoid((logits + torch.log(u) - torch.log1p(-u)) * inv_temperature)
        term = grad[k] * (s * (1.0 - s))
        total = term if total is None else total + term
    return total * weight * inv_temperature


def _weight_grad_kernel(grad, logits, noise, index=None):
    threshold = torch.sigmoid(-logits)
    if index is None and noise.dtype == torch.int32:
        index = _index(logits)
    total = None
    for k in range(grad.shape[0]):
        term = grad[k] * (_uniform(noise, k, index, logits.dtype) > threshold).to(grad.dtype)
        total = term if total is None else total + term
    return total


def _joint_grad_kernel_t1(grad, weight, logits, noise, index=None):
    # both gradients of a jointly trained weight in one pass over ``grad`` (read once, not twice)
    p = torch.sigmoid(logits)
    q = torch.sigmoid(-logits)
    if index is None and noise.dtype == torch.int32:
        index = _index(weight)
    total_logit = total_weight = None
    for k in range(grad.shape[0]):
        u = _uniform(noise, k, index, logits.dtype)
        d = q + (p - q) * u
        g = grad[k]
        term_logit = g * (u * (1.0 - u) / (d * d))
        term_weight = g * (u > q).to(grad.dtype)
        total_logit = term_logit if total_logit is None else total_logit + term_logit
        total_weight = term_weight if total_weight is None else total_weight + term_weight
    return total_logit * (weight * p * q), total_weight


# ---- saved factors: hash once per step instead of twice (CPU) ---------------------------------
# On the CPU the counter hash costs more than memory traffic: hashing K x N entries again in the
# backward took more time than the forward's sampling. So when the logits need a gradient the forward
# also writes, per mask entry and sample, the factor the backward needs (``u (1 - u) / d^2`` at
# temperature 1, ``s (1 - s)`` otherwise) with the sample's bit as its sign bit (set: bit 0; a factor
# that underflows to zero keeps it, as -0.0). The backward reads those factors instead of the noise.
# Same expressions as the kernels above, so the same bits; it keeps one value per mask entry and
# sample for the backward, as many as the masked copies themselves. The sign bit is read through an
# integer view: ``torch.signbit`` compiles to a scalar loop, 9x slower.

def _factor(u, logits, p, q, inv_temperature):
    if inv_temperature is None:
        d = q + (p - q) * u
        return u * (1.0 - u) / (d * d)
    s = torch.sigmoid((logits + torch.log(u) - torch.log1p(-u)) * inv_temperature)
    return s * (1.0 - s)


def _forward_factors_kernel(weight, logits, noise, inv_temperature):
    # inv_temperature None: temperature 1 (the formula without transcendental functions)
    p = torch.sigmoid(logits)
    q = torch.sigmoid(-logits)
    zero = torch.zeros((), dtype=weight.dtype, device=weight.device)
    index = _index(weight) if noise.dtype == torch.int32 else None
    masked, factors = [], []
    for k in range(noise.shape[0]):
        u = _uniform(noise, k, index, logits.dtype)
        bit = u > q
        factor = _factor(u, logits, p, q, inv_temperature)
        masked.append(torch.where(bit, weight, zero))
        factors.append(torch.where(bit, factor, -factor))
    return torch.stack(masked), torch.stack(factors)


def _factor_grad_kernel(grad, weight, logits, factors, inv_temperature, want_logits: bool, want_weight: bool):
    total_logit = total_weight = None
    for k in range(grad.shape[0]):  # unrolled, as above
        g = grad[k]
        if want_logits:
            term = g * factors[k].abs()
            total_logit = term if total_logit is None else total_logit + term
        if want_weight:
            term = g * _kept(factors[k]).to(grad.dtype)
            total_weight = term if total_weight is None else total_weight + term
    return _logit_grad_from_total(total_logit, weight, logits, inv_temperature), total_weight


_SAME_SIZE_INT = {torch.float64: torch.int64, torch.float32: torch.int32, torch.float16: torch.int16,
                  torch.bfloat16: torch.int16}


def _kept(factors):
    # the factor's sign bit, clear for a kept weight
    return factors.view(_SAME_SIZE_INT[factors.dtype]) >= 0


def _logit_grad_from_total(total, weight, logits, inv_temperature):
    if total is None:
        return None
    if inv_temperature is None:
        return total * (weight * torch.sigmoid(logits) * torch.sigmoid(-logits))
    return total * weight * inv_temperature


def _eager_forward_factors(weight, logits, noise, inv_temperature):
    p, q = torch.sigmoid(logits), torch.sigmoid(-logits)
    u = _all_uniform(noise, None, logits.dtype, like=weight)
    bit = u > q
    factor = _factor(u, logits, p, q, inv_temperature)
    zero = torch.zeros((), dtype=weight.dtype, device=weight.device)
    return torch.where(bit, weight, zero), torch.where(bit, factor, -factor)


def _eager_factor_grad(grad, weight, logits, factors, inv_temperature, want_logits: bool, want_weight: bool):
    total_logit = (grad * factors.abs()).sum(0) if want_logits else None
    total_weight = (grad * _kept(factors).to(grad.dtype)).sum(0) if want_weight else None
    return _logit_grad_from_total(total_logit, weight, logits, inv_temperature), total_weight


# ---- the same kernels vectorised over K, for eager execution ----------------------------------
# Unrolled loops over K suit the compiler (one fused pass), but run eagerly they issue a dozen small
# ops per sample; for the small tensors that stay eager (biases) a few ops over (K, *S) are faster.

def _eager_forward(weight, logits, noise):
    u = _all_uniform(noise, None, logits.dtype, like=weight)
    return torch.where(u > torch.sigmoid(-logits), weight, torch.zeros((), dtype=weight.dtype, device=weight.device))


def _eager_logit_grad_t1(grad, weight, logits, noise, index=None):
    p, q = torch.sigmoid(logits), torch.sigmoid(-logits)
    u = _all_uniform(noise, index, logits.dtype, like=weight)
    d = q + (p - q) * u
    return (grad * (u * (1.0 - u) / (d * d))).sum(0) * (weight * p * q)


def _eager_logit_grad(grad, weight, logits, noise, inv_temperature: float, index=None):
    u = _all_uniform(noise, index, logits.dtype, like=weight)
    s = torch.sigmoid((logits + torch.log(u) - torch.log1p(-u)) * inv_temperature)
    return (grad * (s * (1.0 - s))).sum(0) * weight * inv_temperature


def _eager_weight_grad(grad, logits, noise, index=None):
    u = _all_uniform(noise, index, logits.dtype, like=logits)
    return (grad * (u > torch.sigmoid(-logits)).to(grad.dtype)).sum(0)


def _eager_joint_grad_t1(grad, weight, logits, noise, index=None):
    p, q = torch.sigmoid(logits), torch.sigmoid(-logits)
    u = _all_uniform(noise, index, logits.dtype, like=weight)
    d = q + (p - q) * u
    total_logit = (grad * (u * (1.0 - u) / (d * d))).sum(0)
    total_weight = (grad * (u > q).to(grad.dtype)).sum(0)
    return total_logit * (weight * p * q), total_weight


def _logit_sigmoids(logits):
    # p = sigmoid(l) and q = sigmoid(-l) in one pass, for modmask.fused_linear (same bits eager and compiled)
    return torch.sigmoid(logits), torch.sigmoid(-logits)


def compile_lock_path() -> str:
    """The file that serialises kernel compilation on this machine (beside the inductor cache it guards)."""
    folder = os.environ.get("TORCHINDUCTOR_CACHE_DIR") or tempfile.gettempdir()
    return os.path.join(folder, f"modmask-kernel-compile-{os.getuid() if hasattr(os, 'getuid') else 0}.lock")


# A cold compile takes about a minute; a holder that has not let go after this long is stuck (for example
# a job stopped with SIGSTOP while compiling), and waiting for it would stall this job for good.
COMPILE_LOCK_WAIT_SECONDS = 600.0


@contextlib.contextmanager
def machine_compile_lock(max_wait: float | None = None):
    """Hold the machine's compile lock: jobs that start together compile the kernels once, cold, and
    the others wait and then load them from torch's compile cache (seconds instead of a minute each).
    After ``max_wait`` seconds (default :data:`COMPILE_LOCK_WAIT_SECONDS`) of waiting it compiles without
    the lock and says so: the holder is stuck, and two compiles at once are only slower."""
    if fcntl is None:
        yield
        return
    max_wait = COMPILE_LOCK_WAIT_SECONDS if max_wait is None else max_wait
    path = compile_lock_path()
    try:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        handle = open(path, "a")
    except OSError as error:  # a read-only or foreign folder: compile without the lock, do not fail
        _log.warning("cannot open the kernel compile lock %s (%s); compiling without it", path, error)
        yield
        return
    with handle:
        held = _try_flock(handle)
        if not held:
            _log.info("waiting for another job on this machine to finish compiling the mask kernels (%s)", path)
            deadline = time.monotonic() + max_wait
            while not held and time.monotonic() < deadline:
                time.sleep(min(0.2, max(deadline - time.monotonic(), 0.0)))
                held = _try_flock(handle)
            if not held:
                _log.warning("the mask kernels' compile lock %s is still held after %.0f s of waiting; the "
                             "job holding it looks stuck (stopped or hung), so this job compiles without it",
                             path, max_wait)
        try:
            yield
        finally:
            if held:
                fcntl.flock(handle, fcntl.LOCK_UN)


def _try_flock(handle) -> bool:
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except BlockingIOError:
        return False


def _signature(args) -> tuple:
    """What makes ``torch.compile`` trace a kernel anew: which arguments are tensors, their dtype, rank and
    device, and the exact shape of an ``nn.Parameter`` (specialised: each layer compiles its own kernel,
    which runs about 20% faster than a dynamic-shape one)."""
    return tuple((a.dtype, tuple(a.shape) if isinstance(a, torch.nn.Parameter) else a.dim(), a.device.type)
                 if isinstance(a, torch.Tensor) else type(a) for a in args)


# index i: forward, logit grad (T = 1), logit grad (any T), weight grad, joint grad (T = 1),
# forward saving the backward's factors, gradients from saved factors, the logits' two sigmoids
COMPILED_KERNELS = (_forward_kernel, _logit_grad_kernel_t1, _logit_grad_kernel, _weight_grad_kernel,
                    _joint_grad_kernel_t1, _forward_factors_kernel, _factor_grad_kernel, _logit_sigmoids)
KERNEL_NAMES = ("mask sampling", "logit gradient", "logit gradient (any temperature)", "weight gradient",
                "joint weight and logit gradient", "mask sampling", "mask gradient", "logit sigmoids")
EAGER_KERNELS = (_eager_forward, _eager_logit_grad_t1, _eager_logit_grad, _eager_weight_grad,
                 _eager_joint_grad_t1, _eager_forward_factors, _eager_factor_grad, _logit_sigmoids)
FORWARD, FORWARD_SAVING_FACTORS, GRAD_FROM_FACTORS, LOGIT_SIGMOIDS = 0, 5, 6, 7


# Each kernel compiles once per layer shape (see _signature), mask sample count and setting; past torch's
# default limit of 8 per function (a Transformer has more weight shapes than that) dynamo would silently
# run the kernel uncompiled: slower, and summed in another order.
KERNEL_RECOMPILE_LIMIT = 128


def _raise_recompile_limit() -> None:
    config = torch._dynamo.config
    for name in ("recompile_limit", "cache_size_limit"):  # the name before torch 2.6
        if hasattr(config, name):
            setattr(config, name, max(getattr(config, name), KERNEL_RECOMPILE_LIMIT))
            return


class _Kernels:
    """Eager or ``torch.compile``d versions of the kernels; falls back to eager on failure.

    The first call of a compiled kernel with a new argument signature compiles it. That call runs
    under :func:`machine_compile_lock` and is announced in the log, because a cold compile takes
    about a minute during which a job would otherwise print nothing.
    """

    def __init__(self):
        self._compiled = None
        self._lock = threading.Lock()
        self._seen: set[tuple] = set()
        self._announced = False
        self.compile_failed = False

    def get(self, use_compiled: bool):
        if not use_compiled or self.compile_failed:
            return EAGER_KERNELS
        with self._lock:
            if self._compiled is None:
                _raise_recompile_limit()
                self._compiled = tuple(torch.compile(k, dynamic=True) for k in COMPILED_KERNELS)
        return self._compiled

    def _first_call(self, kernel, index: int, args):
        if not self._announced:
            self._announced = True
            _log.info("compiling the mask sampling kernels: about a minute the first time on a machine, "
                      "a few seconds once torch's compile cache holds them")
        started = time.monotonic()
        with machine_compile_lock():
            result = kernel(*args)
        parameter = args[1] if len(args) > 1 else args[0]   # the weight (the logits for the sigmoids)
        shapes = "x".join(str(n) for n in parameter.shape) if isinstance(parameter, torch.Tensor) else "?"
        _log.info("%s kernel for a %s parameter ready in %.1f s", KERNEL_NAMES[index], shapes,
                  time.monotonic() - started)
        return result

    def run(self, use_compiled: bool, index: int, *args):
        try:
            kernel = self.get(use_compiled)[index]
            if use_compiled and not self.compile_failed:
                key = (index, _signature(args))
                if key not in self._seen:
                    result = self._first_call(kernel, index, args)
                    self._seen.add(key)
                    return result
            return kernel(*args)
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

    Inputs: ``weight`` (shape S), ``logits`` (S), ``noise``: (K, *S) uniform in (0, 1), or int32
    counter keys (K, 2) standing for such noise (see :func:`counter_uniform`).
    Gradients flow to ``logits`` through the straight-through estimator, and to ``weight`` when it
    requires grad (weights and masks trained together).
    """

    @staticmethod
    def forward(ctx, weight, logits, noise, temperature: float, use_compiled: bool, save_factors: bool = False):
        ctx.temperature = temperature
        ctx.use_compiled = use_compiled
        if not save_factors:
            ctx.save_for_backward(weight, logits, noise)
            return KERNELS.run(use_compiled, FORWARD, weight, logits, noise)
        masked, factors = KERNELS.run(use_compiled, FORWARD_SAVING_FACTORS, weight, logits, noise,
                                      _inverse_temperature(temperature))
        ctx.save_for_backward(weight, logits, noise, factors)
        return masked

    @staticmethod
    def backward(ctx, grad):
        weight, logits, noise, *factors = ctx.saved_tensors
        run, compiled = KERNELS.run, ctx.use_compiled
        if factors and grad.is_contiguous():
            grad_logits, grad_weight = run(compiled, GRAD_FROM_FACTORS, grad, weight, logits, factors[0],
                                           _inverse_temperature(ctx.temperature), ctx.needs_input_grad[1],
                                           ctx.needs_input_grad[0])
            return grad_weight, grad_logits, None, None, None, None
        # no factors (or a gradient in another layout, which would read them across memory): hash again
        # The gradient of a linear layer's K weight copies arrives transposed (strides (N, 1, out)),
        # and a kernel reading K such copies across memory is 3x slower than one reading them in
        # order. So the kernels run on the transposed problem: the gradient's transposed view,
        # transposed copies of weight and logits (one copy, not K), and for counter noise the
        # indices of the untransposed weight, so the noise is the same.
        transposed = grad.dim() == 3 and not grad.is_contiguous() and grad.transpose(1, 2).is_contiguous()
        index = None
        if transposed:
            if noise.dtype == torch.int32:
                index = _transposed_index(weight.shape, weight.device)
            else:
                noise = noise.transpose(1, 2)
            grad, weight, logits = grad.transpose(1, 2), weight.t().contiguous(), logits.t().contiguous()

        def back(value):
            return value.t() if transposed and value is not None else value

        grad_weight = grad_logits = None
        if ctx.needs_input_grad[0] and ctx.needs_input_grad[1] and ctx.temperature == 1.0:
            # weights and mask trained together: both gradients in one pass over ``grad``
            grad_logits, grad_weight = run(compiled, 4, grad, weight, logits, noise, index)
            return back(grad_weight), back(grad_logits), None, None, None, None
        if ctx.needs_input_grad[1]:
            if ctx.temperature == 1.0:
                grad_logits = run(compiled, 1, grad, weight, logits, noise, index)
            else:
                grad_logits = run(compiled, 2, grad, weight, logits, noise, 1.0 / ctx.temperature, index)
        if ctx.needs_input_grad[0]:
            grad_weight = run(compiled, 3, grad, logits, noise, index)
        return back(grad_weight), back(grad_logits), None, None, None, None


def _inverse_temperature(temperature: float) -> float | None:
    return None if temperature == 1.0 else 1.0 / temperature


def sample_masked_weights(weight, logits, noise, temperature: float = 1.0, use_compiled: bool = False):
    """K straight-through masked copies of ``weight``; see :class:`StraightThroughMask`.

    ``noise`` is float uniform noise ``(K, *weight.shape)`` or int32 counter keys ``(K, 2)``.
    """
    if logits.shape != weight.shape or (noise.dtype != torch.int32 and noise.shape[1:] != weight.shape):
        raise ValueError(f"shape mismatch: weight {tuple(weight.shape)}, logits {tuple(logits.shape)}, "
                         f"noise {tuple(noise.shape)} (expected (K, *weight.shape))")
    if noise.dtype == torch.int32:
        _check_keys(noise)
        if weight.numel() >= 1 << 31:
            raise ValueError("counter noise indexes elements with int32; parameter too large")
    if temperature <= 0:
        raise ValueError(f"temperature must be positive, got {temperature}")
    small_vector = weight.dim() < 2 and weight.numel() * noise.shape[0] < COMPILE_MIN_PARAMETER_ELEMENTS
    use_compiled = use_compiled and not small_vector
    save_factors = (SAVE_FACTORS_ON_CPU and weight.device.type == "cpu" and torch.is_grad_enabled()
                    and logits.requires_grad)
    return StraightThroughMask.apply(weight, logits, noise, float(temperature), use_compiled, save_factors)


class NoiseSource:
    """Seeded uniform noise for the mask samples of each step.

    ``kind="counter"`` (default): :meth:`keys` hands out counter keys for the next step (the
    kernels hash them into noise, nothing is drawn or stored); the state is the seed and a step
    counter, so the same seed gives the same noise on any machine, thread count and device.

    ``kind="torch"``: :meth:`fill_` draws from PyTorch generators into a buffer. PyTorch's CPU
    generator is sequential, so the buffer is split into a fixed number of streams with their own
    generators, filled in parallel threads; the split does not depend on the thread count.

    :meth:`fill_` works for both kinds (counter kind: the buffer is filled with the counter noise
    of the next step, as one stream).
    """

    CPU_STREAMS = 4
    KINDS = ("counter", "torch")

    def __init__(self, seed: int, device: torch.device | str = "cpu", kind: str = "counter"):
        if kind not in self.KINDS:
            raise ValueError(f"noise kind must be one of {self.KINDS}, got {kind!r}")
        self.device = torch.device(device)
        self.kind = kind
        self.seed = int(seed)
        self.step = 0
        streams = self.CPU_STREAMS if self.device.type == "cpu" else 1
        self.generators = []
        if kind == "torch":
            for index in range(streams):
                generator = torch.Generator(device=self.device)
                generator.manual_seed((int(seed) * 1_000_003 + index) % (2 ** 63))
                self.generators.append(generator)
        self._pool = None

    def state_dict(self):
        return {"kind": self.kind, "seed": self.seed, "step": self.step,
                "states": [g.get_state() for g in self.generators]}

    def load_state_dict(self, state):
        if state.get("kind", "torch") != self.kind:
            raise ValueError(f"noise state of kind {state.get('kind', 'torch')!r} cannot be loaded into a "
                             f"{self.kind!r} noise source")
        self.seed = int(state.get("seed", self.seed))
        self.step = int(state.get("step", self.step))
        for generator, value in zip(self.generators, state["states"]):
            generator.set_state(value)

    def keys(self, streams: int, samples: int) -> list[torch.Tensor]:
        """Counter keys ``(samples, 2)`` for each of ``streams`` parameters, for the next step."""
        if self.kind != "counter":
            raise RuntimeError("keys() needs a counter noise source")
        step, self.step = self.step, self.step + 1
        return [counter_keys(self.seed, step, s, samples).to(self.device) for s in range(streams)]

    def fill_(self, buffer: torch.Tensor) -> torch.Tensor:
        flat = buffer.view(-1)
        if self.kind == "counter":
            flat.copy_(counter_uniform(self.keys(1, 1)[0].to(buffer.device), (flat.numel(),), buffer.dtype)[0])
            return buffer
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

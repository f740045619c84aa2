"""Fused masked linear layers on the CPU (``kernels: fused``): sampling, product and gradients in one C pass.

The default engine samples K masked copies of every weight (``gumbel``), multiplies each with its chunk of
the batch (``torch.bmm``) and, in the backward, writes each sample's weight gradient before the mask
kernel sums them over the samples. For a plain ``nn.Linear`` the C functions in ``csrc/masked_linear.c``
do the same work in blocks that stay in cache, so the K masked copies and the K weight gradients never
reach memory. Measured on a 2-core AMD EPYC, one thread (README, Speed): the permuted-MNIST joint step
2.7 times an ordinary training step instead of 3.9 (medians of 12 and 6 runs), the add/mul FNN's mask step
1.78-1.83 times instead of 2.12-2.19.

What it computes: the same mask bits (the counter hash, bit for bit), the same saved factors (bit for bit),
the same products and gradients up to float32 rounding: its sums run in another order than MKL's, so a
run with ``kernels: fused`` agrees with the default engine to about 1e-7 relative per step, not bit for
bit, and a training run drifts apart from the default's as rounding differences grow. That is why it is
an option and not the default: the kept reference runs reproduce bit for bit with the default kernels.

It applies to a masked ``nn.Linear`` weight (float32, CPU, counter noise, temperature 1) inside
:class:`~modmask.masked_model.MaskedModel`'s vectorised pass when the logits need gradients; everything
else (biases, other layers, evaluation without gradients, the per-sample fallback) runs the default
engine. The C code is compiled once per machine with the C compiler that ``torch.compile`` also needs
(``$CC`` or ``cc``, ``-O3 -march=native``) into ``$MODMASK_NATIVE_CACHE`` (default
``~/.cache/modmask/native``); without a compiler the default engine runs, with one warning.
"""
from __future__ import annotations

import ctypes
import hashlib
import logging
import os
import platform
import shlex
import subprocess
import tempfile
import threading
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch

from .gumbel import KERNELS, LOGIT_SIGMOIDS, machine_compile_lock

_log = logging.getLogger("modmask.fused_linear")

CODE_FILES = ("csrc/masked_linear.c",)   # read by code_versions: editing the C code re-runs the rules using it
SOURCE = Path(__file__).parent / CODE_FILES[0]
FLAGS = ("-O3", "-march=native", "-ffp-contract=fast", "-shared", "-fPIC")
# rows of the masked weight per block of the forward and of the parameter gradients (the C code's OB and OB2):
# threads split the rows on these boundaries
_FORWARD_ROWS, _PARAM_GRAD_ROWS = 3, 6


class FusedKernelsUnavailable(RuntimeError):
    """The C kernels could not be built or loaded here (no compiler, a failed compile)."""


def cache_dir() -> Path:
    """Where the compiled library is kept: ``$MODMASK_NATIVE_CACHE``, else ``$XDG_CACHE_HOME/modmask/native``
    (default ``~/.cache/modmask/native``)."""
    if os.environ.get("MODMASK_NATIVE_CACHE"):
        return Path(os.environ["MODMASK_NATIVE_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "modmask" / "native"


def _cpu_flags() -> str:
    # -march=native: a library built on one CPU must not be loaded on another (a shared home on a cluster)
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(("flags", "Features")):
                return line
    except OSError:
        pass
    return platform.processor()


def _compiler() -> list[str]:
    return shlex.split(os.environ.get("CC") or "cc")


def library_path() -> Path:
    """The compiled library's path for this source, compiler, flags and CPU."""
    key = "\n".join([SOURCE.read_text(), " ".join(_compiler()), " ".join(FLAGS), platform.machine(), _cpu_flags()])
    return cache_dir() / f"masked_linear-{hashlib.sha256(key.encode()).hexdigest()[:16]}.so"


def _build(target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    handle, partial = tempfile.mkstemp(dir=target.parent, prefix=target.name + ".", suffix=".partial")
    os.close(handle)
    command = [*_compiler(), *FLAGS, "-o", partial, str(SOURCE)]
    try:
        result = subprocess.run(command, capture_output=True, text=True)
        if result.returncode != 0:
            raise FusedKernelsUnavailable(f"`{' '.join(command)}` failed:\n{result.stderr.strip()}")
        os.replace(partial, target)   # whole or not at all: a job killed mid-compile leaves no library
    except FileNotFoundError as error:
        raise FusedKernelsUnavailable(f"no C compiler `{_compiler()[0]}` ({error}); set $CC to one") from error
    finally:
        if os.path.exists(partial):
            os.unlink(partial)


_LIBRARY = None
_LIBRARY_ERROR: str | None = None
_LIBRARY_LOCK = threading.Lock()


def load() -> ctypes.CDLL:
    """The C kernels, compiled on first use on this machine; raises :class:`FusedKernelsUnavailable`."""
    global _LIBRARY, _LIBRARY_ERROR
    with _LIBRARY_LOCK:
        if _LIBRARY is not None:
            return _LIBRARY
        if _LIBRARY_ERROR is not None:
            raise FusedKernelsUnavailable(_LIBRARY_ERROR)
        try:
            target = library_path()
            if not target.exists():
                with machine_compile_lock():
                    if not target.exists():
                        _log.info("compiling the fused masked-linear kernels into %s (once per machine)", target)
                        _build(target)
            library = ctypes.CDLL(str(target))
        except (OSError, FusedKernelsUnavailable) as error:
            _LIBRARY_ERROR = str(error)
            raise FusedKernelsUnavailable(_LIBRARY_ERROR) from error
        for name in ("mlf_forward", "mlf_input_grad", "mlf_param_grad"):
            getattr(library, name).restype = ctypes.c_int
        _LIBRARY = library
        return library


_WARNED = False


def available() -> bool:
    """Whether the kernels can run here; the first call that finds them missing warns once."""
    global _WARNED
    try:
        load()
        return True
    except FusedKernelsUnavailable as error:
        if not _WARNED:
            _WARNED = True
            warnings.warn(f"kernels 'fused' cannot run here, so the default kernels run instead: {error} (they need "
                          f"a C compiler, $CC or cc, and a writable $MODMASK_NATIVE_CACHE, default {cache_dir()})",
                          RuntimeWarning, stacklevel=2)
        return False


# ---- calling the C functions ------------------------------------------------------------------------

_POOL: ThreadPoolExecutor | None = None


def _threads() -> int:
    return max(1, torch.get_num_threads())


def _parallel(jobs) -> None:
    """Run the calls in ``jobs`` (ctypes releases the GIL), on torch's thread count; each returns the C
    function's status (1: it could not allocate its scratch memory)."""
    global _POOL
    jobs = list(jobs)
    if len(jobs) == 1:
        statuses = [jobs[0]()]
    else:
        if _POOL is None or _POOL._max_workers < len(jobs):
            if _POOL is not None:
                _POOL.shutdown(wait=False)
            _POOL = ThreadPoolExecutor(max_workers=len(jobs), thread_name_prefix="fused-linear")
        statuses = [future.result() for future in [_POOL.submit(job) for job in jobs]]
    if any(statuses):
        raise MemoryError("kernels 'fused': no memory for a C kernel's scratch buffer")


def _ranges(total: int, parts: int, step: int = 1) -> list[tuple[int, int]]:
    """``parts`` contiguous ranges covering ``[0, total)``, boundaries on multiples of ``step``."""
    if total <= 0:
        return [(0, 0)]
    parts = max(1, min(parts, -(-total // step)))
    size = -(-total // (parts * step)) * step
    return [(start, min(start + size, total)) for start in range(0, total, size)]


def _ptr(tensor: torch.Tensor | None):
    return None if tensor is None else ctypes.c_void_p(tensor.data_ptr())


def forward(x, weight, p, q, keys, save_factors: bool = True):
    """``y[k] = x[k] (weight * b_k)^T`` for the K samples of counter ``keys``, and the backward's factors.

    ``x`` (K, rows, in), ``weight``, ``p = sigmoid(logits)``, ``q = sigmoid(-logits)`` (out, in), all float32
    and contiguous. Returns ``y`` (K, rows, out) and the factors (K, out, in) in ``gumbel``'s format (None
    without ``save_factors``). Each output element is computed by one thread whatever the thread count."""
    library = load()
    samples, rows, in_features = x.shape
    out_features = weight.shape[0]
    y = torch.empty(samples, rows, out_features)
    factors = torch.empty(samples, out_features, in_features) if save_factors else None

    def job(begin, end):
        return lambda: library.mlf_forward(_ptr(x), _ptr(weight), _ptr(p), _ptr(q), _ptr(keys), _ptr(y),
                                           _ptr(factors), samples, rows, in_features, out_features, begin, end)

    _parallel(job(b, e) for b, e in _ranges(out_features, _threads(), _FORWARD_ROWS))
    return y, factors


def input_grad(grad, weight, factors):
    """``dx[k] = grad[k] (weight * b_k)``, the bits read from the factors; threads split the samples."""
    library = load()
    samples, rows, out_features = grad.shape
    in_features = weight.shape[1]
    dx = torch.empty(samples, rows, in_features)

    def job(begin, end):
        return lambda: library.mlf_input_grad(_ptr(grad[begin:end]), _ptr(weight), _ptr(factors[begin:end]),
                                              _ptr(dx[begin:end]), end - begin, rows, in_features, out_features, 0,
                                              out_features)

    _parallel(job(b, e) for b, e in _ranges(samples, _threads()))
    return dx


def param_grad(grad, x, factors, weight, p, q, want_weight: bool):
    """The logit gradient ``(sum_k G_k |f_k|) * (weight * p * q)`` and the weight gradient ``sum_k G_k b_k``
    (None unless ``want_weight``), with ``G_k = grad[k]^T x[k]``; threads split the rows."""
    library = load()
    samples, rows, out_features = grad.shape
    in_features = x.shape[2]
    total_logit = torch.empty(out_features, in_features)
    total_weight = torch.empty(out_features, in_features) if want_weight else None

    def job(begin, end):
        return lambda: library.mlf_param_grad(_ptr(grad), _ptr(x), _ptr(factors), _ptr(weight), _ptr(p), _ptr(q),
                                              _ptr(total_logit), _ptr(total_weight), samples, rows, in_features,
                                              out_features, begin, end)

    _parallel(job(b, e) for b, e in _ranges(out_features, _threads(), _PARAM_GRAD_ROWS))
    return total_logit, total_weight


class FusedMaskedLinear(torch.autograd.Function):
    """``y[k] = x[k] (weight * b_k)^T`` for K straight-through mask samples at temperature 1.

    ``x`` (K, rows, in); ``weight``, ``logits`` (out, in); ``keys`` counter keys (K, 2). Gradients to ``x``,
    to ``logits`` (the straight-through estimator, as :class:`~modmask.gumbel.StraightThroughMask`) and to
    ``weight`` when it requires grad. ``use_compiled``: the logits' sigmoids through ``torch.compile`` (one
    pass instead of two; the same bits)."""

    @staticmethod
    def forward(ctx, x, weight, logits, keys, use_compiled: bool = False):
        if x.dtype != torch.float32:
            raise TypeError(f"kernels 'fused': a masked nn.Linear got a {x.dtype} input; its weight is float32")
        p, q = KERNELS.run(use_compiled, LOGIT_SIGMOIDS, logits)
        x, weight = x.contiguous(), weight.contiguous()
        y, factors = forward(x, weight, p.contiguous(), q.contiguous(), keys.contiguous())
        ctx.save_for_backward(x, weight, p, q, factors)
        return y

    @staticmethod
    def backward(ctx, grad):
        x, weight, p, q, factors = ctx.saved_tensors
        grad = grad.contiguous()
        grad_x = input_grad(grad, weight, factors) if ctx.needs_input_grad[0] else None
        grad_weight = grad_logits = None
        if ctx.needs_input_grad[1] or ctx.needs_input_grad[2]:
            grad_logits, grad_weight = param_grad(grad, x, factors, weight, p, q, ctx.needs_input_grad[1])
            grad_logits = grad_logits if ctx.needs_input_grad[2] else None
        return grad_x, grad_weight, grad_logits, None, None


def supports(weight: torch.Tensor, logits: torch.Tensor, noise: torch.Tensor, temperature: float) -> bool:
    """Whether a masked ``nn.Linear`` weight can take the fused path for this step."""
    return (weight.device.type == "cpu" and weight.dtype == torch.float32 and logits.dtype == torch.float32
            and weight.dim() == 2 and noise.dtype == torch.int32 and temperature == 1.0 and logits.requires_grad
            and torch.is_grad_enabled() and not torch.is_autocast_enabled("cpu") and weight.numel() < 1 << 31)

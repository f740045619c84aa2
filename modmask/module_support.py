"""What the vectorised K-sample pass needs from the modules it runs, and what it does where vmap cannot go.

:class:`~modmask.masked_model.MaskedModel` evaluates the user's module once, under ``torch.func.vmap``
over ``functional_call``, with K sampled copies of each masked weight. Most layers need nothing for
that. The exceptions, handled here without touching the module's code:

* The fused loop (:data:`FUSED_LOOP_TYPES`). Recurrent layers (``nn.LSTM``, ``nn.GRU``,
  ``nn.RNN``): ``aten::lstm`` and its relatives have no batching rule.
  ``nn.MultiheadAttention``: ``vmap`` runs it, but measured slower than K calls (its time-major
  projections become K x T small batched matmuls whose weight gradients are materialised per time
  step). Inside the pass, :func:`masked_call` routes each such layer through
  :class:`_BelowVmapCall`, an ``autograd.Function`` whose ``vmap`` rule calls the layer's own forward
  (PyTorch's fused kernels) K times, once per mask sample with that sample's weights and batch
  chunk; the rest of the model stays vectorised and autograd records the K calls as usual (exact
  gradients). Recurrent layers' cached ``_flat_weights`` are pointed at the weights in use (and back
  afterwards), so the masked weights are really the ones the kernel reads, and
  ``flatten_parameters`` never rewrites a sample.
* Recurrent cells (``nn.LSTMCell``, ``nn.GRUCell``, ``nn.RNNCell``, :data:`PER_SAMPLE_TYPES`) are
  called once per time step, so the fused loop's fixed cost per call adds up: K separate passes of
  the whole model were measured faster (CPU, hidden 128, a loaded 2-core machine: 41 ms against
  50 ms per mask step), so a
  model holding one takes that path from the start, without a warning.
* Attention fast path (``nn.MultiheadAttention``, ``nn.TransformerEncoderLayer``,
  ``nn.TransformerEncoder``): inside ``vmap`` no tensor looks as if it required grad, so PyTorch
  takes its inference fast path, whose kernels have no derivative. :func:`masked_call` switches the
  fast path off for the call (``torch.backends.mha.set_fastpath_enabled``) and restores the previous
  setting afterwards.
* Linear layers with a masked weight (plain ``nn.Linear``, :func:`linear_modules`): autograd's own
  derivative of ``F.linear`` computes the weight gradient as ``x^T g`` and hands the K masked copies a
  transposed gradient (strides ``(N, 1, out)``). The mask kernels read the K copies in order, so that
  gradient cost three transposed copies of each weight per step (weight, logits and the logit
  gradient; a fifth of a mask step on the paper's 2000 x 2000 FNN). Inside the pass :func:`masked_call`
  runs those layers through :class:`RowMajorLinear`, the same product whose weight gradient is
  ``g^T x``: a contiguous gradient, the same numbers. With ``kernels="fused"`` (:mod:`modmask.fused_linear`)
  the eligible ones instead run all K chunks at once through the C kernels, through the same
  :class:`_BelowVmapCall` as the fused loop.
* Layers that update running statistics in training mode (BatchNorm, InstanceNorm with
  ``track_running_stats``) would update them once per mask sample: :func:`check_train_mode` raises
  :class:`TrainModeError` instead, saying what to do.

Any other failure under ``vmap`` (an op without a batching rule, data-dependent control flow, an
``autograd.Function`` without vmap support) makes ``MaskedModel`` fall back to K separate passes;
:func:`describe_vmap_failure` names the op and the module for its one warning.
"""
from __future__ import annotations

import linecache
import os
import re
import weakref
from contextlib import contextmanager

import torch
from torch import nn
from torch.utils import _pytree as pytree

from . import fused_linear

# Layers run as K calls of their own forward inside the vectorised pass (see the module docstring).
FUSED_LOOP_TYPES: tuple[type[nn.Module], ...] = (nn.RNNBase, nn.MultiheadAttention)
# Layers whose model runs as K separate passes (see the module docstring).
PER_SAMPLE_TYPES: tuple[type[nn.Module], ...] = (nn.RNNCellBase,)
# Layers that write running statistics in training mode.
RUNNING_STAT_TYPES: tuple[type[nn.Module], ...] = (nn.modules.batchnorm._NormBase,)


class TrainModeError(RuntimeError):
    """A module in training mode would update its running statistics once per mask sample."""


class PerSampleFallbackWarning(UserWarning):
    """The vectorised pass cannot run a module; the K mask samples run as K separate passes."""


def fused_loop_modules(module: nn.Module) -> list[tuple[str, nn.Module]]:
    """Submodules that take the fused loop (name, module); one inside another is covered by the outer."""
    found: list[tuple[str, nn.Module]] = []
    for name, sub in module.named_modules():
        if isinstance(sub, FUSED_LOOP_TYPES) and not any(name.startswith(f"{outer}.") for outer, _ in found):
            found.append((name, sub))
    return found


def linear_modules(module: nn.Module, masked_names) -> list[tuple[str, nn.Module]]:
    """Plain ``nn.Linear`` submodules (their forward overridden neither by a subclass nor on the instance)
    whose weight is among ``masked_names``."""
    masked = set(masked_names)
    return [(name, sub) for name, sub in module.named_modules()
            if isinstance(sub, nn.Linear) and type(sub).forward is nn.Linear.forward and "forward" not in sub.__dict__
            and (f"{name}.weight" if name else "weight") in masked]


class RowMajorLinear(torch.autograd.Function):
    """``F.linear`` whose weight gradient is computed as ``g^T x`` (contiguous, like the weight) instead of
    autograd's ``(x^T g)^T``. Same sums, same values; only the layout of the result differs. Its vmap
    rule is generated, so under ``vmap`` the K samples' products stay one batched matmul each."""

    generate_vmap_rule = True

    @staticmethod
    def forward(input, weight, bias):
        return nn.functional.linear(input, weight, bias)

    @staticmethod
    def setup_context(ctx, inputs, output):
        input, weight, bias = inputs
        ctx.save_for_backward(input, weight)
        ctx.has_bias = bias is not None

    @staticmethod
    def backward(ctx, grad):
        input, weight = ctx.saved_tensors
        # under autocast the product ran in a lower precision than the saved inputs; autograd casts each
        # gradient back to its input's dtype
        input, weight = input.to(grad.dtype), weight.to(grad.dtype)
        grad_input = grad @ weight if ctx.needs_input_grad[0] else None
        rows = grad.reshape(-1, grad.shape[-1])
        grad_weight = rows.t() @ input.reshape(-1, input.shape[-1]) if ctx.needs_input_grad[1] else None
        grad_bias = rows.sum(0) if ctx.has_bias and ctx.needs_input_grad[2] else None
        return grad_input, grad_weight, grad_bias


def _row_major_linear_forward(module: nn.Module):
    def forward(input):
        # read at call time: functional_call has put the sampled weight there
        return RowMajorLinear.apply(input, module.weight, module.bias)
    return forward


def per_sample_reason(module: nn.Module) -> str | None:
    """Why ``module`` takes K separate passes by design (it holds a :data:`PER_SAMPLE_TYPES` layer), or None."""
    for name, sub in module.named_modules():
        if isinstance(sub, PER_SAMPLE_TYPES):
            return (f"{type(sub).__name__} {name or '(the model)'!r} is called once per time step; K separate "
                    f"passes are faster than K fused calls per step")
    return None


def running_stat_modules(module: nn.Module) -> list[tuple[str, nn.Module]]:
    return [(name, sub) for name, sub in module.named_modules() if isinstance(sub, RUNNING_STAT_TYPES)]


def check_train_mode(norms: list[tuple[str, nn.Module]], mask_samples: int) -> None:
    """Raise :class:`TrainModeError` if a module would update its running statistics in a masked pass."""
    for name, sub in norms:
        if sub.training and sub.track_running_stats and getattr(sub, "running_mean", None) is not None:
            raise TrainModeError(
                f"MaskedModel: {type(sub).__name__} {name or '(the model)'!r} is in training mode, so a masked "
                f"pass would update its running statistics once per mask sample ({mask_samples} times) with "
                f"each chunk's statistics. Call model.eval() before training masks (train_mask does: the "
                f"layer then normalises with its running statistics, as in the paper), or, to normalise each "
                f"mask sample's chunk with its own batch statistics and leave the running statistics alone, "
                f"set track_running_stats = False on that layer while it is in training mode.")


# ---- the fused loop for recurrent and attention layers ---------------------------------------------------------

def _is_batched(tensor: torch.Tensor) -> bool:
    return torch._C._functorch.is_batchedtensor(tensor)


def sync_flat_weights(module: nn.Module) -> None:
    """Point a recurrent layer's cached ``_flat_weights`` at the weight tensors it holds now.

    ``nn.LSTM.forward`` rebuilds that cache when it sees new weights and then calls
    ``flatten_parameters``, which on CUDA copies the weights into one buffer *in place*; doing it
    here, without flattening, lets the fused kernel read the sampled weights as they are.
    """
    names = getattr(module, "_flat_weights_names", None)
    if names is None or not hasattr(module, "_flat_weights"):
        return
    weights = [getattr(module, n) if hasattr(module, n) else None for n in names]
    module._flat_weights = weights
    if hasattr(module, "_flat_weight_refs"):
        module._flat_weight_refs = [weakref.ref(w) if w is not None else None for w in weights]


class _BelowVmapCall(torch.autograd.Function):
    """Runs ``call(K, in_dims, tensors)`` on the plain, unbatched tensors; only ever used under ``vmap``.

    The ``vmap`` rule runs one level below the vectorised pass, so what ``call`` does are ordinary autograd
    operations on the unbatched tensors: the fused loop's K calls of a layer, once per sample with its
    sampled weights and batch chunk, or the fused masked linear layer's one call on all K chunks at once.
    Their gradients are the ordinary ones and ``forward``/``backward`` below are never used. ``call``
    returns a tuple of tensors with the K samples along dimension 0.
    """

    generate_vmap_rule = False

    @staticmethod
    def forward(call, *tensors):
        raise RuntimeError("_BelowVmapCall runs only inside MaskedModel's vectorised pass")

    @staticmethod
    def setup_context(ctx, inputs, output):
        pass

    @staticmethod
    def backward(ctx, *grads):  # pragma: no cover - see the class docstring
        raise RuntimeError("_BelowVmapCall runs only inside MaskedModel's vectorised pass")

    @staticmethod
    def vmap(info, in_dims, call, *tensors):
        stacked = call(info.batch_size, in_dims[1:], tensors)
        return stacked, (0,) * len(stacked)


def _samples(tensor: torch.Tensor, dim: int | None, k: int, cache: dict | None) -> list[torch.Tensor]:
    """The K per-sample slices of ``tensor`` (the same tensor K times if it is not batched).

    ``unbind``, not K ``select``s: its backward stacks the K gradients in one op instead of building
    K zero-filled full-size gradients. Through ``cache`` a tensor is unbound once: a layer's state
    once per pass (a layer called several times shares the slices, so their gradients add up per
    sample), and an input passed several times once per call."""
    if dim is None:
        return [tensor] * k
    if cache is None:
        return list(tensor.unbind(dim))
    key = (id(tensor), dim)
    hit = cache.get(key)
    if hit is None or hit[0] is not tensor:
        hit = cache[key] = (tensor, tensor.unbind(dim))
    return list(hit[1])


@contextmanager
def _swapped(slots, tensors):
    """Put ``tensors`` into the parameter/buffer ``slots`` ((dict, key) pairs) for the duration."""
    previous = [table[key] for table, key in slots]
    try:
        for (table, key), tensor in zip(slots, tensors):
            table[key] = tensor
        yield
    finally:
        for (table, key), tensor in zip(slots, previous):
            table[key] = tensor


def _state_slots(module: nn.Module, names: list[str]):
    """Where each named parameter or buffer of ``module`` lives: (its owner's ``_parameters`` or
    ``_buffers`` dict, key). Swapping the entries is what ``functional_call`` does, without its
    per-call bookkeeping, which a layer called K times per time step would pay K times."""
    slots = []
    for name in names:
        owner_name, _, key = name.rpartition(".")
        owner = module.get_submodule(owner_name) if owner_name else module
        slots.append((owner._parameters if key in owner._parameters else owner._buffers, key))
    return slots


def _fused_loop_forward(module: nn.Module, forward, cache: dict):
    """``module.forward`` for the vectorised pass: K calls of ``forward``, one per mask sample.
    ``cache`` holds the per-sample slices of the layer's state for the duration of one masked call."""
    names = [name for name, _ in module.named_parameters()] + [name for name, _ in module.named_buffers()]
    slots = _state_slots(module, names)   # read at call time: functional_call has put its tensors there
    n = len(slots)

    def run(*args, **kwargs):
        leaves, spec = pytree.tree_flatten((args, kwargs))
        positions = [i for i, leaf in enumerate(leaves) if isinstance(leaf, torch.Tensor)]
        tensors = [*(table[key] for table, key in slots), *(leaves[i] for i in positions)]
        if not any(_is_batched(t) for t in tensors):   # a per-sample pass (forward_loop), or nothing masked
            sync_flat_weights(module)
            return forward(*args, **kwargs)
        out_structure = {}

        def all_samples(k, dims, unwrapped):
            # state through the pass-wide cache; inputs through one of this call's own, so that an input
            # passed several times stays one tensor per sample (attention's `query is key` self-attention path)
            own: dict = {}
            slices = [_samples(t, d, k, cache if j < n else own) for j, (t, d) in enumerate(zip(unwrapped, dims))]
            outputs = []
            for i in range(k):
                inputs = list(leaves)
                for position, column in zip(positions, slices[n:]):
                    inputs[position] = column[i]
                a, kw = pytree.tree_unflatten(inputs, spec)
                with _swapped(slots, [column[i] for column in slices[:n]]):
                    sync_flat_weights(module)
                    out = forward(*a, **kw)
                out_leaves, out_structure["spec"] = pytree.tree_flatten(out)
                out_structure["leaves"] = out_leaves
                outputs.append([leaf for leaf in out_leaves if isinstance(leaf, torch.Tensor)])
            return tuple(torch.stack(column) for column in zip(*outputs))

        result = _BelowVmapCall.apply(all_samples, *tensors)
        result = iter((result,) if isinstance(result, torch.Tensor) else result)
        # tensor leaves from the fused loop; anything else (None, ints) as the last sample returned it
        out_leaves = [next(result) if isinstance(leaf, torch.Tensor) else leaf for leaf in out_structure["leaves"]]
        return pytree.tree_unflatten(out_leaves, out_structure["spec"])

    return run


def _fused_linear_forward(module: nn.Module, spec):
    """``module.forward`` for the vectorised pass on the fused kernels: :class:`modmask.fused_linear.FusedMaskedLinear`
    on all K chunks at once, with ``spec = (weight, logits, keys, use_compiled)`` (the unmasked weight, the logits
    as sampled, the step's counter keys, whether the sigmoids run compiled), plus the module's bias as
    ``functional_call`` has put it there (masked per sample, or the plain bias)."""
    weight, logits, keys, use_compiled = spec

    def all_samples(k, dims, tensors):
        x, bias = tensors
        x = x.movedim(dims[0], 0) if dims[0] is not None else x.expand(k, *x.shape)
        shape = x.shape
        y = fused_linear.FusedMaskedLinear.apply(x.reshape(k, -1, shape[-1]), weight, logits, keys, use_compiled)
        y = y.view(*shape[:-1], weight.shape[0])
        if bias is not None:
            bias = bias.movedim(dims[1], 0) if dims[1] is not None else bias.expand(k, *bias.shape)
            y = y + bias.view(k, *([1] * (y.dim() - 2)), bias.shape[-1])
        return (y,)

    def run(input):
        result = _BelowVmapCall.apply(all_samples, input, module.bias)
        return result if isinstance(result, torch.Tensor) else result[0]
    return run


_MISSING = object()


def _fastpath_setting():
    mha = getattr(torch.backends, "mha", None)
    if mha is None or not hasattr(mha, "get_fastpath_enabled"):
        return None
    return mha


@contextmanager
def masked_call(fused: list[tuple[str, nn.Module]], linears: list[tuple[str, nn.Module]] = (),
                fused_linears: dict[str, tuple] | None = None):
    """The state every masked pass runs in: PyTorch's attention fast path off, each layer of ``fused``
    routed through the fused loop and each of ``linears`` through :class:`RowMajorLinear`, or, where
    ``fused_linears`` has its weight's name, through :func:`_fused_linear_forward` with that
    entry. Everything is restored on exit, also after an exception."""
    mha = _fastpath_setting()
    fastpath = mha.get_fastpath_enabled() if mha is not None else None
    patched, cache = [], {}
    try:
        if mha is not None:
            mha.set_fastpath_enabled(False)
        fused_linears = fused_linears or {}
        replacements = [(sub, _fused_linear_forward(sub, spec) if (spec := fused_linears.get(
            f"{name}.weight" if name else "weight")) is not None else _row_major_linear_forward(sub))
            for name, sub in linears]
        replacements += [(sub, _fused_loop_forward(sub, sub.forward, cache)) for _, sub in fused]
        for sub, forward in replacements:
            patched.append((sub, sub.__dict__.get("forward", _MISSING)))
            sub.forward = forward
        yield
    finally:
        for sub, previous in reversed(patched):
            if previous is _MISSING:
                sub.__dict__.pop("forward", None)
            else:
                sub.__dict__["forward"] = previous
            sync_flat_weights(sub)   # back to the module's own weights; no sample stays referenced
        cache.clear()
        if mha is not None:
            mha.set_fastpath_enabled(fastpath)


# ---- diagnosing what vmap could not run ---------------------------------------------------------

_TORCH_DIR = os.path.dirname(torch.__file__)
_OP_PATTERNS = (r"[Bb]atching rule not implemented for ([\w:.]+?)\.?(?:\s|$)", r"\b(aten::[\w.]+)",
                r"\b([a-z_]\w*::\w[\w.]*)")


def describe_vmap_failure(error: BaseException, module: nn.Module) -> str:
    """What ``vmap`` could not run, for a warning: the op (the one the error names, else the
    ``autograd.Function`` being applied, else the error's first line), the innermost submodule of
    ``module`` on the traceback, and that module's source line."""
    text = str(error).strip()
    reason = f"{type(error).__name__}: {text.splitlines()[0] if text else ''}".rstrip(": ")
    names = {id(sub): name for name, sub in module.named_modules()}
    culprit, culprit_line, function, raised_at = None, None, None, None
    tb = error.__traceback__
    while tb is not None:
        frame, code = tb.tb_frame, tb.tb_frame.f_code
        first = frame.f_locals.get(code.co_varnames[0]) if code.co_argcount else None
        location = (code.co_filename, tb.tb_lineno)
        if first is not None and id(first) in names:
            culprit, culprit_line = first, location
        if isinstance(first, type) and issubclass(first, torch.autograd.Function) and first.__module__ != __name__:
            function = first
        if not code.co_filename.startswith(_TORCH_DIR):
            raised_at = location
        tb = tb.tb_next
    op = None
    for pattern in _OP_PATTERNS:
        found = re.search(pattern, text)
        if found:
            op = found.group(1)
            break
    if op is None and function is not None:
        op = f"autograd.Function {function.__qualname__}"
    if op is None and raised_at is not None:
        op = _source(raised_at) or "an operation"
    if culprit is None:
        where = f"{type(module).__name__} (the model)"
    else:
        name = names[id(culprit)]
        where = f"{name!r} ({type(culprit).__name__})" if name else f"{type(culprit).__name__} (the model)"
        where += f" ({_source(culprit_line)})" if op != _source(culprit_line) else ""
    return f"{op or 'an operation'} in module {where} ({reason})"


def _source(location) -> str:
    """```code``` at file:line"""
    code = linecache.getline(*location).strip()
    place = f"{os.path.basename(location[0])}:{location[1]}"
    return f"`{code}` at {place}" if code else place

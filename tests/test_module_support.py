"""MaskedModel on PyTorch's own recurrent and attention layers, the per-sample fallback and train mode.

Every family is checked the same way: the vectorised pass (``forward``) and K separate passes
(``forward_loop``) on the same noise give the same outputs and the same gradients of the logits, and
the engine reports the path the README's "Supported modules" table promises.
"""
import copy
import warnings

import pytest
import torch
from torch import nn

from modmask import BinaryMask, MaskSelection, MaskedModel, WeightMask
from modmask.masked_model import PerSampleFallbackWarning, TrainModeError, run_with_mask


def _grads(params):
    out = [p.grad.clone() for p in params]
    for p in params:
        p.grad = None
    return out


def _frozen(module):
    module.eval()
    for p in module.parameters():
        p.requires_grad_(False)
    return module


def _compare(masked, *inputs, rtol=1e-5, atol=1e-6):
    """Vectorised pass and K single-mask passes on the same noise: same outputs, same logit gradients."""
    noise = masked.draw_noise()
    logits = masked.mask.trainable_parameters()
    target = torch.randn_like(masked.forward_loop(*inputs, noise=noise))
    results = []
    for forward in (masked.forward, masked.forward_loop):
        out = forward(*inputs, noise=noise)
        ((out - target) ** 2).sum().backward()
        results.append((out.detach(), _grads(logits)))
    (out_v, grads_v), (out_l, grads_l) = results
    torch.testing.assert_close(out_v, out_l, rtol=rtol, atol=atol)
    assert len(grads_v) == len(logits) > 0
    for a, b in zip(grads_v, grads_l):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
    assert sum(g.abs().sum() for g in grads_v) > 0
    return out_v


def _masked(module, k=4, batch_dim=0, initial_logit=0.5, **options):
    mask = WeightMask.for_module(module, MaskSelection(mask_biases=True), initial_logit=initial_logit)
    return MaskedModel(_frozen(module), mask, mask_samples=k, batch_dim=batch_dim, output_batch_dim=0,
                       kernels="eager", seed=5, **options)


# ---- recurrent layers ----------------------------------------------------------------------------

class Recurrent(nn.Module):
    """An RNN layer plus what users read from it: the last output step and the final state(s), [B, F]."""

    def __init__(self, rnn):
        super().__init__()
        self.rnn = rnn

    def forward(self, x):
        out, state = self.rnn(x)
        last = out[:, -1] if self.rnn.batch_first else out[-1]
        h = state[0] if isinstance(state, tuple) else state
        return torch.cat([last, h.transpose(0, 1).flatten(1)], dim=1)


RECURRENT = {
    "lstm": lambda: nn.LSTM(5, 7),
    "lstm-2-layers-bidirectional-batch-first": lambda: nn.LSTM(5, 7, num_layers=2, bidirectional=True,
                                                              batch_first=True),
    "lstm-projection": lambda: nn.LSTM(5, 7, num_layers=2, proj_size=3),
    "gru": lambda: nn.GRU(5, 7),
    "gru-2-layers-bidirectional-batch-first": lambda: nn.GRU(5, 7, num_layers=2, bidirectional=True, batch_first=True),
    "rnn-tanh": lambda: nn.RNN(5, 7),
    "rnn-relu-2-layers-bidirectional": lambda: nn.RNN(5, 7, num_layers=2, nonlinearity="relu", bidirectional=True),
}


@pytest.mark.parametrize("name", list(RECURRENT))
def test_recurrent_layers_take_the_fused_loop_and_equal_k_passes(name):
    torch.manual_seed(0)
    rnn = RECURRENT[name]()
    masked = _masked(Recurrent(rnn), batch_dim=0 if rnn.batch_first else 1)
    x = torch.randn(8, 6, 5) if rnn.batch_first else torch.randn(6, 8, 5)
    out = _compare(masked, x)
    assert out.shape[0] == 8
    assert masked.path == "fused-loop" and masked.fused_loop_modules == ["rnn"]
    assert set(masked.mask.names) == {n for n, _ in masked.module.named_parameters()}


class CellLoop(nn.Module):
    def __init__(self, cell):
        super().__init__()
        self.cell = cell

    def forward(self, x):   # [T, B, C]
        state = None
        for step in x.unbind(0):
            state = self.cell(step, state)
        return state[0] if isinstance(state, tuple) else state


@pytest.mark.parametrize("cell", [nn.LSTMCell, nn.GRUCell, nn.RNNCell])
def test_models_with_recurrent_cells_take_k_passes_without_a_warning(cell):
    torch.manual_seed(0)
    model = CellLoop(cell(5, 6))
    masked = _masked(model, batch_dim=1)
    assert masked.path == "per-sample"   # by design, before any pass
    x = torch.randn(4, 8, 5)
    noise = _keep_first_drop_second(masked.mask)
    masked2 = MaskedModel(model, masked.mask, mask_samples=2, batch_dim=1, output_batch_dim=0, kernels="eager")
    with warnings.catch_warnings():
        warnings.simplefilter("error")   # no fallback warning, no "performance drop" from vmap's own fallback
        _compare(masked, x)
        out = masked2(x, noise=noise)
    none_kept = BinaryMask({n: torch.zeros_like(b) for n, b in masked.mask.binary().bits.items()})
    torch.testing.assert_close(out[:4], model(x)[:4])
    torch.testing.assert_close(out[4:], run_with_mask(model, none_kept, x)[4:])


def _keep_first_drop_second(mask):
    """Noise for K = 2: sample 0 keeps every masked weight, sample 1 drops every one."""
    noise = {}
    for name, logit in mask.items():
        n = torch.empty(2, *logit.shape)
        n[0], n[1] = 1 - 1e-6, 1e-6
        noise[name] = n
    return noise


def test_lstm_reads_the_masked_weights_and_keeps_its_own():
    torch.manual_seed(0)
    model = _frozen(Recurrent(nn.LSTM(5, 7, num_layers=2)))
    lstm = model.rnn
    mask = WeightMask.for_module(model, initial_logit=2.0)   # weights only, biases kept
    masked = MaskedModel(model, mask, mask_samples=2, batch_dim=1, output_batch_dim=0, kernels="eager")
    x = torch.randn(6, 4, 5)
    plain = model(x)
    none_kept = BinaryMask({n: torch.zeros_like(b) for n, b in mask.binary().bits.items()})
    dropped = run_with_mask(model, none_kept, x)
    assert (plain - dropped).abs().max() > 1e-2
    # run_with_mask with a random mask = a copy of the LSTM whose weights were multiplied in place
    g = torch.Generator().manual_seed(1)
    some = BinaryMask({n: torch.rand(p.shape, generator=g) > 0.5 for n, p in model.named_parameters()
                       if n in mask.names})
    copied = copy.deepcopy(model)
    with torch.no_grad():
        for n, p in copied.named_parameters():
            if n in some.bits:
                p.mul_(some.bits[n])
    torch.testing.assert_close(run_with_mask(model, some, x), copied(x))
    # vectorised and K passes: chunk 0 (batch rows 0, 1) all weights, chunk 1 (rows 2, 3) none
    noise = _keep_first_drop_second(mask)
    for forward in (masked.forward, masked.forward_loop):
        out = forward(x, noise=noise)
        torch.testing.assert_close(out[:2], plain[:2])
        torch.testing.assert_close(out[2:], dropped[2:])
    # the LSTM holds its own weights again: nothing patched, its flat-weight cache on its parameters
    assert "forward" not in lstm.__dict__
    assert all(w is getattr(lstm, n) for w, n in zip(lstm._flat_weights, lstm._flat_weights_names))
    torch.testing.assert_close(model(x), plain, rtol=0, atol=0)


def test_lstm_dropout_in_train_mode_runs_in_the_fused_loop():
    torch.manual_seed(0)
    model = Recurrent(nn.LSTM(5, 7, num_layers=2, dropout=0.5))
    masked = _masked(model, batch_dim=1, initial_logit=20.0)   # all weights kept: only dropout varies
    model.train()
    x = torch.randn(6, 8, 5)
    first, second = masked(x), masked(x)
    assert masked.path == "fused-loop"
    assert (first - second).abs().max() > 1e-3          # dropout is on ...
    model.eval()
    torch.testing.assert_close(masked(x), model(x))     # ... and off in eval mode


# ---- attention -----------------------------------------------------------------------------------

class SelfAttention(nn.Module):
    """Causal self-attention with a key padding mask; ``padding`` has the batch where ``x`` has it."""

    def __init__(self, batch_first, need_weights):
        super().__init__()
        self.attn = nn.MultiheadAttention(8, 2, batch_first=batch_first)
        self.need_weights = need_weights

    def forward(self, x, padding):
        steps = x.shape[1] if self.attn.batch_first else x.shape[0]
        causal = torch.triu(torch.ones(steps, steps, dtype=torch.bool), diagonal=1)
        key_padding = padding if self.attn.batch_first else padding.t()
        out, weights = self.attn(x, x, x, key_padding_mask=key_padding, attn_mask=causal,
                                 need_weights=self.need_weights)
        out = out if self.attn.batch_first else out.transpose(0, 1)
        return out if weights is None else torch.cat([out, weights], dim=-1)


def _padding(batch, steps, batch_first):
    lengths = torch.arange(batch) % steps + 1
    padding = torch.arange(steps)[None, :] >= lengths[:, None]   # [B, T]
    return padding if batch_first else padding.t()


@pytest.mark.parametrize("batch_first", [True, False])
@pytest.mark.parametrize("need_weights", [True, False])
def test_multihead_attention(batch_first, need_weights):
    torch.manual_seed(0)
    masked = _masked(SelfAttention(batch_first, need_weights), batch_dim=0 if batch_first else 1)
    x = torch.randn(8, 5, 8) if batch_first else torch.randn(5, 8, 8)
    _compare(masked, x, _padding(8, 5, batch_first))
    assert masked.path == "fused-loop" and masked.fused_loop_modules == ["attn"]
    assert "attn.in_proj_weight" in masked.mask.names


class Encoder(nn.Module):
    def __init__(self, batch_first, norm_first=False, layers=None):
        super().__init__()
        layer = nn.TransformerEncoderLayer(8, 2, 16, dropout=0.1, batch_first=batch_first, norm_first=norm_first)
        self.encoder = layer if layers is None else nn.TransformerEncoder(layer, layers, enable_nested_tensor=True)
        self.batch_first = batch_first

    def forward(self, x, padding):
        padding = padding if self.batch_first else padding.t()
        out = self.encoder(x, src_key_padding_mask=padding)
        return out if self.batch_first else out.transpose(0, 1)


class Decoder(nn.Module):
    def __init__(self, batch_first):
        super().__init__()
        self.decoder = nn.TransformerDecoderLayer(8, 2, 16, dropout=0.1, batch_first=batch_first)
        self.batch_first = batch_first

    def forward(self, tgt, memory):
        steps = tgt.shape[1] if self.batch_first else tgt.shape[0]
        out = self.decoder(tgt, memory, tgt_mask=nn.Transformer.generate_square_subsequent_mask(steps),
                           tgt_is_causal=True)
        return out if self.batch_first else out.transpose(0, 1)


class Seq2Seq(nn.Module):
    def __init__(self):
        super().__init__()
        self.transformer = nn.Transformer(8, 2, num_encoder_layers=2, num_decoder_layers=1, dim_feedforward=16,
                                          dropout=0.1)

    def forward(self, src, tgt):   # time-major
        mask = nn.Transformer.generate_square_subsequent_mask(tgt.shape[0])
        return self.transformer(src, tgt, tgt_mask=mask).transpose(0, 1)


@pytest.mark.parametrize("batch_first", [True, False])
@pytest.mark.parametrize("kind", ["encoder-layer", "encoder-layer-norm-first", "encoder-stack", "decoder-layer"])
def test_transformer_layers(kind, batch_first):
    torch.manual_seed(0)
    if kind == "decoder-layer":
        model = Decoder(batch_first)
        shape = (8, 5, 8) if batch_first else (5, 8, 8)
        inputs = (torch.randn(*shape), torch.randn(*shape))
    else:
        model = Encoder(batch_first, norm_first=kind.endswith("norm-first"),
                        layers=2 if kind == "encoder-stack" else None)
        inputs = (torch.randn(8, 5, 8) if batch_first else torch.randn(5, 8, 8), _padding(8, 5, batch_first))
    masked = _masked(model, batch_dim=0 if batch_first else 1)
    out = _compare(masked, *inputs)
    assert out.shape == (8, 5, 8)
    assert masked.path == "fused-loop"
    assert all(name.endswith(("self_attn", "multihead_attn")) for name in masked.fused_loop_modules)


def test_nn_transformer():
    torch.manual_seed(0)
    masked = _masked(Seq2Seq(), batch_dim=1)
    out = _compare(masked, torch.randn(6, 8, 8), torch.randn(4, 8, 8))
    assert out.shape == (8, 4, 8) and masked.path == "fused-loop"
    assert len(masked.fused_loop_modules) == 2 + 2   # encoder self-attention x 2, decoder self + cross


def _spy(monkeypatch, name, calls):
    real = getattr(torch, name)

    def spy(*args, **kwargs):
        calls.append(name)
        return real(*args, **kwargs)

    monkeypatch.setattr(torch, name, spy)


def test_the_inference_fast_path_is_never_taken_and_the_setting_is_restored(monkeypatch):
    calls = []
    _spy(monkeypatch, "_transformer_encoder_layer_fwd", calls)
    _spy(monkeypatch, "_native_multi_head_attention", calls)
    torch.manual_seed(0)
    layer = _frozen(nn.TransformerEncoderLayer(8, 2, 16, batch_first=True))
    attn = _frozen(nn.MultiheadAttention(8, 2, batch_first=True))
    x = torch.randn(4, 5, 8)
    with torch.no_grad():   # an ordinary inference call takes it (the spies work)
        layer(x)
        attn(x, x, x)
    assert calls == ["_transformer_encoder_layer_fwd", "_native_multi_head_attention"]
    calls.clear()
    for module in (layer, attn):
        masked = MaskedModel(module, WeightMask.for_module(module), mask_samples=2, kernels="eager")
        args = (x,) if module is layer else (x, x, x)
        with torch.no_grad():
            masked(*args)
            masked.forward_loop(*args)
        out = masked(*args)
        (out if module is layer else out[0]).sum().backward()   # the fast path has no derivative
        assert torch.backends.mha.get_fastpath_enabled()
    assert calls == []
    # a user's own setting survives a masked call, also one that fails
    torch.backends.mha.set_fastpath_enabled(False)
    try:
        masked(x, x, x)
        assert torch.backends.mha.get_fastpath_enabled() is False
    finally:
        torch.backends.mha.set_fastpath_enabled(True)
    with pytest.raises(Exception):
        masked(x[..., :5], x, x)   # wrong embedding size: the module's own error
    assert torch.backends.mha.get_fastpath_enabled() is True
    assert "forward" not in attn.__dict__


def test_a_failing_pass_leaves_no_layer_patched():
    torch.manual_seed(0)
    model = Recurrent(nn.LSTM(5, 7))
    masked = _masked(model, batch_dim=1)
    with pytest.raises(RuntimeError, match="input.size"):
        masked(torch.randn(6, 8, 4))   # 4 features, the LSTM wants 5
    assert masked.path == "fused-loop"   # the module's error, not a vmap limitation
    assert "forward" not in model.rnn.__dict__
    assert all(w is getattr(model.rnn, n) for w, n in zip(model.rnn._flat_weights, model.rnn._flat_weights_names))


# ---- the per-sample fallback ---------------------------------------------------------------------

@torch.library.custom_op("modmask_test::weighted_sum", mutates_args=())
def weighted_sum(xs: list[torch.Tensor], w: torch.Tensor) -> torch.Tensor:
    """An op with a tensor-list argument: vmap has no batching rule and cannot generate a fallback."""
    return sum(x * w for x in xs)


@weighted_sum.register_fake
def _(xs, w):
    return torch.empty_like(xs[0])


def _weighted_sum_setup(ctx, inputs, output):
    ctx.count = len(inputs[0])
    ctx.save_for_backward(*inputs[0], inputs[1])


def _weighted_sum_backward(ctx, grad):
    *xs, w = ctx.saved_tensors
    return [grad * w for _ in range(ctx.count)], grad * sum(xs)


weighted_sum.register_autograd(_weighted_sum_backward, setup_context=_weighted_sum_setup)


class _Square(torch.autograd.Function):
    """An old-style autograd.Function (no setup_context): functorch transforms cannot run it."""

    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return x * x

    @staticmethod
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        return 2 * x * grad


class Block(nn.Module):
    def __init__(self, kind):
        super().__init__()
        self.linear = nn.Linear(6, 6)
        self.kind = kind

    def forward(self, x):
        h = self.linear(x)
        if self.kind == "op":
            return weighted_sum([h, x], torch.full_like(h, 0.5))
        if self.kind == "function":
            return _Square.apply(h)
        raise ValueError(f"no such kind {self.kind!r}")


class WithBlock(nn.Module):
    def __init__(self, kind):
        super().__init__()
        self.first = nn.Linear(4, 6)
        self.block = Block(kind)
        self.out = nn.Linear(6, 3)

    def forward(self, x):
        return self.out(self.block(torch.tanh(self.first(x))))


@pytest.mark.parametrize("kind, op", [("op", "modmask_test::weighted_sum"), ("function", "autograd.Function _Square")])
def test_ops_vmap_cannot_run_fall_back_to_k_passes_with_one_warning(kind, op):
    torch.manual_seed(0)
    masked = _masked(WithBlock(kind))
    x = torch.randn(8, 4)
    assert masked.path == "vectorised"   # until it has tried
    with pytest.warns(PerSampleFallbackWarning) as record:
        first = masked(x)
    assert len(record) == 1
    message = str(record[0].message)
    assert op in message and "'block' (Block)" in message and "4 separate passes" in message
    assert masked.path == "per-sample"
    with warnings.catch_warnings():
        warnings.simplefilter("error")   # once per MaskedModel: no second warning
        _compare(masked, x)
        again = masked(x)
    assert first.shape == again.shape == (8, 3)


def test_a_modules_own_error_is_raised_not_hidden_by_the_fallback():
    torch.manual_seed(0)
    masked = _masked(WithBlock("nonsense"))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(ValueError, match="no such kind 'nonsense'"):
            masked(torch.randn(8, 4))
    assert masked.path == "vectorised"


def test_outputs_that_cannot_be_merged_are_a_clear_error():
    class Tagged(nn.Module):
        def __init__(self):
            super().__init__()
            self.linear = nn.Linear(3, 3)

        def forward(self, x):
            return self.linear(x), object()   # a non-tensor output that differs per pass

    masked = _masked(Tagged())
    with pytest.raises(TypeError, match="not a tensor and differs"):
        masked.forward_loop(torch.randn(4, 3))


# ---- training mode -------------------------------------------------------------------------------

def _batchnorm_net(**options):
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 6), nn.BatchNorm1d(6, **options), nn.ReLU(), nn.Linear(6, 2))


def test_batchnorm_in_train_mode_is_a_clear_error_and_its_statistics_stay():
    net = _batchnorm_net()
    masked = _masked(net)
    net.train()
    bn = net[1]
    before = {n: b.clone() for n, b in bn.named_buffers()}
    for forward in (masked.forward, masked.forward_loop):
        with pytest.raises(TrainModeError, match=r"BatchNorm1d '1' is in training mode.*4 times.*model\.eval\(\)"):
            forward(torch.randn(8, 4))
    for n, b in bn.named_buffers():
        assert torch.equal(b, before[n]), n
    net.eval()
    _compare(masked, torch.randn(8, 4))   # eval mode: running statistics, vectorised
    assert masked.path == "vectorised"


def test_batchnorm_without_running_statistics_normalises_each_chunk_by_itself():
    net = _batchnorm_net(track_running_stats=False)
    masked = _masked(net)
    net.train()
    x = torch.randn(16, 4) * 3 + 1
    _compare(masked, x)
    # inside the network: each mask sample's chunk of 4 rows is normalised with its own statistics
    noise = masked.draw_noise()
    weights = masked.sample_weights(noise)
    captured = []
    handle = net[1].register_forward_hook(lambda module, inputs, output: captured.append(output))
    masked.forward_loop(x, noise=noise)
    handle.remove()
    for chunk in captured:
        torch.testing.assert_close(chunk.mean(0), torch.zeros(6), atol=1e-5, rtol=0)
    assert len(captured) == 4 and weights["0.weight"].shape == (4, 6, 4)


def test_dropout_in_train_mode_draws_its_own_noise_per_mask_sample():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(6, 6, bias=False), nn.Dropout(0.5))
    with torch.no_grad():
        net[0].weight.copy_(torch.eye(6))
    masked = _masked(net, initial_logit=30.0)   # every weight kept: the output is dropout(x)
    net.train()
    x = torch.ones(400, 6)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out = masked(x)
    assert masked.path == "vectorised"
    assert set(out.unique().tolist()) == {0.0, 2.0}
    assert (out == 0).float().mean().item() == pytest.approx(0.5, abs=0.04)
    chunks = out.view(4, 100, 6)
    assert not torch.equal(chunks[0], chunks[1])   # each sample its own dropout mask
    net.eval()
    torch.testing.assert_close(masked(x), x)


def test_a_buffer_changed_in_place_stops_the_per_sample_passes():
    class RunningMean(nn.Module):
        def __init__(self):
            super().__init__()
            self.linear = nn.Linear(3, 3)
            self.register_buffer("seen", torch.zeros(3))

        def forward(self, x):
            y = self.linear(x)
            self.seen.add_(y.detach().mean(0))   # under vmap: an in-place update vmap cannot batch
            return y

    torch.manual_seed(0)
    model = RunningMean()
    masked = _masked(model)
    x = torch.randn(8, 3)
    noise = masked.draw_noise()
    sample = {n: w[0] for n, w in masked.sample_weights(noise).items()}   # mask sample 0 (bias masked too)
    one_pass = (x[:2] @ sample["linear.weight"].T + sample["linear.bias"]).mean(0).detach()   # rows 0, 1
    with pytest.raises(TrainModeError, match=r"changed the buffer\(s\) \['seen'\] in place.*4 times"):
        masked.forward_loop(x, noise=noise)
    torch.testing.assert_close(model.seen, one_pass)   # one pass got to update it, not four
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", PerSampleFallbackWarning)
        with pytest.raises(TrainModeError, match="seen"):
            masked(x, noise=noise)
    torch.testing.assert_close(model.seen, 2 * one_pass)


# ---- linear layers: the weight gradient in the weight's own layout --------------------------------

@pytest.mark.parametrize("leading", [(6,), (3, 6)])
@pytest.mark.parametrize("bias", [True, False])
def test_row_major_linear_has_linears_gradients_in_the_weights_layout(leading, bias):
    from modmask.module_support import RowMajorLinear
    torch.manual_seed(0)
    x = torch.randn(*leading, 5, requires_grad=True)
    w = torch.randn(4, 5, requires_grad=True)
    b = torch.randn(4, requires_grad=True) if bias else None
    g = torch.randn(*leading, 4)
    expected = torch.autograd.grad(nn.functional.linear(x, w, b), [x, w] + ([b] if bias else []), g)
    out = RowMajorLinear.apply(x, w, b)
    got = torch.autograd.grad(out, [x, w] + ([b] if bias else []), g)
    assert torch.equal(out, nn.functional.linear(x, w, b))
    for e, a in zip(expected, got):
        torch.testing.assert_close(a, e, rtol=1e-6, atol=1e-6)
    # by hand: dL/dW[o, i] = sum over rows of g[., o] * x[., i]
    by_hand = torch.einsum("...o,...i->oi", g, x.detach())
    torch.testing.assert_close(got[1], by_hand, rtol=1e-5, atol=1e-5)
    assert got[1].is_contiguous()


def test_row_major_linear_under_autocast_gives_linears_gradients():
    from modmask.module_support import RowMajorLinear
    torch.manual_seed(0)
    x, w, b = torch.randn(4, 5), torch.randn(3, 5), torch.randn(3)
    grads = []
    for fn in (nn.functional.linear, RowMajorLinear.apply):
        inputs = [t.clone().requires_grad_() for t in (x, w, b)]
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = fn(*inputs)
        assert out.dtype == torch.bfloat16
        out.float().square().sum().backward()
        grads.append([t.grad for t in inputs])
    for expected, got in zip(*grads):
        assert got.dtype == torch.float32
        torch.testing.assert_close(got, expected, rtol=2e-2, atol=2e-2)


def test_row_major_linear_under_vmap_gives_k_contiguous_weight_gradients():
    from torch.func import vmap
    from modmask.module_support import RowMajorLinear
    torch.manual_seed(0)
    ws = torch.randn(3, 4, 5, requires_grad=True)
    xs = torch.randn(3, 6, 5)
    g = torch.randn(3, 6, 4)
    out = vmap(lambda w, x: RowMajorLinear.apply(x, w, None))(ws, xs)
    (grad,) = torch.autograd.grad(out, ws, g)
    torch.testing.assert_close(grad, torch.einsum("kbo,kbi->koi", g, xs), rtol=1e-5, atol=1e-5)
    assert grad.is_contiguous()


def test_masked_linear_layers_hand_the_mask_kernels_contiguous_gradients(monkeypatch):
    """Autograd's own linear derivative gives the K masked copies a transposed gradient; inside the
    masked pass a linear layer's gives them one laid out like the copies, and the mask's gradients stay
    the same."""
    from modmask import gumbel
    from modmask.module_support import masked_call
    seen = []
    backward = gumbel.StraightThroughMask.backward

    def spy(ctx, grad):
        seen.append(grad.is_contiguous())
        return backward(ctx, grad)

    monkeypatch.setattr(gumbel.StraightThroughMask, "backward", staticmethod(spy))
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 3))
    for p in model.parameters():
        p.requires_grad_(False)
    masked = MaskedModel(model, WeightMask.for_module(model), mask_samples=4, seed=3)
    assert [name for name, _ in masked._linears] == ["0", "2"]
    x = torch.randn(8, 6)

    def logit_grads(linears):
        masked.noise.step = 0   # the same mask samples both times
        masked._linears = linears
        for p in masked.mask.trainable_parameters():
            p.grad = None
        masked(x).square().sum().backward()
        return [p.grad.clone() for p in masked.mask.trainable_parameters()]

    row_major = masked._linears
    plain = logit_grads([])
    assert len(seen) == len(masked.mask.names) == 2 and not any(seen)   # transposed without it
    seen.clear()
    patched = logit_grads(row_major)
    assert len(seen) == 2 and all(seen)
    for a, b in zip(plain, patched):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7)
    assert all("forward" not in sub.__dict__ for sub in model)
    with pytest.raises(RuntimeError):
        with masked_call([], row_major):
            assert "forward" in model[0].__dict__
            model(torch.randn(2, 5))   # wrong width: the layer's own error
    assert all("forward" not in sub.__dict__ for sub in model)


def test_only_plain_masked_linear_layers_are_rerouted():
    from modmask.module_support import linear_modules

    class Scaled(nn.Linear):
        def forward(self, x):
            return 2 * super().forward(x)

    class Same(nn.Linear):
        pass

    patched = nn.Linear(2, 2)
    patched.forward = lambda x: 3 * nn.functional.linear(x, patched.weight, patched.bias)   # a user's own patch
    model = nn.Sequential(nn.Linear(2, 2), Scaled(2, 2), Same(2, 2), nn.Linear(2, 2), patched)
    names = ["0.weight", "1.weight", "2.weight", "3.bias", "4.weight"]
    assert [name for name, _ in linear_modules(model, names)] == ["0", "2"]
    assert [name for name, _ in linear_modules(nn.Linear(2, 2), ["weight"])] == [""]

"""The fused masked linear layer (``kernels: fused``): the C kernels against the default engine."""
import logging
import warnings

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from modmask import fused_linear, gumbel
from modmask.masked_model import MaskedModel
from modmask.masks import MaskSelection, WeightMask
from modmask.training import BatchSampler, TrainSettings, train_jointly

pytestmark = pytest.mark.skipif(not fused_linear.available(), reason="no C compiler for the fused kernels")

# odd sizes on purpose: rows not a multiple of the 4- and 6-row tiles, columns with a tail past the vector
# width, outputs not a multiple of the 3- and 6-row blocks, more outputs than one 64-row block
SHAPES = [(3, 5, 13, 37), (2, 7, 70, 48), (4, 16, 131, 100)]   # K, rows per sample, out, in


def _problem(samples, rows, out_features, in_features, seed=0):
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(samples, rows, in_features, generator=generator)
    weight = torch.randn(out_features, in_features, generator=generator)
    logits = torch.randn(out_features, in_features, generator=generator) * 2
    grad = torch.randn(samples, rows, out_features, generator=generator)
    return x, weight, logits, gumbel.counter_keys(seed, 3, 1, samples), grad


def _relative_error(value, expected):
    return ((value - expected).abs().max() / expected.abs().max()).item()


@pytest.mark.parametrize("shape", SHAPES)
def test_kernels_compute_the_engines_masks_products_and_gradients(shape):
    x, weight, logits, keys, grad = _problem(*shape)
    p, q = torch.sigmoid(logits), torch.sigmoid(-logits)
    y, factors = fused_linear.forward(x, weight, p, q, keys)
    masked, expected_factors = gumbel._eager_forward_factors(weight, logits, keys, None)
    # the same mask bits and backward factors, bit for bit (one hash, one formula)
    assert torch.equal(factors, expected_factors)
    assert torch.equal(gumbel._kept(factors), masked != 0) or bool((weight == 0).any())
    # the products and gradients to float32 rounding (the sums run in another order than MKL's)
    assert _relative_error(y, torch.bmm(x, masked.transpose(1, 2))) < 1e-5
    assert _relative_error(fused_linear.input_grad(grad, weight, factors), torch.bmm(grad, masked)) < 1e-5
    grad_logits, grad_weight = fused_linear.param_grad(grad, x, factors, weight, p, q, True)
    expected_logits, expected_weight = gumbel._eager_factor_grad(torch.bmm(grad.transpose(1, 2), x), weight,
                                                                 logits, expected_factors, None, True, True)
    assert _relative_error(grad_logits, expected_logits) < 1e-5
    assert _relative_error(grad_weight, expected_weight) < 1e-5
    without_weight = fused_linear.param_grad(grad, x, factors, weight, p, q, False)
    assert without_weight[1] is None and torch.equal(without_weight[0], grad_logits)


def test_a_sample_keeps_a_weight_with_probability_sigmoid_of_its_logit():
    # 16 rows of logits from -3 to 3, 4000 weights each, 2 samples: 8000 draws per logit
    logits = torch.linspace(-3, 3, 16)[:, None].expand(16, 4000).contiguous()
    weight = torch.ones_like(logits)
    _, factors = fused_linear.forward(torch.zeros(2, 1, 4000), weight, torch.sigmoid(logits),
                                      torch.sigmoid(-logits), gumbel.counter_keys(5, 0, 0, 2))
    kept = gumbel._kept(factors).double().mean(dim=(0, 2))
    expected = torch.sigmoid(logits[:, 0]).double()
    standard_error = (expected * (1 - expected) / 8000).sqrt()
    assert ((kept - expected).abs() < 5 * standard_error).all(), (kept, expected)


def test_the_results_do_not_depend_on_the_thread_count():
    x, weight, logits, keys, grad = _problem(4, 6, 203, 70, seed=2)
    p, q = torch.sigmoid(logits), torch.sigmoid(-logits)
    threads = torch.get_num_threads()
    results = []
    try:
        for count in (1, 3):
            torch.set_num_threads(count)
            y, factors = fused_linear.forward(x, weight, p, q, keys)
            results.append((y, factors, fused_linear.input_grad(grad, weight, factors),
                            *fused_linear.param_grad(grad, x, factors, weight, p, q, True)))
    finally:
        torch.set_num_threads(threads)
    assert all(torch.equal(a, b) for a, b in zip(*results))


def _model_and_mask(seed=0):
    torch.manual_seed(seed)
    net = nn.Sequential(nn.Linear(37, 50), nn.ReLU(), nn.Linear(50, 13))
    return net, WeightMask.for_module(net, MaskSelection(mask_biases=True), 1.0)


def _count_fused_calls(monkeypatch):
    calls = []
    original = fused_linear.forward
    monkeypatch.setattr(fused_linear, "forward", lambda *a, **k: calls.append(a[0].shape) or original(*a, **k))
    return calls


@pytest.mark.parametrize("train_weights", [False, True])
def test_masked_model_with_fused_kernels_matches_the_default_engine(monkeypatch, caplog, train_weights):
    calls = _count_fused_calls(monkeypatch)
    caplog.set_level(logging.INFO, logger="modmask.masked_model")
    x = torch.randn(24, 37)
    results = {}
    for kernels in ("eager", "fused"):
        net, mask = _model_and_mask()
        masked = MaskedModel(net, mask, mask_samples=4, seed=3, kernels=kernels, train_weights=train_weights)
        out = masked(x)
        out.square().sum().backward()
        grads = {f"logit {name}": logit.grad for name, logit in mask.items()}
        if train_weights:
            grads.update({f"weight {name}": p.grad for name, p in net.named_parameters()})
        results[kernels] = out.detach(), grads
        assert masked.path == "vectorised"
    assert calls == [(4, 6, 37), (4, 6, 50)]   # both layers, all four samples in one call each
    assert [r.getMessage() for r in caplog.records if "fused" in r.getMessage()] == [
        "kernels 'fused': 2 of 4 masked weights through modmask.fused_linear (0.weight, 2.weight)"]
    (out, grads), (fused_out, fused_grads) = results["eager"], results["fused"]
    assert _relative_error(fused_out, out) < 1e-5
    assert set(grads) == set(fused_grads) and len(grads) == (8 if train_weights else 4)
    for name, grad in grads.items():
        assert _relative_error(fused_grads[name], grad) < 1e-5, name


def test_inputs_with_more_dimensions_and_a_batch_in_dim_1():
    torch.manual_seed(1)
    net = nn.Sequential(nn.Linear(20, 30), nn.Tanh(), nn.Linear(30, 5))   # time-major: (T, B, features)
    x = torch.randn(7, 12, 20)
    outputs = []
    for kernels in ("eager", "fused"):
        mask = WeightMask.for_module(net, initial_logit=0.5)
        out = MaskedModel(net, mask, mask_samples=3, seed=4, batch_dim=1, kernels=kernels)(x)
        out.sum().backward()
        outputs.append((out.detach(), mask.logit("0.weight").grad))
    assert outputs[1][0].shape == (7, 12, 5)
    assert _relative_error(outputs[1][0], outputs[0][0]) < 1e-5
    assert _relative_error(outputs[1][1], outputs[0][1]) < 1e-5


class _ReadsItsLayersWeight(nn.Module):
    def __init__(self):
        super().__init__()
        self.first, self.second = nn.Linear(10, 16), nn.Linear(16, 3)

    def forward(self, x):
        return F.linear(torch.relu(self.first(x)), self.second.weight, self.second.bias)


@pytest.mark.parametrize("build", [_ReadsItsLayersWeight, lambda: nn.Sequential(
    nn.TransformerEncoderLayer(8, 2, 16, dropout=0.0, batch_first=True), nn.Linear(8, 3))])
def test_a_weight_read_outside_its_layers_forward_is_masked_all_the_same(monkeypatch, build):
    calls = _count_fused_calls(monkeypatch)
    torch.manual_seed(2)
    net = build()
    x = torch.randn(12, 5, 10) if isinstance(net, _ReadsItsLayersWeight) else torch.randn(12, 5, 8)
    outputs = []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for kernels in ("eager", "fused", "fused"):
            mask = WeightMask.for_module(net, initial_logit=0.5)
            masked = MaskedModel(net, mask, mask_samples=3, seed=4, kernels=kernels)
            out = masked(x)
            out.sum().backward()
            outputs.append((out.detach(), {n: logit.grad for n, logit in mask.items()}))
            if kernels == "fused":
                out = masked(x)   # the next step: the fused kernels stay off or on as they were
    turned_off = [str(w.message) for w in caught if "turned off" in str(w.message)]
    for out, grads in outputs[1:]:
        assert _relative_error(out, outputs[0][0]) < 1e-5
        assert all(_relative_error(grads[n], g) < 1e-5 for n, g in outputs[0][1].items())
    if isinstance(net, _ReadsItsLayersWeight):
        # its second layer's weight is read by F.linear in the parent's forward: one warning per model
        assert len(turned_off) == 2 and "dim" in turned_off[0], turned_off[0]
    else:
        # the attention's out_proj is read by the attention itself, so it never takes the fused path
        # (had it taken it, the attention would have failed on the weight it reads and turned them off)
        assert not turned_off and len(calls) == 3 * 4   # linear1, linear2, the last layer; 2 models x 2 steps


@pytest.mark.parametrize("setting", ["temperature", "torch noise", "no grad"])
def test_steps_the_fused_kernels_do_not_cover_run_the_default_engine_bit_for_bit(monkeypatch, setting):
    calls = _count_fused_calls(monkeypatch)
    x = torch.randn(24, 37)
    outputs = []
    for kernels in ("auto", "fused"):
        net, mask = _model_and_mask()
        masked = MaskedModel(net, mask, mask_samples=4, seed=3, kernels=kernels,
                             temperature=0.5 if setting == "temperature" else 1.0,
                             noise_kind="torch" if setting == "torch noise" else "counter")
        with torch.set_grad_enabled(setting != "no grad"):
            outputs.append(masked(x))
    assert calls == []
    assert torch.equal(outputs[0], outputs[1])


@pytest.mark.parametrize("missing", ["compiler", "writable cache"])
def test_without_a_compiler_the_default_engine_runs_with_one_warning(monkeypatch, tmp_path, missing):
    if missing == "compiler":
        monkeypatch.setenv("CC", str(tmp_path / "no-such-compiler"))
        monkeypatch.setenv("MODMASK_NATIVE_CACHE", str(tmp_path / "cache"))
    else:   # a file where the cache folder should be (a chmod would not stop root)
        (tmp_path / "file").write_text("")
        monkeypatch.setenv("MODMASK_NATIVE_CACHE", str(tmp_path / "file" / "cache"))
    monkeypatch.setattr(fused_linear, "_LIBRARY", None)
    monkeypatch.setattr(fused_linear, "_LIBRARY_ERROR", None)
    monkeypatch.setattr(fused_linear, "_WARNED", False)
    x = torch.randn(24, 37)
    outputs = []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for kernels in ("auto", "fused", "fused"):
            net, mask = _model_and_mask()
            outputs.append(MaskedModel(net, mask, mask_samples=4, seed=3, kernels=kernels)(x))
    messages = [str(w.message) for w in caught if issubclass(w.category, RuntimeWarning)]
    named = "no-such-compiler" if missing == "compiler" else str(tmp_path / "file" / "cache")
    assert len(messages) == 1 and named in messages[0] and "default kernels" in messages[0], messages
    assert torch.equal(outputs[0], outputs[1]) and torch.equal(outputs[0], outputs[2])
    assert not list((tmp_path / "cache").glob("*"))   # nothing half-written left behind


def test_the_library_is_built_once_per_source_compiler_and_cpu(monkeypatch, tmp_path):
    monkeypatch.setenv("MODMASK_NATIVE_CACHE", str(tmp_path))
    path = fused_linear.library_path()
    assert path.parent == tmp_path and path.suffix == ".so"
    fused_linear._build(path)
    assert path.exists() and [p.name for p in tmp_path.iterdir()] == [path.name]
    monkeypatch.setenv("CC", "cc -O2")
    assert fused_linear.library_path() != path


def test_joint_training_with_fused_kernels_follows_the_default_engine(monkeypatch):
    calls = _count_fused_calls(monkeypatch)
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(512, 20, generator=generator)
    y = (x[:, 0] > 0).long()
    losses = {}
    for kernels in ("eager", "fused"):
        torch.manual_seed(0)
        net = nn.Sequential(nn.Linear(20, 32), nn.ReLU(), nn.Linear(32, 2))
        mask = WeightMask.for_module(net, MaskSelection(mask_biases=True), 2.0)
        settings = TrainSettings.from_config({"steps": 30, "lr": 1e-2, "batch_size": 64, "mask_samples": 4,
                                              "beta": 1e-4, "log_every": 1, "kernels": kernels})
        history = train_jointly(net, mask, BatchSampler([x, y], 64, seed=0), F.cross_entropy, settings,
                                log=logging.getLogger("test"))
        losses[kernels] = torch.tensor([row["loss"] for row in history.rows])
    assert len(calls) == 2 * 30   # two layers per step, only with kernels "fused"
    # the first step is the same computation up to float32 rounding; later ones drift apart only slowly
    assert abs(losses["fused"][0] - losses["eager"][0]) < 1e-5
    assert (losses["fused"] - losses["eager"]).abs().max() < 1e-3
    assert losses["fused"][-5:].mean() < 0.5 * losses["fused"][:5].mean()


@pytest.mark.parametrize("total, parts, step", [(800, 2, 3), (10, 4, 1), (5, 3, 6), (2000, 16, 6), (0, 2, 1)])
def test_thread_ranges_cover_every_row_once_on_block_boundaries(total, parts, step):
    ranges = fused_linear._ranges(total, parts, step)
    assert len(ranges) <= max(parts, 1) and ranges[0][0] == 0 and ranges[-1][1] == total
    assert all(end == start for (_, end), (start, _) in zip(ranges, ranges[1:]))
    assert all(start % step == 0 for start, _ in ranges)

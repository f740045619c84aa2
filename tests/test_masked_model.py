"""MaskedModel: vectorised K-sample pass vs a loop of K passes, batch chunking, masks and selections."""
import pytest
import torch
from torch import nn

from modmask import FNN, LSTM, BatchNotDivisibleError, BinaryMask, MaskSelection, MaskedModel, WeightMask
from modmask.masked_model import WithMask, run_in_chunks, run_with_mask
from modmask.masks import mask_conditions


def _fnn():
    torch.manual_seed(0)
    return FNN(6, [16, 12], 5).eval()


def _lstm():
    torch.manual_seed(0)
    return LSTM(5, 8, 4, steps=3).eval()


def _grads(params):
    out = [p.grad.clone() for p in params]
    for p in params:
        p.grad = None
    return out


def _compare(masked, x, *, check_weights):
    """Vectorised and loop pass on the same noise: same outputs, same gradients."""
    noise = masked.draw_noise()
    logits = masked.mask.trainable_parameters()
    weights = [p for p in masked.module.parameters() if p.requires_grad]
    target = torch.randn_like(masked(x, noise=noise))
    results = []
    for forward in (masked.forward, masked.forward_loop):
        out = forward(x, noise=noise)
        ((out - target) ** 2).sum().backward()
        results.append((out.detach(), _grads(logits), _grads(weights) if check_weights else []))
    (out_v, gl_v, gw_v), (out_l, gl_l, gw_l) = results
    torch.testing.assert_close(out_v, out_l, rtol=1e-5, atol=1e-6)
    for a, b in zip(gl_v + gw_v, gl_l + gw_l):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)
        assert a.abs().sum() > 0
    return out_v


@pytest.mark.parametrize("kernels", ["eager", "compiled"])
@pytest.mark.parametrize("train_weights", [False, True])
def test_vectorised_equals_loop_fnn(kernels, train_weights):
    net = _fnn()
    for p in net.parameters():
        p.requires_grad_(train_weights)
    mask = WeightMask.for_module(net, initial_logit=0.5)
    masked = MaskedModel(net, mask, mask_samples=4, kernels=kernels, train_weights=train_weights, seed=3)
    _compare(masked, torch.randn(12, 6), check_weights=train_weights)


@pytest.mark.parametrize("time_major", [False, True])
@pytest.mark.parametrize("train_weights", [False, True])
def test_vectorised_equals_loop_lstm(time_major, train_weights):
    net = _lstm()
    for p in net.parameters():
        p.requires_grad_(train_weights)
    mask = WeightMask.for_module(net, MaskSelection(mask_biases=True), initial_logit=0.5)
    x = torch.randn(3, 8, 5) if time_major else torch.randn(8, 5)
    masked = MaskedModel(net, mask, mask_samples=4, batch_dim=1 if time_major else 0,
                         output_batch_dim=0, kernels="eager", train_weights=train_weights, seed=4)
    _compare(masked, x, check_weights=train_weights)


@pytest.mark.parametrize("noise_kind", ["counter", "torch"])
def test_fresh_noise_path_equals_materialised_noise(noise_kind):
    net = _fnn()
    masked = MaskedModel(net, WeightMask.for_module(net, initial_logit=0.0), 2, noise_kind=noise_kind)
    state = masked.noise.state_dict()
    implicit = masked.sample_weights()
    masked.noise.load_state_dict(state)
    explicit = masked.sample_weights(masked.draw_noise())
    assert all(torch.equal(implicit[n], explicit[n]) for n in implicit)
    again = masked.sample_weights()
    assert not torch.equal(again["layers.0.weight"], implicit["layers.0.weight"])   # noise advances
    assert not torch.equal(implicit["layers.0.weight"][0], implicit["layers.0.weight"][1])  # samples differ


def _keep_first_drop_second(masked):
    """Noise (K = 2): sample 0 keeps every weight, sample 1 drops every weight."""
    noise = {}
    for name, logit in masked.mask.items():
        n = torch.empty(2, *logit.shape)
        n[0] = 1 - 1e-6   # u > sigmoid(-l): kept
        n[1] = 1e-6       # u < sigmoid(-l): dropped
        noise[name] = n
    return noise


@pytest.mark.parametrize("kernels", ["eager", "compiled"])
def test_chunking_follows_the_batch_dimension_time_major(kernels):
    net = _lstm()
    mask = WeightMask.for_module(net, initial_logit=2.0)
    masked = MaskedModel(net, mask, mask_samples=2, batch_dim=1, output_batch_dim=0, kernels=kernels)
    torch.manual_seed(1)
    x = torch.randn(3, 6, 5)   # [T, B, C]
    noise = _keep_first_drop_second(masked)
    full = run_with_mask(net, None, x)
    dropped = run_with_mask(net, mask.binary() & mask.binary().invert(), x)  # every masked weight zero
    assert not torch.allclose(full, dropped)
    for forward in (masked.forward, masked.forward_loop):
        out = forward(x, noise=noise)
        assert out.shape == (6, 4)
        torch.testing.assert_close(out[:3], full[:3])      # batch rows 0..2: sample 0 (all kept)
        torch.testing.assert_close(out[3:], dropped[3:])   # batch rows 3..5: sample 1 (all dropped)


def test_chunking_follows_the_batch_dimension_with_time_major_output():
    net = _lstm()
    mask = WeightMask.for_module(net, initial_logit=2.0)
    masked = MaskedModel(net, mask, mask_samples=2, batch_dim=1, kernels="eager")   # outputs [R, B, O]
    x = torch.randn(3, 4, 5)
    noise = _keep_first_drop_second(masked)
    out = masked(x, read_at=(2, 3), noise=noise)
    full = net(x, read_at=(2, 3))
    dropped = run_with_mask(net, mask.binary().invert(), x, read_at=(2, 3))
    assert out.shape == (2, 4, 4)
    torch.testing.assert_close(out[:, :2], full[:, :2])
    torch.testing.assert_close(out[:, 2:], dropped[:, 2:])
    assert not torch.allclose(full[:, 2:], dropped[:, 2:])


def test_batch_not_divisible_by_mask_samples_is_a_clear_error():
    net = _fnn()
    masked = MaskedModel(net, WeightMask.for_module(net), mask_samples=4)
    with pytest.raises(BatchNotDivisibleError, match=r"batch size 10.*mask samples 4"):
        masked(torch.randn(10, 6))
    assert issubclass(BatchNotDivisibleError, ValueError)
    with pytest.raises(BatchNotDivisibleError, match="batch size 5"):
        MaskedModel(_lstm(), WeightMask.for_module(_lstm()), 2, batch_dim=1)(torch.randn(3, 5, 5))


def test_constructor_checks():
    net = _fnn()
    with pytest.raises(ValueError, match="mask_samples"):
        MaskedModel(net, WeightMask.for_module(net), mask_samples=0)
    with pytest.raises(ValueError, match="kernels"):
        MaskedModel(net, WeightMask.for_module(net), kernels="fast")
    with pytest.raises(KeyError, match="nope"):
        MaskedModel(net, WeightMask({"nope": torch.Size([2])}))


def test_regularizer_is_beta_sum_of_logits_over_batch():
    net = _fnn()
    mask = WeightMask.for_module(net, initial_logit=2.0)
    masked = MaskedModel(net, mask)
    assert masked.regularizer(1e-2, 64).item() == pytest.approx(1e-2 * 2.0 * mask.numel() / 64)


def test_logit_scale_sharpens_the_keep_probability_to_sigmoid_of_scaled_logit():
    # P(kept) = sigmoid(c * logit): with c = 4, logit 0.5 keeps with sigmoid(2) = 0.881, logit -0.25 with
    # sigmoid(-1) = 0.269; at c = 1 these are sigmoid(0.5) = 0.622 and sigmoid(-0.25) = 0.438
    net = nn.Linear(100, 100, bias=False)
    nn.init.constant_(net.weight, 1.0)
    mask = WeightMask.for_module(net)
    with torch.no_grad():
        mask.logits["weight"][:50] = 0.5
        mask.logits["weight"][50:] = -0.25
    masked = MaskedModel(net, mask, mask_samples=40, kernels="eager")
    for scale, expected in ((1.0, (0.622, 0.438)), (4.0, (0.881, 0.269))):
        masked.logit_scale = scale
        kept = masked.sample_weights()["weight"]  # (40, 100, 100): 200,000 draws per group
        assert kept[:, :50].mean().item() == pytest.approx(expected[0], abs=0.005)
        assert kept[:, 50:].mean().item() == pytest.approx(expected[1], abs=0.005)
    # the gradient reaches the raw logits through the scale: d(sum of kept weights)/d logit is c times
    # the unscaled estimator's at the scaled logit
    masked.logit_scale = 4.0
    noise = masked.draw_noise()
    masked.sample_weights(noise)["weight"].sum().backward()
    scaled_grad = mask.logits["weight"].grad.clone()
    mask.logits["weight"].grad = None
    masked.logit_scale = 1.0
    with torch.no_grad():
        mask.logits["weight"].mul_(4.0)
    masked.sample_weights(noise)["weight"].sum().backward()
    torch.testing.assert_close(scaled_grad, 4.0 * mask.logits["weight"].grad)


# ---- masks ---------------------------------------------------------------------------------------

def _binary(net, seed):
    g = torch.Generator().manual_seed(seed)
    return BinaryMask({n: torch.rand(p.shape, generator=g) > 0.5 for n, p in net.named_parameters()
                       if n.endswith("weight")})


def test_invert_union_intersection():
    net = _fnn()
    a, b = _binary(net, 0), _binary(net, 1)
    for n in a.names:
        assert torch.equal(a.invert().bits[n], ~a.bits[n]) and torch.equal((~a).bits[n], ~a.bits[n])
        assert torch.equal((a | b).bits[n], a.bits[n] | b.bits[n])
        assert torch.equal((a & b).bits[n], a.bits[n] & b.bits[n])
        assert torch.equal(BinaryMask.union([a, b, ~a]).bits[n], torch.ones_like(a.bits[n]))
    assert (a & ~a).count() == 0 and (a | ~a).count() == sum(a.sizes().values())
    assert a.count() + (~a).count() == sum(a.sizes().values())
    with pytest.raises(ValueError, match="different parameters"):
        a | BinaryMask({a.names[0]: a.bits[a.names[0]]})


def test_masked_parameters_zero_exactly_the_dropped_weights():
    net = _fnn()
    mask = _binary(net, 2)
    params = dict(net.named_parameters())
    masked = mask.masked_parameters(net)
    assert set(masked) == set(mask.names)
    for n, bits in mask.bits.items():
        assert torch.equal(masked[n] == 0, ~bits | (params[n] == 0))
        assert torch.equal(masked[n][bits], params[n][bits])
    # through run_with_mask: biases (not masked) stay, the dropped weights are gone
    x = torch.randn(3, 6)
    expected = x
    for i, layer in enumerate(net.layers):
        expected = expected @ (layer.weight * mask.bits[f"layers.{i}.weight"]).T + layer.bias
        expected = torch.relu(expected) if i < len(net.layers) - 1 else expected
    torch.testing.assert_close(run_with_mask(net, mask, x), expected)
    torch.testing.assert_close(run_with_mask(net, ~mask & mask, x), run_with_mask(
        net, BinaryMask({n: torch.zeros_like(b) for n, b in mask.bits.items()}), x))
    assert torch.equal(params["layers.0.bias"], net.layers[0].bias)


def test_inverted_mask_evaluates_the_complement_only_on_masked_parameters():
    net = _fnn()
    mask = WeightMask.for_module(net)
    with torch.no_grad():
        mask.logits["layers__0__weight"].normal_()
    binary = mask.binary()
    inverted = binary.invert().masked_parameters(net)
    w = net.layers[0].weight
    assert torch.equal(inverted["layers.0.weight"], w.detach() * (mask.logit("layers.0.weight") <= 0))
    assert "layers.0.bias" not in inverted


def test_fixed_logits_are_not_trained_but_are_sampled():
    net = _fnn()
    full = WeightMask.for_module(net, initial_logit=1.0)
    with torch.no_grad():
        full.logits["layers__2__weight"].fill_(-50.0)   # drops every output weight
    mask = WeightMask.for_module(net, initial_logit=2.0)
    mask.fix_from(full, ["layers.2.weight"])
    fixed = mask.logit("layers.2.weight")
    assert mask.fixed_names == ["layers.2.weight"]
    assert all(p is not mask.logits["layers__2__weight"] for p in mask.trainable_parameters())
    assert len(mask.trainable_parameters()) == 2
    masked = MaskedModel(net, mask, mask_samples=2)
    opt = torch.optim.Adam(mask.trainable_parameters(), lr=0.1)
    before = {n: mask.logit(n).clone() for n in mask.names}
    loss = masked(torch.randn(4, 6)).square().sum() + masked.regularizer(1.0, 4)
    loss.backward()
    opt.step()
    assert torch.equal(mask.logit("layers.2.weight"), before["layers.2.weight"])
    assert not torch.equal(mask.logit("layers.0.weight"), before["layers.0.weight"])
    # still sampled: with logit -50 every output weight is dropped in every sample
    sampled = masked.sample_weights()
    assert torch.equal(sampled["layers.2.weight"], torch.zeros(2, 5, 12))
    assert sampled["layers.0.weight"].ne(0).float().mean() > 0.5
    assert torch.equal(fixed, torch.full((5, 12), -50.0))
    with pytest.raises(KeyError):
        mask.fix("layers.0.bias", torch.zeros(16))
    with pytest.raises(ValueError, match="shape"):
        mask.fix("layers.0.weight", torch.zeros(3))


def test_weight_mask_file_round_trip(tmp_path):
    net = _fnn()
    mask = WeightMask.for_module(net)
    with torch.no_grad():
        for p in mask.logits.values():
            p.normal_()
    mask.fix("layers.1.weight", torch.full((12, 16), -1.5))
    path = tmp_path / "mask.pt"
    torch.save(mask.to_file_dict(), path)
    loaded = WeightMask.from_file_dict(torch.load(path))
    assert loaded.names == mask.names and loaded.fixed_names == ["layers.1.weight"]
    for n in mask.names:
        assert torch.equal(loaded.logit(n), mask.logit(n))
    assert len(loaded.trainable_parameters()) == 2
    assert all(torch.equal(loaded.binary().bits[n], mask.binary().bits[n]) for n in mask.names)
    with pytest.raises(ValueError, match="not a saved WeightMask"):
        WeightMask.from_file_dict({"format": "x"})


class _WithEverything(nn.Module):
    def __init__(self):
        super().__init__()
        self.embedding = nn.Embedding(10, 4)
        self.linear = nn.Linear(4, 4)
        self.norm = nn.LayerNorm(4)
        self.batchnorm = nn.BatchNorm1d(4)
        self.conv = nn.Conv1d(4, 4, 3)
        self.out = nn.Linear(4, 2, bias=False)


def test_mask_selection():
    m = _WithEverything()
    assert MaskSelection().select(m) == ["linear.weight", "conv.weight", "out.weight"]
    assert MaskSelection(mask_biases=True).select(m) == ["linear.weight", "linear.bias", "conv.weight",
                                                         "conv.bias", "out.weight"]
    assert MaskSelection(mask_norms=True).select(m) == ["linear.weight", "norm.weight", "batchnorm.weight",
                                                        "conv.weight", "out.weight"]
    everything = MaskSelection(mask_biases=True, mask_norms=True, include=(r".*",)).select(m)
    assert not any(n.startswith("embedding") for n in everything)
    assert "norm.bias" in everything and "batchnorm.bias" in everything
    assert MaskSelection(include=(r"^out",)).select(m) == ["out.weight"]
    assert MaskSelection(exclude=(r"conv",)).select(m) == ["linear.weight", "out.weight"]
    with pytest.raises(ValueError, match="matches no parameter"):
        MaskSelection(include=(r"^embedding",)).select(m)


def test_mask_conditions_and_chunked_masked_runs():
    torch.manual_seed(0)
    model = nn.Linear(3, 2, bias=False)
    keep = BinaryMask({"weight": torch.tensor([[True, False, True], [False, False, True]])})
    conditions = mask_conditions({"a": keep})
    assert [(name, inverted) for name, inverted, _ in conditions] == [("none", False), ("a", False), ("a", True)]
    assert conditions[0][2] is None
    assert torch.equal(conditions[2][2].bits["weight"], ~keep.bits["weight"])
    x = torch.randn(10, 3)
    # chunks of 3 rows give the same as one pass, and the masked weight matrix is W * bits
    out = run_in_chunks(WithMask(model, keep), x, "cpu", chunk=3)
    expected = x @ (model.weight * keep.bits["weight"]).T
    torch.testing.assert_close(out, expected)
    torch.testing.assert_close(run_in_chunks(WithMask(model, None), x, "cpu", chunk=4), model(x).detach())


def test_regularizer_gradient_added_in_place_equals_autograds_bit_for_bit():
    class WithUnused(nn.Module):
        def __init__(self):
            super().__init__()
            self.first, self.second, self.unused = nn.Linear(3, 5), nn.Linear(5, 2), nn.Linear(2, 2)

        def forward(self, x):
            return self.second(torch.relu(self.first(x)))

    torch.manual_seed(0)
    model = WithUnused()
    for p in model.parameters():
        p.requires_grad_(False)
    x, beta, batch = torch.randn(8, 3), 3.7e-4, 8
    grads, values = [], []
    for in_place in (False, True):
        mask = WeightMask.for_module(model, initial_logit=1.3)
        mask.fix("second.weight", torch.full((2, 5), -0.7))   # a fixed logit counts in the value, gets no gradient
        masked = MaskedModel(model, mask, mask_samples=4, seed=5)
        task = masked(x).square().mean()
        if in_place:
            task.backward()
            value = task.detach() + masked.add_regularizer_gradient_(beta, batch)
        else:
            value = task + masked.regularizer(beta, batch)
            value.backward()
        values.append(value.detach())
        trainable = [n for n in mask.names if n not in mask.fixed_names]
        assert trainable == ["first.weight", "unused.weight"]
        grads.append({n: p.grad for n, p in zip(trainable, mask.trainable_parameters())})
    assert torch.equal(values[0], values[1])
    assert sorted(grads[1]) == sorted(grads[0])
    for name in grads[0]:
        assert torch.equal(grads[0][name], grads[1][name]), name
    # the unused layer's logits get the regulariser's gradient alone: beta / batch for every entry
    unused = [g for n, g in grads[1].items() if n.startswith("unused")]
    assert unused and all(torch.allclose(g, torch.full_like(g, beta / batch)) for g in unused)
    # the value: beta * (sum of all logits, the fixed ones included) / batch
    expected = (1.3 * (3 * 5 + 2 * 2) - 0.7 * 2 * 5) * beta / batch
    assert abs((values[1] - task.detach()).item() - expected) < 1e-9

"""CIFAR-10 networks: shapes, parameter counts, the lr schedule, and K-sample masked passes through conv/BatchNorm."""
import pytest
import torch
from torch import nn

from modmask import BinaryMask, MaskSelection, MaskedModel, WeightMask, run_with_mask
from modmask.cnn import BasicBlock, ResNetCifar, SimpleCNN, build_cnn, resnet_lr


def _conv(i, o, k=3, bias=False):
    return i * o * k * k + (o if bias else 0)


def _bn(c):
    return 2 * c   # weight and bias (running statistics are buffers)


def _count(model):
    return sum(p.numel() for p in model.parameters())


def test_simple_cnn_shapes_and_parameter_count():
    model = SimpleCNN(dropout=True)
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 10)
    # conv 3->32, 32->64, 64->128, 128->256 (3x3 + bias), linear 256->10
    assert _count(model) == 896 + 18496 + 73856 + 295168 + 2570 == 390986
    assert _count(SimpleCNN(dropout=False)) == 390986
    small = SimpleCNN(dropout=False, widths=(4, 8, 8, 16))
    assert _count(small) == (_conv(3, 4, bias=True) + _conv(4, 8, bias=True) + _conv(8, 8, bias=True)
                             + _conv(8, 16, bias=True) + 16 * 10 + 10)
    assert small(torch.randn(3, 3, 32, 32)).shape == (3, 10)
    assert small.output.weight.shape == (10, 16)
    with pytest.raises(ValueError, match="four positive widths"):
        SimpleCNN(dropout=False, widths=(4, 8, 16))


def test_simple_cnn_dropout_only_in_training_mode():
    x = torch.randn(4, 3, 32, 32)
    torch.manual_seed(0)
    with_dropout = SimpleCNN(dropout=True, widths=(4, 8, 8, 16))
    without = SimpleCNN(dropout=False, widths=(4, 8, 8, 16))
    without.load_state_dict(with_dropout.state_dict())
    with_dropout.train(), without.train()
    assert not torch.equal(with_dropout(x), with_dropout(x))
    assert torch.equal(without(x), without(x))
    with_dropout.eval()
    torch.testing.assert_close(with_dropout(x), without(x))


def _resnet_parameters(depth, widths=(16, 32, 64), classes=10):
    n = (depth - 2) // 6
    total = _conv(3, widths[0]) + _bn(widths[0])
    channels = widths[0]
    for width in widths:
        for j in range(n):
            total += _conv(channels, width) + _bn(width) + _conv(width, width) + _bn(width)
            if channels != width:                    # first block of stages 2 and 3: 1x1 projection
                total += _conv(channels, width, k=1) + _bn(width)
            channels = width
    return total + widths[-1] * classes + classes


def test_resnet110_blocks_and_parameter_count():
    model = ResNetCifar(depth=110)
    blocks = [m for m in model.modules() if isinstance(m, BasicBlock)]
    assert len(blocks) == 54 and model.blocks_per_stage == 18
    assert [len(stage) for stage in model.stages] == [18, 18, 18]
    assert _count(model) == _resnet_parameters(110) == 1730714   # ~1.7M as in He et al.
    assert sum(isinstance(m, nn.Conv2d) for m in model.modules()) == 1 + 2 * 54 + 2   # stem, blocks, 2 projections
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 10)
    assert model.output.weight.shape == (10, 64)


@pytest.mark.parametrize("depth,widths", [(8, (4, 8, 16)), (20, (16, 32, 64))])
def test_resnet_small_depths(depth, widths):
    model = ResNetCifar(depth=depth, widths=widths)
    assert _count(model) == _resnet_parameters(depth, widths)
    assert sum(isinstance(m, BasicBlock) for m in model.modules()) == 3 * (depth - 2) // 6
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 10)


@pytest.mark.parametrize("depth", [7, 9, 2, 16])
def test_resnet_depth_must_be_6n_plus_2(depth):
    with pytest.raises(ValueError, match="6n \\+ 2"):
        ResNetCifar(depth=depth)


def test_build_cnn():
    spec = {"model": "simple_cnn", "dropout": True, "widths": [4, 8, 8, 16]}
    state = torch.random.get_rng_state()
    a, b, c = build_cnn(spec, seed=1), build_cnn(spec, seed=1), build_cnn(spec, seed=2)
    assert torch.equal(torch.random.get_rng_state(), state)        # the global RNG is left alone
    assert isinstance(a, SimpleCNN) and a.dropout and a.widths == (4, 8, 8, 16)
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))
    assert not torch.equal(a.conv1.weight, c.conv1.weight)
    assert not build_cnn({"model": "simple_cnn", "dropout": False}, 0).dropout
    resnet = build_cnn({"model": "resnet", "depth": 8}, 0)
    assert isinstance(resnet, ResNetCifar) and resnet.depth == 8 and resnet.widths == (16, 32, 64)
    assert build_cnn({"model": "resnet"}, 0).depth == 110
    with pytest.raises(ValueError, match="'mlp' for key 'model'"):
        build_cnn({"model": "mlp"}, 0)
    with pytest.raises(ValueError, match="'dept'"):
        build_cnn({"model": "resnet", "dept": 20}, 0)
    with pytest.raises(ValueError, match="'dropout'"):
        build_cnn({"model": "simple_cnn"}, 0)
    with pytest.raises(ValueError, match="'dropout'"):
        build_cnn({"model": "simple_cnn", "dropout": "no"}, 0)


def test_resnet_lr_schedule():
    assert [resnet_lr(s) for s in (0, 1, 31999, 32000, 47999, 48000, 64000)] == \
        [0.1, 0.1, 0.1, 0.01, 0.01, 0.001, 0.001]
    assert resnet_lr(150, base_lr=1.0, milestones=(100, 200)) == pytest.approx(0.1)
    assert resnet_lr(250, base_lr=1.0, milestones=(200, 100)) == pytest.approx(0.01)
    assert resnet_lr(399, warmup_steps=400) == 0.01 and resnet_lr(400, warmup_steps=400) == 0.1


def test_output_layer_is_named_output_and_its_mask_can_be_fixed():
    for model in (SimpleCNN(dropout=True, widths=(4, 8, 8, 16)), ResNetCifar(depth=8, widths=(4, 8, 16))):
        mask = WeightMask.for_module(model, MaskSelection())
        assert "output.weight" in mask.names and "output.bias" not in mask.names
        assert not any("bn" in n or n.endswith("shortcut.1.weight") for n in mask.names)   # no BatchNorm
        mask.fix("output.weight", torch.full((10, model.output.in_features), -3.0))
        assert mask.fixed_names == ["output.weight"]
        assert len(mask.trainable_parameters()) == len(mask.names) - 1
        labels = model.layer_labels()
        assert labels["output.weight"] == "output layer" and all(n in labels for n in mask.names)


# ---- the mask engine on conv / BatchNorm networks -------------------------------------------------

def _models():
    torch.manual_seed(0)
    cnn = SimpleCNN(dropout=True, widths=(4, 8, 8, 16))
    resnet = ResNetCifar(depth=8, widths=(4, 8, 16))
    # non-trivial running statistics, as after training
    with torch.no_grad():
        resnet.train()
        for _ in range(3):
            resnet(torch.randn(16, 3, 32, 32) * 2 + 0.5)
    return {"simple_cnn": cnn.eval(), "resnet8": resnet.eval()}


def _grads(params):
    out = [p.grad.clone() for p in params]
    for p in params:
        p.grad = None
    return out


@pytest.mark.parametrize("name", ["simple_cnn", "resnet8"])
def test_vectorised_k_sample_pass_equals_k_masked_passes(name):
    model = _models()[name]
    k = 4
    mask = WeightMask.for_module(model, MaskSelection(), initial_logit=0.5)
    masked = MaskedModel(model, mask, mask_samples=k, kernels="eager", seed=3)
    buffers = {n: b.clone() for n, b in model.named_buffers()}
    params = {n: p.detach().clone() for n, p in model.named_parameters()}
    torch.manual_seed(1)
    x = torch.randn(8, 3, 32, 32)
    noise = masked.draw_noise()
    logits = mask.trainable_parameters()
    target = torch.randn(8, 10)

    out = masked(x, noise=noise)
    ((out - target) ** 2).sum().backward()
    grads = _grads(logits)
    out_loop = masked.forward_loop(x, noise=noise)
    ((out_loop - target) ** 2).sum().backward()
    torch.testing.assert_close(out, out_loop, rtol=1e-4, atol=1e-5)
    for a, b in zip(grads, _grads(logits)):
        torch.testing.assert_close(a, b, rtol=1e-3, atol=1e-5)
        assert a.abs().sum() > 0

    # chunk i of the batch runs with binary mask i = 1[u > sigmoid(-logit)] of the same noise
    unmasked = model(x)
    for i in range(k):
        bits = BinaryMask({n: noise[n][i] > torch.sigmoid(-mask.logit(n)) for n in mask.names})
        dropped = 1 - bits.count() / sum(bits.sizes().values())
        assert 0.2 < dropped < 0.55                        # sigmoid(-0.5) = 0.38 of the weights
        chunk = slice(2 * i, 2 * i + 2)
        expected = run_with_mask(model, bits, x[chunk])
        torch.testing.assert_close(out[chunk].detach(), expected, rtol=1e-4, atol=1e-5)
        assert not torch.allclose(expected, unmasked[chunk], atol=1e-3)

    # eval mode: BatchNorm running statistics (and the frozen weights) are untouched
    for n, b in model.named_buffers():
        assert torch.equal(b, buffers[n]), n
    for n, p in model.named_parameters():
        assert torch.equal(p, params[n]) and p.grad is None, n

"""Gumbel-sigmoid sampling, the straight-through kernels and the noise sources."""
import math

import pytest
import torch

from modmask.gumbel import (FORWARD, FORWARD_SAVING_FACTORS, KERNELS, NOISE_EPS, NoiseSource, StraightThroughMask,
                            counter_keys, counter_uniform, reference_hard_sample, sample_masked_weights, soft_sample)

LOGITS = torch.linspace(-3.0, 3.0, 13)


def _noise(kind, k, shape, seed=0):
    if kind == "torch":
        g = torch.Generator().manual_seed(seed)
        return torch.rand(k, *shape, generator=g).clamp_(NOISE_EPS, 1 - NOISE_EPS)
    return counter_keys(seed, 0, 0, k)


# ---- P(b = 1) = sigmoid(l) ---------------------------------------------------------------------

@pytest.mark.parametrize("kind", ["torch", "counter"])
@pytest.mark.parametrize("temperature", [1.0, 0.5])
def test_probability_of_keeping_a_weight_is_sigmoid_of_its_logit(kind, temperature):
    k, repeats = 4, 20000
    logits = LOGITS[:, None].expand(-1, repeats).contiguous()
    noise = _noise(kind, k, logits.shape, seed=1)
    bits = sample_masked_weights(torch.ones_like(logits), logits, noise, temperature)
    assert set(bits.unique().tolist()) <= {0.0, 1.0}
    # the paper's formula, with the same noise, gives the same bits at any temperature
    dense = noise if kind == "torch" else counter_uniform(noise, logits.shape)
    assert torch.equal(bits, reference_hard_sample(logits, dense, temperature).detach())
    n = k * repeats
    freq = bits.mean(dim=(0, 2))
    p = torch.sigmoid(LOGITS)
    std = torch.sqrt(p * (1 - p) / n)
    assert torch.all((freq - p).abs() < 5 * std), (freq - p) / std


# ---- the custom autograd function equals the reference formula --------------------------------

def _reference(weight, logits, noise, temperature):
    return torch.stack([weight * reference_hard_sample(logits, noise[i], temperature) for i in range(noise.shape[0])])


@pytest.mark.parametrize("compiled", [False, True], ids=["eager", "compiled"])
@pytest.mark.parametrize("kind", ["torch", "counter"])
@pytest.mark.parametrize("temperature", [1.0, 0.5])
def test_straight_through_forward_and_gradients_match_reference(compiled, kind, temperature):
    torch.manual_seed(0)
    shape, k = (96, 130), 3  # large enough for the compiled kernels (COMPILE_MIN_PARAMETER_ELEMENTS)
    weight = torch.randn(shape, requires_grad=True)
    logits = (torch.randn(shape) * 2).requires_grad_()
    noise = _noise(kind, k, shape, seed=2)
    dense = noise if kind == "torch" else counter_uniform(noise, shape)
    upstream = torch.randn(k, *shape)

    out = sample_masked_weights(weight, logits, noise, temperature, use_compiled=compiled)
    bits = (soft_sample(logits, dense, temperature) > 0.5).float()
    assert torch.equal(out, weight.detach() * bits)
    assert 0 < bits.mean() < 1
    gw, gl = torch.autograd.grad((out * upstream).sum(), (weight, logits))

    ref = _reference(weight, logits, dense, temperature)
    rw, rl = torch.autograd.grad((ref * upstream).sum(), (weight, logits))
    torch.testing.assert_close(gl, rl, rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(gw, rw, rtol=1e-5, atol=1e-6)
    assert gl.abs().sum() > 0 and gw.abs().sum() > 0
    assert not (compiled and KERNELS.compile_failed), "torch.compile of the kernels failed"
    assert not compiled or any(index in (FORWARD, FORWARD_SAVING_FACTORS) for index, _ in KERNELS._seen), \
        "the compiled kernels never ran"


@pytest.mark.parametrize("compiled", [False, True], ids=["eager", "compiled"])
@pytest.mark.parametrize("kind", ["torch", "counter"])
@pytest.mark.parametrize("temperature", [1.0, 0.5])
@pytest.mark.parametrize("train_weight", [True, False], ids=["joint", "mask-only"])
def test_gradient_in_a_linear_layers_transposed_layout_gives_the_same_gradients(compiled, kind, temperature,
                                                                                 train_weight):
    # A linear layer hands back the K weight gradients with strides (N, 1, out); the backward then
    # runs on the transposed problem. The gradients must be those of the same values laid out plainly.
    from modmask import gumbel
    torch.manual_seed(3)
    shape, k = (70, 120), 4  # large enough for the compiled kernels
    weight = torch.randn(shape, requires_grad=train_weight)
    logits = (torch.randn(shape) * 2).requires_grad_()
    noise = _noise(kind, k, shape, seed=4)
    upstream_t = torch.randn(k, shape[1], shape[0]).transpose(1, 2)
    assert not upstream_t.is_contiguous()
    inputs = (weight, logits) if train_weight else (logits,)
    gumbel._TRANSPOSED_INDEX.clear()
    out = sample_masked_weights(weight, logits, noise, temperature, use_compiled=compiled)
    strided = torch.autograd.grad(out, inputs, grad_outputs=upstream_t)
    assert (tuple(shape), "cpu") in gumbel._TRANSPOSED_INDEX or kind == "torch"
    out = sample_masked_weights(weight, logits, noise, temperature, use_compiled=compiled)
    plain = torch.autograd.grad(out, inputs, grad_outputs=upstream_t.contiguous())
    for a, b in zip(strided, plain):
        assert a.shape == b.shape
        torch.testing.assert_close(a, b, rtol=1e-6, atol=0)
    dense = noise if kind == "torch" else counter_uniform(noise, shape)
    reference = torch.autograd.grad(_reference(weight, logits, dense, temperature), inputs,
                                    grad_outputs=upstream_t.contiguous())
    torch.testing.assert_close(strided[-1], reference[-1], rtol=1e-4, atol=1e-6)
    if train_weight:
        torch.testing.assert_close(strided[0], reference[0], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("compiled", [False, True], ids=["eager", "compiled"])
@pytest.mark.parametrize("kind", ["torch", "counter"])
@pytest.mark.parametrize("temperature", [1.0, 0.5])
@pytest.mark.parametrize("train_weight", [True, False], ids=["joint", "mask-only"])
def test_backward_from_saved_factors_gives_the_bits_of_hashing_again(compiled, kind, temperature, train_weight,
                                                                     monkeypatch):
    # On the CPU the forward saves one factor per entry and sample for the backward instead of hashing the
    # noise a second time; masked weights and both gradients must be those of the hashing path, bit for bit.
    torch.manual_seed(5)
    shape, k = (96, 130), 3  # large enough for the compiled kernels
    weight = torch.randn(shape, requires_grad=train_weight)
    logits = (torch.randn(shape) * 2).requires_grad_()
    noise = _noise(kind, k, shape, seed=6)
    inputs = (weight, logits) if train_weight else (logits,)
    saved = _hashed_then_saved(monkeypatch, weight, logits, noise, inputs, temperature, compiled)
    assert saved[-1].abs().sum() > 0


def _hashed_then_saved(monkeypatch, weight, logits, noise, inputs, temperature=1.0, compiled=False):
    """Masked weights and the gradients of ``inputs`` with the backward hashing the noise again, then with it
    reading the factors the forward saved; checks they are equal bit for bit and returns the latter."""
    from modmask import gumbel
    upstream = torch.randn(noise.shape[0], *weight.shape, dtype=weight.dtype)
    results = {}
    for save in (False, True):
        monkeypatch.setattr(gumbel, "SAVE_FACTORS_ON_CPU", save)
        out = sample_masked_weights(weight, logits, noise, temperature, use_compiled=compiled)
        assert out.dtype == weight.dtype
        assert len(out.grad_fn.saved_tensors) == (4 if save else 3)  # weight, logits, noise (, factors)
        results[save] = (out.detach(), *torch.autograd.grad(out, inputs, grad_outputs=upstream))
    for hashed, saved in zip(results[False], results[True]):
        assert torch.equal(hashed, saved)
    return results[True]


@pytest.mark.parametrize("dtype", [torch.float64, torch.float16, torch.bfloat16])
def test_saved_factors_in_other_float_types_give_the_bits_of_hashing_again(dtype, monkeypatch):
    # the bit is read from the factor's sign through an integer view of the same width
    torch.manual_seed(8)
    weight = torch.randn(40, 30, dtype=dtype, requires_grad=True)
    logits = (torch.randn(40, 30) * 2).to(dtype).requires_grad_()
    noise = counter_keys(9, 0, 0, 3)
    kept = _hashed_then_saved(monkeypatch, weight, logits, noise, (weight, logits))[0] != 0
    assert 0.1 < kept.double().mean() < 0.9
    # the noise itself, in this type: inside (0, 1], and the same values as float32's rounded
    noise_values = counter_uniform(noise, (40, 30), dtype)
    assert torch.isfinite(noise_values).all() and (noise_values > 0).all() and (noise_values <= 1).all()
    assert torch.equal(noise_values, counter_uniform(noise, (40, 30)).to(dtype))


def test_saved_factors_keep_the_bit_where_the_factor_underflows_to_zero():
    # At a low temperature s(1 - s) rounds to 0 for large |logit|; the bit rides on the factor's sign bit
    # (-0.0 for a dropped weight), so the weight gradient still counts exactly the kept samples.
    from modmask import gumbel
    k = 4
    logits = torch.tensor([[40.0, -40.0, 30.0, -30.0, 0.0, 0.1]]).repeat(8, 1).requires_grad_()
    weight = torch.randn(logits.shape, requires_grad=True)
    noise = _noise("torch", k, logits.shape, seed=7)
    out = sample_masked_weights(weight, logits, noise, temperature=0.05)
    factors = out.grad_fn.saved_tensors[3]
    kept = soft_sample(logits.detach(), noise, 0.05) > 0.5
    assert (factors == 0).sum() > 0 and (kept & (factors == 0)).any() and (~kept & (factors == 0)).any()
    assert torch.equal(gumbel._kept(factors), kept)
    upstream = torch.randn(k, *logits.shape)
    gw, gl = torch.autograd.grad(out, (weight, logits), grad_outputs=upstream)
    assert torch.equal(out.detach(), weight.detach() * kept)
    torch.testing.assert_close(gw, (upstream * kept).sum(0), rtol=0, atol=1e-6)
    rw, rl = torch.autograd.grad(_reference(weight, logits, noise, 0.05), (weight, logits), grad_outputs=upstream)
    torch.testing.assert_close(gl, rl, rtol=1e-4, atol=1e-6)


def test_frozen_weight_gets_no_gradient_and_logit_gradient_still_matches():
    torch.manual_seed(1)
    weight = torch.randn(4, 5)
    logits = torch.randn(4, 5, requires_grad=True)
    noise = torch.rand(2, 4, 5)
    out = StraightThroughMask.apply(weight, logits, noise, 1.0, False)
    (g,) = torch.autograd.grad(out.sum(), logits)
    (r,) = torch.autograd.grad(_reference(weight, logits, noise, 1.0).sum(), logits)
    torch.testing.assert_close(g, r, rtol=1e-4, atol=1e-6)


def test_shape_mismatch_and_bad_temperature_are_rejected():
    w = torch.ones(3, 4)
    with pytest.raises(ValueError, match="shape mismatch"):
        sample_masked_weights(w, torch.zeros(3, 4), torch.rand(2, 4, 3))
    with pytest.raises(ValueError, match="temperature"):
        sample_masked_weights(w, torch.zeros(3, 4), torch.rand(2, 3, 4), temperature=0.0)
    with pytest.raises(ValueError, match="counter keys"):
        sample_masked_weights(w, torch.zeros(3, 4), torch.zeros(2, 3, dtype=torch.int32))


# ---- counter noise: uniform and independent ------------------------------------------------------

def test_counter_noise_is_uniform_and_independent():
    n = 1 << 18
    u = counter_uniform(counter_keys(7, 0, 0, 2), (n,)).double()
    assert 0 < u.min() and u.max() < 1
    assert abs(u.mean().item() - 0.5) < 5 * math.sqrt(1 / 12 / u.numel())
    assert abs(u.var().item() - 1 / 12) < 0.002
    # chi-square over 64 bins (63 degrees of freedom; 120 is far in the tail)
    counts = torch.histc(u[0], bins=64, min=0, max=1)
    expected = n / 64
    assert ((counts - expected) ** 2 / expected).sum() < 120

    def corr(a, b):
        a, b = a - a.mean(), b - b.mean()
        return ((a * b).mean() / (a.std() * b.std())).item()

    limit = 5 / math.sqrt(n)
    later = counter_uniform(counter_keys(7, 1, 0, 2), (n,)).double()   # next step
    other = counter_uniform(counter_keys(7, 0, 1, 2), (n,)).double()   # next parameter
    reseed = counter_uniform(counter_keys(8, 0, 0, 2), (n,)).double()  # next seed
    assert abs(corr(u[0, 1:], u[0, :-1])) < limit   # neighbouring elements
    assert abs(corr(u[0], u[1])) < limit            # mask samples of one step
    for v in (later, other, reseed):
        assert abs(corr(u[0], v[0])) < limit
        assert (u != v).float().mean() > 0.999
    # neighbouring hard samples are independent: P(b_i = b_{i+1} = 1) = p^2
    bits = (u[0] > 0.3).double()
    both = (bits[1:] * bits[:-1]).mean().item()
    assert abs(both - 0.49) < 5 * math.sqrt(0.49 * 0.51 / n)
    # low-order structure: every bit of the 23-bit value is balanced
    ints = ((u[0] * (1 << 23)) - 0.5).round().long()
    for bit in range(23):
        assert abs(((ints >> bit) & 1).double().mean().item() - 0.5) < 5 * math.sqrt(0.25 / n)


# ---- noise sources ------------------------------------------------------------------------------------

@pytest.mark.parametrize("kind", ["torch", "counter"])
def test_noise_source_same_seed_same_noise_for_any_thread_count(kind):
    threads = torch.get_num_threads()
    buffers = []
    try:
        for t in (1, 2, 3):
            torch.set_num_threads(t)
            buffers.append(NoiseSource(5, kind=kind).fill_(torch.empty(3, 50_000)))
    finally:
        torch.set_num_threads(threads)
    assert torch.equal(buffers[0], buffers[1]) and torch.equal(buffers[0], buffers[2])
    assert 0 < buffers[0].min() and buffers[0].max() < 1
    assert not torch.equal(buffers[0], NoiseSource(6, kind=kind).fill_(torch.empty(3, 50_000)))


@pytest.mark.parametrize("kind", ["torch", "counter"])
def test_noise_source_state_round_trip_reproduces_the_stream(kind):
    source = NoiseSource(3, kind=kind)
    source.fill_(torch.empty(100_000))
    state = source.state_dict()
    expected = [source.fill_(torch.empty(100_000)).clone() for _ in range(2)]
    restored = NoiseSource(99, kind=kind)   # another seed: the state must carry everything
    restored.load_state_dict(state)
    assert torch.equal(restored.fill_(torch.empty(100_000)), expected[0])
    assert torch.equal(restored.fill_(torch.empty(100_000)), expected[1])
    assert not torch.equal(expected[0], expected[1])


def test_counter_keys_advance_per_step_and_reload():
    source = NoiseSource(0)
    first = source.keys(3, 4)
    assert [tuple(k.shape) for k in first] == [(4, 2)] * 3 and all(k.dtype == torch.int32 for k in first)
    assert len({tuple(k.flatten().tolist()) for k in first}) == 3
    state = source.state_dict()
    second = source.keys(3, 4)
    assert not torch.equal(first[0], second[0])
    source.load_state_dict(state)
    assert all(torch.equal(a, b) for a, b in zip(second, source.keys(3, 4)))
    with pytest.raises(ValueError, match="kind"):
        NoiseSource(0, kind="torch").load_state_dict(state)


# ---- compiling the kernels: announced, and once per machine -----------------------------------

def _counting_kernels(monkeypatch, calls):
    """A fresh kernel set whose "compiled" kernels are the eager ones, counted (no real compile)."""
    from modmask import gumbel

    kernels = gumbel._Kernels()
    eager = kernels.get(False)

    def counted(i):
        def kernel(*args):
            calls.append(i)
            return eager[i](*args)
        return kernel

    monkeypatch.setattr(kernels, "get", lambda use_compiled: tuple(counted(i) for i in range(len(eager))))
    return kernels


def test_first_compiled_call_is_announced_once_and_waits_for_a_job_compiling_on_the_same_machine(
        monkeypatch, caplog):
    import threading
    import time

    from modmask.gumbel import machine_compile_lock

    calls = []
    kernels = _counting_kernels(monkeypatch, calls)
    weight, logits = torch.randn(6, 5), torch.randn(6, 5)
    keys = counter_keys(0, 0, 0, 3)
    holding, release = threading.Event(), threading.Event()

    def other_job():
        with machine_compile_lock():
            holding.set()
            release.wait(5)

    thread = threading.Thread(target=other_job)
    thread.start()
    holding.wait(5)
    threading.Timer(0.5, release.set).start()
    started = time.monotonic()
    with caplog.at_level("INFO", logger="modmask.gumbel"):
        out = kernels.run(True, 0, weight, logits, keys)
        waited = time.monotonic() - started
        kernels.run(True, 0, weight, logits, keys)               # same signature: no new compile
        kernels.run(True, 0, weight, logits, torch.rand(3, 6, 5))  # float noise: a new signature
        for rows in (4, 4, 7):  # parameters compile per shape (torch.compile specialises on them)
            kernels.run(True, 0, torch.nn.Parameter(torch.randn(rows, 5)), torch.randn(rows, 5), keys)
    thread.join()
    assert waited >= 0.45, "the first compiled call must wait for the machine's compile lock"
    assert torch.equal(out, sample_masked_weights(weight, logits, keys).detach())
    messages = [r.getMessage() for r in caplog.records]
    assert sum("compiling the mask sampling kernels" in m for m in messages) == 1
    assert sum("waiting for another job" in m for m in messages) == 1
    ready = [m for m in messages if m.startswith("mask sampling kernel for a ")]
    assert [m.split(" parameter")[0][-3:] for m in ready] == ["6x5", "6x5", "4x5", "7x5"]
    assert calls == [0] * 6


def test_a_stuck_compile_lock_holder_delays_a_job_only_up_to_the_limit(tmp_path, monkeypatch, caplog):
    import threading
    import time

    from modmask import gumbel

    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path))
    holding, release = threading.Event(), threading.Event()

    def stuck_job():
        with gumbel.machine_compile_lock():
            holding.set()
            release.wait(10)

    thread = threading.Thread(target=stuck_job)
    thread.start()
    holding.wait(5)
    ran = []
    started = time.monotonic()
    with caplog.at_level("INFO", logger="modmask.gumbel"):
        with gumbel.machine_compile_lock(max_wait=0.5):
            ran.append(time.monotonic() - started)
    release.set()
    thread.join()
    assert ran and 0.45 <= ran[0] < 3.0
    messages = [r.getMessage() for r in caplog.records]
    assert any("waiting for another job" in m for m in messages)
    assert any("looks stuck" in m and "compiles without it" in m for m in messages)
    # the lock is free again once the stuck holder lets go: the next job takes it at once
    started = time.monotonic()
    with gumbel.machine_compile_lock(max_wait=5):
        assert time.monotonic() - started < 0.5


def test_an_unusable_compile_lock_folder_does_not_stop_compiling(tmp_path, monkeypatch, caplog):
    from modmask import gumbel

    blocker = tmp_path / "file"
    blocker.write_text("")  # a file where the lock's folder should be
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(blocker / "cache"))
    ran = []
    with caplog.at_level("WARNING", logger="modmask.gumbel"):
        with gumbel.machine_compile_lock():
            ran.append(True)
    assert ran == [True]
    assert any("compiling without it" in r.getMessage() for r in caplog.records)


def test_compiling_the_kernels_raises_dynamos_recompile_limit_past_eight_layer_shapes():
    # one compiled kernel per layer shape: with torch's default of 8 a ninth shape would run uncompiled
    from modmask import gumbel
    config = torch._dynamo.config
    previous = config.recompile_limit
    try:
        config.recompile_limit = 8
        gumbel._raise_recompile_limit()
        assert config.recompile_limit == gumbel.KERNEL_RECOMPILE_LIMIT >= 64
        config.recompile_limit = 500
        gumbel._raise_recompile_limit()
        assert config.recompile_limit == 500  # never lowered
    finally:
        config.recompile_limit = max(previous, gumbel.KERNEL_RECOMPILE_LIMIT)

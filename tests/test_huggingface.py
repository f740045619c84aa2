"""Masks on Hugging Face models: a tiny GPT-2 and a tiny BERT built from configs (random weights, nothing
downloaded). ``transformers`` is a test-only extra (``pip install -e ".[test]"``); without it these skip."""
import copy
import warnings

import pytest
import torch
import torch.nn.functional as F

from modmask import BatchSampler, BinaryMask, MaskedModel, TrainSettings, WeightMask, run_with_mask, train_mask
from modmask.masked_model import PerSampleFallbackWarning

transformers = pytest.importorskip("transformers")

VOCAB = 40


@pytest.fixture(autouse=True)
def _quiet_transformers():
    verbosity = transformers.logging.get_verbosity()
    transformers.logging.set_verbosity_error()
    yield
    transformers.logging.set_verbosity(verbosity)


def tiny_gpt2():
    torch.manual_seed(0)
    config = transformers.GPT2Config(n_layer=2, n_embd=32, n_head=2, vocab_size=VOCAB, n_positions=16,
                                     bos_token_id=0, eos_token_id=0, use_cache=False, initializer_range=0.3)
    return transformers.GPT2LMHeadModel(config).eval()


def tiny_bert():
    torch.manual_seed(0)
    config = transformers.BertConfig(num_hidden_layers=2, hidden_size=32, num_attention_heads=2, intermediate_size=64,
                                     vocab_size=VOCAB, max_position_embeddings=16, num_labels=3, initializer_range=0.3)
    return transformers.BertForSequenceClassification(config).eval()


def _frozen(model):
    for p in model.parameters():
        p.requires_grad_(False)
    return model


def _compare_logits(masked, *args, **kwargs):
    """Vectorised pass vs K passes on the same noise: same logits, same gradients of the mask logits."""
    noise = masked.draw_noise()
    params = masked.mask.trainable_parameters()
    results = []
    for forward in (masked.forward, masked.forward_loop):
        out = forward(*args, noise=noise, **kwargs)
        out.logits.square().mean().backward()
        results.append((out, [p.grad.clone() for p in params]))
        for p in params:
            p.grad = None
    (out_v, grads_v), (out_l, grads_l) = results
    assert type(out_v) is type(out_l)   # the ModelOutput comes back as such
    torch.testing.assert_close(out_v.logits, out_l.logits, rtol=1e-4, atol=1e-5)
    for a, b in zip(grads_v, grads_l):
        torch.testing.assert_close(a, b, rtol=1e-3, atol=1e-6)
        assert a.abs().sum() > 0
    return out_v


def _check_padding_fallback(masked, module, *args, **kwargs):
    """With a padding mask, transformers 5 checks the mask in Python (``if padding_mask.all()``), data-
    dependent control flow that vmap cannot run: the model falls back to K exact passes, saying so once."""
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        _compare_logits(masked, *args, **kwargs)
        masked(*args, **kwargs)
    fallbacks = [w for w in record if issubclass(w.category, PerSampleFallbackWarning)]
    if masked.path == "per-sample":
        assert len(fallbacks) == 1 and module in str(fallbacks[0].message)
        assert "data-dependent control flow" in str(fallbacks[0].message)
    else:   # a transformers version whose mask code vmap can run
        assert fallbacks == []


def _masked_copy_matches(model, kept, *args):
    """run_with_mask equals a copy of the model whose masked weights were multiplied in place."""
    copied = copy.deepcopy(model)
    with torch.no_grad():
        for name, p in copied.named_parameters():
            if name in kept.bits:
                p.mul_(kept.bits[name])
        torch.testing.assert_close(run_with_mask(model, kept, *args).logits, copied(*args).logits)


def test_gpt2_masks_train_vectorised_and_run_with_run_with_mask():
    model = _frozen(tiny_gpt2())
    mask = WeightMask.for_module(model)
    assert mask.names == [f"transformer.h.{i}.{part}.weight" for i in range(2)
                          for part in ("attn.c_attn", "attn.c_proj", "mlp.c_fc", "mlp.c_proj")]
    masked = MaskedModel(model, mask, mask_samples=4, kernels="eager")
    ids = torch.randint(0, VOCAB, (8, 10), generator=torch.Generator().manual_seed(1))
    padding = torch.ones_like(ids)
    padding[4:, 7:] = 0
    out = _compare_logits(masked, ids)
    assert isinstance(out, transformers.modeling_outputs.CausalLMOutputWithCrossAttentions)
    assert out.logits.shape == (8, 10, VOCAB)
    assert masked.path == "vectorised"
    _check_padding_fallback(MaskedModel(model, mask, mask_samples=4, kernels="eager"), "'transformer' (GPT2Model)",
                            ids, attention_mask=padding)

    # train a mask: next token = this token + 1 (mod VOCAB)
    g = torch.Generator().manual_seed(2)
    data = (torch.randint(0, VOCAB, (256, 1), generator=g) + torch.arange(12)) % VOCAB

    def lm_loss(out, target):
        return F.cross_entropy(out.logits[:, :-1].reshape(-1, VOCAB), target[:, 1:].reshape(-1))

    trained, history = train_mask(model, BatchSampler([data, data], 32, seed=0), lm_loss,
                                  TrainSettings(steps=40, lr=0.1, beta=0.0, batch_size=32, mask_samples=4,
                                                log_every=10, kernels="eager"))
    losses = [row["loss"] for row in history.rows]
    assert losses[-1] < losses[0] - 1.0
    kept = trained.binary()
    assert 0.5 * trained.numel() < kept.count() < trained.numel()   # it removed weights
    with torch.no_grad():
        unmasked, thresholded = lm_loss(model(data), data).item(), lm_loss(run_with_mask(model, kept, data), data).item()
    assert thresholded < unmasked - 1.0
    _masked_copy_matches(model, kept, data[:8])


def test_bert_masks_train_vectorised_and_fall_back_on_padding_masks():
    model = _frozen(tiny_bert())
    mask = WeightMask.for_module(model)
    assert "bert.encoder.layer.0.attention.self.query.weight" in mask.names
    assert not any("embeddings" in n or "LayerNorm" in n for n in mask.names)
    masked = MaskedModel(model, mask, mask_samples=4, kernels="eager")
    g = torch.Generator().manual_seed(1)
    x = torch.randint(1, VOCAB, (256, 8), generator=g)
    y = x[:, 0] % 3
    _compare_logits(masked, x[:8])
    assert masked.path == "vectorised"

    def loss(out, labels):
        return F.cross_entropy(out.logits, labels)

    trained, history = train_mask(model, BatchSampler([x, y], 32, seed=0), loss,
                                  TrainSettings(steps=40, lr=0.1, beta=0.0, batch_size=32, mask_samples=4,
                                                log_every=10, kernels="eager"))
    losses = [row["loss"] for row in history.rows]
    assert losses[-1] < losses[0] - 0.1
    kept = trained.binary()
    with torch.no_grad():
        assert loss(run_with_mask(model, kept, x), y) < loss(model(x), y)
    _masked_copy_matches(model, kept, x[:8])
    none_kept = BinaryMask({n: torch.zeros_like(b) for n, b in kept.bits.items()})
    assert (run_with_mask(model, none_kept, x[:8]).logits - model(x[:8]).logits).abs().max() > 1e-2

    attention = torch.ones(8, 8, dtype=torch.long)
    attention[::2, 5:] = 0
    _check_padding_fallback(MaskedModel(model, mask, mask_samples=4, kernels="eager"), "'bert' (BertModel)",
                            x[:8], attention_mask=attention)


def test_a_cache_output_is_a_clear_error():
    model = _frozen(tiny_gpt2())
    masked = MaskedModel(model, WeightMask.for_module(model), mask_samples=2, kernels="eager")
    ids = torch.randint(0, VOCAB, (4, 6))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(TypeError, match="use_cache=False"):
            masked(ids, use_cache=True)

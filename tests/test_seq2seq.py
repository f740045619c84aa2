"""Sequence-to-sequence models: shapes, vectorised K-sample pass vs loop, dropout, padding, teacher
forcing, mask selection, construction, metrics, and a small learning run per model."""
import copy

import pytest
import torch
import torch.nn.functional as F
from torch.nn.utils.rnn import pad_sequence

from modmask import BinaryMask, MaskedModel, WeightMask, run_with_mask
from modmask.data.vocab import EOS_ID, PAD_ID, SOS_ID
from modmask.experiments.scan import decode_with_mask
from modmask.seq2seq import (GreedyDecoder, LSTMSeq2Seq, TransformerSeq2Seq, build_seq2seq,
                             sequence_accuracy, sequence_correct, sequence_loss)

IN_VOCAB, OUT_VOCAB = 11, 9   # 4 specials + 7 source tokens, 4 specials + 5 target tokens


@pytest.fixture(autouse=True)
def _one_thread():
    # These models are tiny; on a shared machine a second thread mostly adds contention.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _lstm(**kw):
    torch.manual_seed(0)
    options = dict(hidden=16, layers=2, embedding=8, dropout=0.0, teacher_forcing=1.0)
    return LSTMSeq2Seq(IN_VOCAB, OUT_VOCAB, **{**options, **kw})


def _transformer(tie=False, **kw):
    torch.manual_seed(0)
    options = dict(d_model=16, heads=2, d_ff=32, encoder_layers=2, decoder_layers=2, dropout=0.0)
    vocab = (IN_VOCAB, IN_VOCAB) if tie else (IN_VOCAB, OUT_VOCAB)
    return TransformerSeq2Seq(*vocab, tie_embeddings=tie, **{**options, **kw})


MODELS = {"lstm": _lstm, "transformer": _transformer, "transformer_tied": lambda **kw: _transformer(True, **kw),
          "transformer_pre_ln": lambda **kw: _transformer(norm_first=True, **kw)}


def _pad(seqs):
    return pad_sequence([torch.tensor(s, dtype=torch.long) for s in seqs], padding_value=PAD_ID)


def _batch(sources, targets):
    """Time-major source ids and lengths, decoder inputs (<sos> y) and targets (y <eos>)."""
    src = _pad(sources)
    lengths = torch.tensor([len(s) for s in sources])
    tgt_in = _pad([[SOS_ID, *t] for t in targets])
    tgt_out = _pad([[*t, EOS_ID] for t in targets])
    return src, lengths, tgt_in, tgt_out


def _random_batch(batch, seed, out_vocab=OUT_VOCAB):
    g = torch.Generator().manual_seed(seed)
    sources = [torch.randint(4, IN_VOCAB, (int(torch.randint(1, 7, (), generator=g)),), generator=g).tolist()
               for _ in range(batch)]
    targets = [torch.randint(4, out_vocab, (int(torch.randint(1, 6, (), generator=g)),), generator=g).tolist()
               for _ in range(batch)]
    return _batch(sources, targets)


# ---- shapes --------------------------------------------------------------------------------------

@pytest.mark.parametrize("kind", sorted(MODELS))
def test_logits_are_time_major(kind):
    model = MODELS[kind]().eval()
    vocab = IN_VOCAB if kind == "transformer_tied" else OUT_VOCAB
    src, lengths, tgt_in, _ = _random_batch(5, seed=1, out_vocab=vocab)
    assert src.shape[1] == 5 and tgt_in.shape[1] == 5
    assert model(src, lengths, tgt_in).shape == (tgt_in.shape[0], 5, vocab)
    assert model(src, lengths, max_len=7).shape == (7, 5, vocab)
    assert model(src, lengths, tgt_in, teacher_forcing=False).shape == (tgt_in.shape[0], 5, vocab)
    ids = model.greedy_decode(src, lengths, max_len=9)
    assert ids.dtype == torch.long and ids.shape[1] == 5 and 1 <= ids.shape[0] <= 9
    with pytest.raises(ValueError, match="max_len"):
        model(src, lengths)
    with pytest.raises(ValueError, match="tgt_in"):
        model(src, lengths, max_len=3, teacher_forcing=True)


# ---- vectorised K-sample pass --------------------------------------------------------------------

def _grads(params):
    out = [p.grad.clone() for p in params]
    for p in params:
        p.grad = None
    return out


@pytest.mark.parametrize("mode", ["teacher_forced", "free_running"])
@pytest.mark.parametrize("kind,samples", [("lstm", 2), ("lstm", 4), ("transformer", 2), ("transformer", 4),
                                          ("transformer_tied", 2), ("transformer_pre_ln", 2)])
def test_vectorised_pass_equals_loop(kind, samples, mode):
    model = MODELS[kind]().eval()
    for p in model.parameters():
        p.requires_grad_(False)
    mask = WeightMask.for_module(model, initial_logit=0.5)
    masked = MaskedModel(model, mask, mask_samples=samples, batch_dim=1, kernels="eager", seed=5)
    vocab = IN_VOCAB if kind == "transformer_tied" else OUT_VOCAB
    src, lengths, tgt_in, tgt_out = _random_batch(2 * samples, seed=2, out_vocab=vocab)
    assert (lengths < src.shape[0]).any()   # some sources are padded
    # Lengths are left to the model (counted from <pad>): MaskedModel cuts every tensor along dim 1.
    kwargs = dict(tgt_in=tgt_in) if mode == "teacher_forced" else dict(max_len=tgt_out.shape[0])
    kwargs["teacher_forcing"] = mode == "teacher_forced"
    noise = masked.draw_noise()
    logits = mask.trainable_parameters()
    results = []
    for forward in (masked.forward, masked.forward_loop):
        out = forward(src, None, noise=noise, **kwargs)
        sequence_loss(out, tgt_out).backward()
        results.append((out.detach(), _grads(logits)))
    (out_v, grads_v), (out_l, grads_l) = results
    assert out_v.shape == (tgt_out.shape[0], 2 * samples, vocab)
    torch.testing.assert_close(out_v, out_l, rtol=1e-5, atol=1e-6)
    for name, a, b in zip(mask.names, grads_v, grads_l):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-7)
        assert a.abs().sum() > 0, name
    # chunk k really ran with mask sample k: the first chunk equals a plain pass with sample 0's weights
    weights = {n: w[0] for n, w in masked.sample_weights(noise).items()}
    chunk = slice(0, 2)
    first = torch.func.functional_call(model, weights, (src[:, chunk], None), {
        k: (v[:, chunk] if isinstance(v, torch.Tensor) else v) for k, v in kwargs.items()}, strict=False)
    torch.testing.assert_close(out_v[:, chunk], first, rtol=1e-5, atol=1e-6)
    assert not torch.allclose(out_v[:, chunk], model(src[:, chunk], None, **{
        k: (v[:, chunk] if isinstance(v, torch.Tensor) else v) for k, v in kwargs.items()}))


@pytest.mark.parametrize("kind", ["lstm", "transformer"])
def test_greedy_decoding_under_a_binary_mask(kind):
    model = MODELS[kind]().eval()
    names = WeightMask.for_module(model).names
    g = torch.Generator().manual_seed(3)
    mask = BinaryMask({n: torch.rand(dict(model.named_parameters())[n].shape, generator=g) > 0.3 for n in names})
    pruned = copy.deepcopy(model)
    with torch.no_grad():
        for name, param in pruned.named_parameters():
            if name in mask.bits:
                param.mul_(mask.bits[name])
    src, lengths, tgt_in, _ = _random_batch(6, seed=4)
    before = {n: p.clone() for n, p in model.named_parameters()}
    assert torch.equal(decode_with_mask(model, mask, src, lengths, 10), pruned.greedy_decode(src, lengths, 10))
    assert torch.equal(run_with_mask(GreedyDecoder(model, 10), mask, src, lengths),
                       pruned.greedy_decode(src, lengths, 10))
    assert torch.equal(decode_with_mask(model, None, src, lengths, 10), model.greedy_decode(src, lengths, 10))
    masked_logits = run_with_mask(model, mask, src, lengths, tgt_in)
    torch.testing.assert_close(masked_logits, pruned(src, lengths, tgt_in))
    assert not torch.allclose(masked_logits, model(src, lengths, tgt_in))
    assert all(torch.equal(p, before[n]) for n, p in model.named_parameters())   # the model is untouched


@pytest.mark.parametrize("kind", ["lstm", "transformer"])
def test_greedy_decoding_stops_at_eos(kind):
    model = MODELS[kind]().eval()
    src, lengths, _, _ = _random_batch(3, seed=5)
    with torch.no_grad():
        model.decoder.output.weight.zero_()
        model.decoder.output.bias.fill_(-5.0)
        model.decoder.output.bias[EOS_ID] = 5.0
    assert torch.equal(model.greedy_decode(src, lengths, 8), torch.full((1, 3), EOS_ID))
    with torch.no_grad():
        model.decoder.output.bias[EOS_ID] = -5.0
        model.decoder.output.bias[6] = 5.0
    assert torch.equal(model.greedy_decode(src, lengths, 8), torch.full((8, 3), 6))   # no <eos>: max_len steps


@pytest.mark.parametrize("kind", ["lstm", "transformer"])
def test_greedy_decoding_pads_finished_columns_and_stops_when_all_are_done(kind):
    model = MODELS[kind]().eval()
    src, lengths, _, _ = _random_batch(16, seed=5)
    # Raise the <eos> logit until some columns, not all, emit <eos> within 8 steps of free running.
    for bump in torch.linspace(0.0, 1.0, 41):
        with torch.no_grad():
            model.decoder.output.bias[EOS_ID] = bump
        free = model(src, lengths, max_len=8).argmax(-1)
        ended = (free == EOS_ID).any(0)
        if ended.any() and not ended.all():
            break
    assert ended.any() and not ended.all(), "no <eos> bias found that ends only some columns"
    after_eos = (free == EOS_ID).int().cumsum(0) - (free == EOS_ID).int() > 0
    expected = free.masked_fill(after_eos, PAD_ID)
    assert torch.equal(model.greedy_decode(src, lengths, 8), expected)   # 8 steps: some column never ends
    done = src[:, ended], lengths[ended]
    steps = int(((free[:, ended] == EOS_ID).int().argmax(0) + 1).max())
    ids = model.greedy_decode(*done, 8)
    assert ids.shape[0] == steps < 8   # stopped early: every one of these columns had its <eos>
    assert torch.equal(ids, expected[:steps, ended])


# ---- dropout -------------------------------------------------------------------------------------

@pytest.mark.parametrize("kind", ["lstm", "transformer"])
def test_dropout_is_off_in_eval_and_on_in_training(kind):
    model = MODELS[kind](dropout=0.5)
    no_dropout = MODELS[kind](dropout=0.0)
    no_dropout.load_state_dict(model.state_dict())
    src, lengths, tgt_in, _ = _random_batch(8, seed=6)
    model.eval()
    no_dropout.eval()
    first, second = model.greedy_decode(src, lengths, 10), model.greedy_decode(src, lengths, 10)
    assert torch.equal(first, second)
    assert torch.equal(first, no_dropout.greedy_decode(src, lengths, 10))   # no dropout left at all
    torch.testing.assert_close(model(src, lengths, tgt_in), no_dropout(src, lengths, tgt_in))
    model.train()
    torch.manual_seed(0)
    a, b = model(src, lengths, tgt_in, teacher_forcing=True), model(src, lengths, tgt_in, teacher_forcing=True)
    assert (a - b).abs().max() > 1e-3
    decodes = [model(src, lengths, max_len=10, teacher_forcing=False) for _ in range(2)]
    assert (decodes[0] - decodes[1]).abs().max() > 1e-3


# ---- padding -------------------------------------------------------------------------------------

@pytest.mark.parametrize("kind", ["lstm", "transformer", "transformer_pre_ln"])
@pytest.mark.parametrize("give_lengths", [True, False])
def test_padding_does_not_change_a_sequence_outputs(kind, give_lengths):
    model = MODELS[kind]().eval()
    alone = _batch([[4, 5, 6]], [[7, 8]])
    together = _batch([[4, 5, 6], [9, 10, 4, 5, 6, 7]], [[7, 8], [5, 6, 7, 8, 4]])
    assert together[0].shape[0] == 6 and together[2].shape[0] == 6   # the first sequence is padded
    outs = []
    for src, lengths, tgt_in, _ in (alone, together):
        lengths = lengths if give_lengths else None
        outs.append((model(src, lengths, tgt_in), model(src, lengths, max_len=6, teacher_forcing=False),
                     model.greedy_decode(src, lengths, 6)))
    (forced_a, free_a, ids_a), (forced_t, free_t, ids_t) = outs
    torch.testing.assert_close(forced_t[:3, :1], forced_a, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(free_t[:, :1], free_a, rtol=1e-5, atol=1e-6)
    steps = ids_a.shape[0]
    assert torch.equal(ids_t[:steps, :1], ids_a)
    # and the padding matters when the model is told nothing: lengths claiming 6 real tokens change the result
    src, _, tgt_in, _ = together
    wrong = model(src, torch.tensor([6, 6]), tgt_in)
    assert not torch.allclose(wrong[:3, :1], forced_a, atol=1e-4)


# ---- teacher forcing ------------------------------------------------------------------------------

def _record_inputs(embedding):
    seen = []
    handle = embedding.register_forward_hook(lambda module, args, out: seen.append(args[0].clone()))
    return seen, handle


def test_lstm_teacher_forcing_one_feeds_the_targets_and_zero_feeds_its_own_argmax():
    src, lengths, tgt_in, _ = _random_batch(4, seed=7)
    forced = _lstm(teacher_forcing=1.0).train()
    seen, handle = _record_inputs(forced.decoder.embedding)
    forced_logits = forced(src, lengths, tgt_in)
    handle.remove()
    assert torch.equal(torch.stack(seen), tgt_in)
    free = _lstm(teacher_forcing=0.0).train()
    seen, handle = _record_inputs(free.decoder.embedding)
    free_logits = free(src, lengths, tgt_in)
    handle.remove()
    fed = torch.stack(seen)
    assert torch.equal(fed[0], torch.full((4,), SOS_ID))
    assert torch.equal(fed[1:], free_logits[:-1].argmax(-1))
    assert not torch.equal(fed, tgt_in)
    assert free_logits.shape == forced_logits.shape
    assert not torch.allclose(free_logits, forced_logits)
    # eval mode: a given tgt_in is teacher forced whatever the training probability
    free.eval()
    torch.testing.assert_close(free(src, lengths, tgt_in), forced_logits)


def test_lstm_teacher_forcing_draws_are_per_batch_and_reproducible():
    a, b, c = _lstm(teacher_forcing=0.5, seed=3), _lstm(teacher_forcing=0.5, seed=3), _lstm(teacher_forcing=0.5, seed=4)
    draws = [a.draw_teacher_forcing() for _ in range(200)]
    assert draws == [b.draw_teacher_forcing() for _ in range(200)]
    assert draws != [c.draw_teacher_forcing() for _ in range(200)]
    assert 70 < sum(draws) < 130
    state = copy.deepcopy(a.state_dict())   # the generator travels with the state dict (checkpoints)
    ahead = [a.draw_teacher_forcing() for _ in range(20)]
    a.load_state_dict(state)
    assert [a.draw_teacher_forcing() for _ in range(20)] == ahead
    # forward in training draws once per call: each call is one of the two feedings, in the twin's order
    model, twin = _lstm(teacher_forcing=0.5, seed=8).train(), _lstm(teacher_forcing=0.5, seed=8)
    src, lengths, tgt_in, _ = _random_batch(4, seed=9)
    forced = model(src, lengths, tgt_in, teacher_forcing=True)
    free = model(src, lengths, tgt_in, teacher_forcing=False)
    expected = [twin.draw_teacher_forcing() for _ in range(12)]
    got = []
    for _ in range(12):
        out = model(src, lengths, tgt_in)
        assert torch.equal(out, forced) or torch.equal(out, free)
        got.append(torch.equal(out, forced))
    assert got == expected and any(got) and not all(got)


def test_transformer_is_always_teacher_forced_in_training():
    model = _transformer().train()
    src, lengths, tgt_in, _ = _random_batch(4, seed=10)
    seen, handle = _record_inputs(model.target_embedding)
    out = model(src, lengths, tgt_in)
    handle.remove()
    assert len(seen) == 1 and torch.equal(seen[0], tgt_in)   # all positions at once, causally masked
    # causal: the logits at step t do not depend on decoder inputs after t
    changed = tgt_in.clone()
    changed[3:] = 4
    torch.testing.assert_close(model.eval()(src, lengths, changed)[:3], model(src, lengths, tgt_in)[:3])
    assert not torch.allclose(model(src, lengths, changed)[3:], model(src, lengths, tgt_in)[3:])
    assert out.shape == (tgt_in.shape[0], 4, OUT_VOCAB)


# ---- masks ---------------------------------------------------------------------------------------

def test_mask_selection_skips_embeddings_and_keeps_the_output_layer():
    for model in (_lstm(), _transformer()):
        names = WeightMask.for_module(model).names
        assert "decoder.output.weight" in names
        assert not any("embedding" in n for n in names)
        assert not any("norm" in n or n.endswith("bias") for n in names)
        embeddings = [n for n, _ in model.named_parameters() if "embedding" in n]
        assert len(embeddings) == 2
    lstm_names = WeightMask.for_module(_lstm()).names
    assert lstm_names == [f"{side}.layers.{i}.{kind}.weight" for side in ("encoder", "decoder") for i in range(2)
                          for kind in ("input_map", "recurrent_map")] + ["decoder.output.weight"]
    tied = _transformer(tie=True)
    names = WeightMask.for_module(tied).names
    assert "decoder.output.weight" not in names and "decoder.output.weight" not in dict(tied.named_parameters())
    assert [n for n, _ in tied.named_parameters() if "embedding" in n] == ["embedding.weight"]
    assert not any("embedding" in n for n in names)
    assert len(names) == 2 * 6 + 2 * 10   # encoder: q k v o + 2 ff per layer; decoder adds cross-attention
    # the tied read-out is the embedding's transpose
    src, lengths, tgt_in, _ = _random_batch(3, seed=11, out_vocab=IN_VOCAB)
    tied.eval()
    memory, padding = tied.encode(src, lengths)
    hidden = {}
    handle = tied.decoder.layers[-1].register_forward_hook(lambda m, a, out: hidden.setdefault("h", out))
    logits = tied.decode(tgt_in, memory, padding)
    handle.remove()
    torch.testing.assert_close(logits, F.linear(hidden["h"], tied.embedding.weight))
    with pytest.raises(ValueError, match="one vocabulary"):
        TransformerSeq2Seq(IN_VOCAB, OUT_VOCAB, tie_embeddings=True)


# ---- construction --------------------------------------------------------------------------------

def test_build_seq2seq_defaults_follow_the_paper():
    lstm = build_seq2seq({"model": "lstm_seq2seq"}, 17, 10)
    shapes = {n: tuple(p.shape) for n, p in lstm.named_parameters()}
    assert shapes["encoder.embedding.weight"] == (17, 16)
    assert shapes["encoder.layers.0.input_map.weight"] == (800, 16)
    assert shapes["encoder.layers.1.recurrent_map.weight"] == (800, 200)
    assert shapes["decoder.output.weight"] == (10, 200)
    assert "encoder.layers.2.input_map.weight" not in shapes
    assert lstm.encoder.dropout == 0.5 and lstm.teacher_forcing == 0.5
    transformer = build_seq2seq({"model": "transformer"}, 17, 10)
    shapes = {n: tuple(p.shape) for n, p in transformer.named_parameters()}
    assert shapes["encoder.layers.2.self_attention.query.weight"] == (100, 100)
    assert shapes["decoder.layers.2.feedforward.hidden.weight"] == (200, 100)
    assert shapes["decoder.output.weight"] == (10, 100)
    assert "encoder.layers.3.self_attention.query.weight" not in shapes
    assert transformer.encoder.layers[0].self_attention.heads == 4
    assert not transformer.encoder.layers[0].norm_first
    custom = build_seq2seq({"model": "transformer", "d_model": 32, "heads": 2, "tie_embeddings": True,
                            "pretrain": {"steps": 5}, "mask": {"lr": 0.1}}, 12, 12)
    assert custom.tie_embeddings and custom.embedding.weight.shape == (12, 32)


def test_build_seq2seq_rejects_unknown_keys_and_models():
    with pytest.raises(ValueError, match=r"unknown key\(s\) \['hiden'\].*lstm_seq2seq"):
        build_seq2seq({"model": "lstm_seq2seq", "hiden": 100}, 5, 5)
    with pytest.raises(ValueError, match="'d_model'"):
        build_seq2seq({"model": "lstm_seq2seq", "d_model": 100}, 5, 5)
    with pytest.raises(ValueError, match="unknown sequence model 'gru'"):
        build_seq2seq({"model": "gru"}, 5, 5)
    with pytest.raises(ValueError, match="heads"):
        build_seq2seq({"model": "transformer", "d_model": 10, "heads": 3}, 5, 5)
    with pytest.raises(ValueError, match="dropout"):
        build_seq2seq({"model": "lstm_seq2seq", "dropout": 1.5}, 5, 5)


# ---- metrics -------------------------------------------------------------------------------------

def test_sequence_accuracy_is_exact_match_up_to_and_including_eos():
    e, p = EOS_ID, PAD_ID
    tgt = torch.tensor([[5, 6, e, p], [5, e, p, p], [7, 7, 7, e]]).t()
    pred = torch.tensor([[5, 6, e, 9, 9],    # right, garbage after <eos> ignored
                         [5, 6, e, p, p],    # wrong: <eos> missing at position 1
                         [7, 7, 7, 7, 7]]).t()  # wrong: no <eos>
    assert sequence_correct(pred, tgt).tolist() == [True, False, False]
    assert sequence_accuracy(pred, tgt) == pytest.approx(1 / 3)
    short = torch.tensor([[5, 6, e], [5, e, p], [7, 7, 7]]).t()   # shorter than the target: padded, wrong
    assert sequence_correct(short, tgt).tolist() == [True, True, False]
    assert sequence_accuracy(tgt, tgt) == 1.0
    with pytest.raises(ValueError, match=r"columns \[1\] have no <eos>"):
        sequence_correct(pred[:, :2], torch.tensor([[5, e], [5, 6]]).t())
    with pytest.raises(ValueError, match="same B"):
        sequence_correct(pred, tgt[:, :2])


def test_loss_ignores_padding():
    torch.manual_seed(0)
    logits = torch.randn(3, 2, 6)
    tgt = torch.tensor([[4, 5, EOS_ID], [EOS_ID, PAD_ID, PAD_ID]]).t()
    expected = torch.stack([F.cross_entropy(logits[t, b], tgt[t, b]) for t, b in
                            [(0, 0), (1, 0), (2, 0), (0, 1)]]).mean()
    torch.testing.assert_close(sequence_loss(logits, tgt), expected)
    changed = logits.clone()
    changed[1:, 1] += 100 * torch.randn(2, 6)   # logits at padded targets do not count
    torch.testing.assert_close(sequence_loss(changed, tgt), expected)
    with pytest.raises(ValueError, match="do not match"):
        sequence_loss(logits, tgt[:2])


# ---- learning ------------------------------------------------------------------------------------

SYMBOLS = 4   # tokens 4..7


def _reverse_batch(g, size, max_length=5):
    lengths = torch.randint(1, max_length + 1, (size,), generator=g)
    sources = [torch.randint(4, 4 + SYMBOLS, (int(n),), generator=g).tolist() for n in lengths]
    return _batch(sources, [s[::-1] for s in sources])


@pytest.mark.parametrize("kind", ["lstm", "transformer"])
def test_learns_to_reverse_short_sequences(kind):
    torch.manual_seed(0)
    vocab = 4 + SYMBOLS
    if kind == "lstm":
        model = LSTMSeq2Seq(vocab, vocab, hidden=64, layers=2, embedding=16, dropout=0.1, teacher_forcing=0.5)
        lr = 1e-2
    else:
        model = TransformerSeq2Seq(vocab, vocab, d_model=32, heads=2, d_ff=64, encoder_layers=2, decoder_layers=2,
                                   dropout=0.0)
        lr = 3e-3
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    g = torch.Generator().manual_seed(1)
    model.train()
    for _ in range(400):
        src, lengths, tgt_in, tgt_out = _reverse_batch(g, 64)
        loss = model.loss(model(src, lengths, tgt_in), tgt_out)
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
    model.eval()
    src, lengths, _, tgt_out = _reverse_batch(torch.Generator().manual_seed(99), 500)
    ids = model.greedy_decode(src, lengths, max_len=8)
    assert sequence_accuracy(ids, tgt_out) >= 0.9
    # each column: tokens, one <eos>, then only <pad>
    after_eos = (ids == EOS_ID).int().cumsum(0) - (ids == EOS_ID).int()
    assert ((after_eos > 0) <= (ids == PAD_ID)).all()
    assert ((ids == PAD_ID) <= (after_eos > 0)).all()


def test_mask_training_runs_through_train_mask_with_time_major_batches():
    from modmask.training import BatchSampler, TrainSettings, train_mask
    model = _lstm()
    src, _, tgt_in, tgt_out = _random_batch(32, seed=12)
    # BatchSampler draws rows of dimension 0, so the data is stored batch-first (source and decoder
    # inputs side by side) and turned time-major in the forward function.
    cut = src.shape[0]
    sampler = BatchSampler([torch.cat([src.t(), tgt_in.t()], 1), tgt_out.t()], batch_size=8, seed=0)
    settings = TrainSettings(steps=20, lr=0.05, batch_size=8, mask_samples=4, beta=1e-3, kernels="eager",
                             log_every=10)
    mask, history = train_mask(model, sampler, lambda logits, tgt: sequence_loss(logits, tgt.t()), settings,
                               batch_dim=1, forward=lambda m, both: m(both[:, :cut].t(), None, both[:, cut:].t()))
    assert [row["step"] for row in history.rows] == [10, 20]
    assert all(torch.isfinite(torch.tensor(row["loss"])) for row in history.rows)
    moved = [float((mask.logit(n).detach() - 2.0).abs().max()) for n in mask.names]
    assert min(moved) > 0.1   # every masked matrix, the output layer included, received gradient
    assert not model.training

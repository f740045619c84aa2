"""The SCAN experiment: encoding, the exact-match shortcut, Fig. 4b's metric, masks on sequence models."""
from __future__ import annotations

import logging

import pandas as pd
import pytest
import torch

from modmask.data import scan as scan_data
from modmask.data.vocab import EOS_ID, PAD_ID, SOS_ID, UnknownTokenError
from modmask.experiments import scan
from modmask.masks import BinaryMask, WeightMask
from modmask.experiments.scan import decode_with_mask
from modmask.training import TrainSettings

LOG = logging.getLogger("test")
ROWS = pd.DataFrame({"command": ["jump", "walk left twice", "jump around left twice and jump around left twice",
                                 "run after look"],
                     "actions": ["I_JUMP", "I_TURN_LEFT I_WALK I_TURN_LEFT I_WALK",
                                 " ".join(["I_TURN_LEFT I_JUMP"] * 16), "I_LOOK I_RUN"]})
TINY = {"lstm": {"model": "lstm_seq2seq", "hidden": 12, "layers": 2, "embedding": 6},
        "transformer": {"model": "transformer", "d_model": 16, "heads": 2, "d_ff": 24, "encoder_layers": 2,
                        "decoder_layers": 2}}


def test_vocabularies_cover_every_command_of_the_grammar_and_nothing_else():
    in_vocab, out_vocab = scan.vocabularies()
    commands = scan_data.all_commands()
    words = {w for command, _ in commands for w in command.split()}
    actions = {a for _, sequence in commands for a in sequence.split()}
    assert words == set(scan.COMMAND_WORDS) and actions == set(scan.ACTIONS)
    assert len(in_vocab) == 4 + 13 and len(out_vocab) == 4 + 6
    assert max(len(command.split()) for command, _ in commands) == scan.SOURCE_WIDTH


def test_encode_packs_commands_and_actions_and_unpack_recovers_them():
    in_vocab, out_vocab = scan.vocabularies()
    packed = scan.encode(ROWS, in_vocab, out_vocab)
    assert packed.shape == (4, scan.SOURCE_WIDTH + 33)  # longest: 32 actions + <eos>
    src, tgt_in, tgt_out = scan.unpack(packed[[0, 3]])  # cut to the longest of these two
    assert src.shape == (3, 2) and tgt_out.shape == (3, 2)
    assert in_vocab.decode_batch(src) == ["jump", "run after look"]
    assert tgt_out[:, 0].tolist() == [out_vocab.stoi["I_JUMP"], EOS_ID, PAD_ID]
    assert tgt_out[:, 1].tolist() == [out_vocab.stoi["I_LOOK"], out_vocab.stoi["I_RUN"], EOS_ID]
    # decoder inputs: <sos>, then the targets shifted by one
    assert tgt_in[0].tolist() == [SOS_ID, SOS_ID] and torch.equal(tgt_in[1:], tgt_out[:-1])


def test_encode_rejects_unknown_words_and_too_long_commands():
    in_vocab, out_vocab = scan.vocabularies()
    with pytest.raises(UnknownTokenError):
        scan.encode(pd.DataFrame({"command": ["jump quickly"], "actions": ["I_JUMP"]}), in_vocab, out_vocab)
    long = pd.DataFrame({"command": [" ".join(["jump"] * 10)], "actions": ["I_JUMP"]})
    with pytest.raises(ValueError, match="at most 9"):
        scan.encode(long, in_vocab, out_vocab)


@pytest.mark.parametrize("kind", sorted(TINY))
def test_exact_match_equals_greedy_decoding(kind):
    """The teacher-forced shortcut agrees with step-by-step greedy decoding, with and without a mask."""
    torch.manual_seed(0)
    model = scan.build_network(TINY[kind], seed=0).eval()
    in_vocab, out_vocab = scan.vocabularies()
    commands = scan_data.make_split("simple", 0)["test"].iloc[:48].reset_index(drop=True)
    # An untrained network: let it never emit <pad>/<sos>/<unk>, and pick an <eos> bias with which
    # some but not all of its outputs end within 12 steps, so that its own outputs serve as targets.
    src = scan.encode(commands, in_vocab, out_vocab)[:, :scan.SOURCE_WIDTH]
    with torch.no_grad():
        model.decoder.output.bias[[PAD_ID, SOS_ID, 3]] = -1e4
        for eos_bias in torch.linspace(-2, 6, 33):
            model.decoder.output.bias[EOS_ID] = eos_bias
            ended = (decode_with_mask(model, None, src.t(), None, max_len=12) == EOS_ID).any(0).float().mean()
            if 0.3 < ended < 0.9:
                break
    mask = WeightMask.for_module(model, scan.SELECTION, 2.0)
    with torch.no_grad():
        for logit in mask.trainable_parameters():
            logit.copy_(torch.randn_like(logit) + 1.5)
    for binary in (None, mask.binary()):
        decoded = decode_with_mask(model, binary, src.t(), None, max_len=12)
        # targets: the model's own output for the first half (so they match), other sequences for the rest
        texts = []
        for i, column in enumerate(decoded.t().tolist()):
            own = [t for t in column[:column.index(EOS_ID)]] if EOS_ID in column else None
            if i < 24 and own is not None and all(t >= 4 for t in own):
                texts.append(out_vocab.decode(own))
            else:
                texts.append("I_WALK I_JUMP" if i % 2 else "I_RUN")
        targets = commands.assign(actions=texts)
        packed = scan.encode(targets, in_vocab, out_vocab)
        by_decoding = torch.tensor([
            (column[:len(t.split()) + 1] == out_vocab.encode(t, eos=True))
            if len(column) > len(t.split()) else False
            for column, t in zip(decoded.t().tolist(), texts)])
        by_shortcut = scan.exact_match(model, binary, packed, "cpu", chunk=16)
        assert torch.equal(by_shortcut, by_decoding)
        assert 0 < int(by_shortcut.sum()) < len(texts)  # both outcomes occur


def test_removed_output_weights_against_a_hand_computed_example():
    _, out_vocab = scan.vocabularies()
    shape = (len(out_vocab), 4)
    iid = torch.zeros(shape, dtype=torch.bool)
    split = torch.zeros(shape, dtype=torch.bool)
    jump, walk = out_vocab.stoi["I_JUMP"], out_vocab.stoi["I_WALK"]
    iid[jump] = torch.tensor([1, 1, 1, 0], dtype=torch.bool)
    split[jump] = torch.tensor([0, 1, 0, 1], dtype=torch.bool)   # removes 2 of the IID mask's 3
    iid[walk] = torch.tensor([1, 1, 0, 0], dtype=torch.bool)
    split[walk] = torch.tensor([1, 1, 1, 1], dtype=torch.bool)   # removes none
    rows = {r["token"]: r for r in scan.removed_output_weights(BinaryMask({scan.OUTPUT_LAYER: iid}),
                                                              BinaryMask({scan.OUTPUT_LAYER: split}), out_vocab)}
    assert (rows["I_JUMP"]["iid_kept"], rows["I_JUMP"]["removed"], rows["I_JUMP"]["split_kept"]) == (3, 2, 2)
    assert rows["I_JUMP"]["removed_fraction"] == pytest.approx(2 / 3)
    assert rows["I_WALK"]["removed_fraction"] == 0.0
    assert pd.isna(rows["I_RUN"]["removed_fraction"])  # the IID mask keeps nothing into I_RUN
    assert [r["token_index"] for r in rows.values()] == list(range(len(out_vocab)))


@pytest.mark.parametrize("kind", sorted(TINY))
def test_a_network_learns_and_a_mask_keeps_what_it_needs(kind):
    """Pretraining on two commands fits them; a mask on the frozen network keeps them right and prunes."""
    torch.manual_seed(0)
    rows = pd.DataFrame({"command": ["jump twice", "walk left"], "actions": ["I_JUMP I_JUMP", "I_TURN_LEFT I_WALK"]})
    spec = {**TINY[kind], "dropout": 0.0}
    settings = TrainSettings(steps=150, lr=1e-2, batch_size=8, log_every=50)
    model, history = scan.pretrain(rows, spec, settings, seed=0, device="cpu", log=LOG)
    in_vocab, out_vocab = scan.vocabularies()
    packed = scan.encode(rows, in_vocab, out_vocab)
    assert history.rows[-1]["loss"] < 0.1 * history.rows[0]["loss"]
    assert scan.exact_match(model, None, packed, "cpu").all()
    mask_settings = TrainSettings(steps=150, lr=0.1, batch_size=8, mask_samples=4, beta=1e-3, log_every=50)
    mask, _ = scan.train_split_mask(model, rows, mask_settings, seed=1, device="cpu", log=LOG)
    binary = mask.binary()
    assert not any(n.endswith("embedding.weight") for n in binary.names)  # embeddings are never masked
    assert scan.OUTPUT_LAYER in binary.names
    assert binary.count() < 0.9 * sum(binary.sizes().values())  # the regulariser pruned weights
    assert scan.exact_match(model, binary, packed, "cpu").all()
    # every weight removed: the network no longer answers
    assert not scan.exact_match(model, BinaryMask({n: torch.zeros_like(b) for n, b in binary.bits.items()}),
                                packed, "cpu").any()


def test_accuracy_rows_count_per_mask_and_split():
    torch.manual_seed(0)
    model = scan.build_network(TINY["lstm"], seed=0).eval()
    in_vocab, out_vocab = scan.vocabularies()
    tests = {"a": scan.encode(ROWS, in_vocab, out_vocab), "b": scan.encode(ROWS.iloc[:2], in_vocab, out_vocab)}
    rows = scan.accuracy_rows(model, {"none": None}, tests, "cpu", network="pretrained")
    assert [(r["mask"], r["test_split"], r["total"], r["network"]) for r in rows] == [
        ("none", "a", 4, "pretrained"), ("none", "b", 2, "pretrained")]
    assert all(r["accuracy"] == r["correct"] / r["total"] for r in rows)


def test_length_pool_batches_pad_to_far_fewer_decoder_steps():
    df = pd.DataFrame(scan_data.all_commands(), columns=["command", "actions"])
    in_vocab, out_vocab = scan.vocabularies()
    widths = {}
    for pool in (1, 16):
        sampler = scan.training_batches(df, in_vocab, out_vocab, TrainSettings(steps=1, batch_size=64, length_pool=pool),
                                        seed=0, device="cpu")
        batches = [sampler() for _ in range(64)]
        widths[pool] = sum(scan.unpack(inputs)[1].shape[0] for inputs, _ in batches) / len(batches)
        # targets and packed inputs stay aligned: the targets are the packed rows' action part
        assert all(torch.equal(inputs[:, scan.SOURCE_WIDTH:], targets) for inputs, targets in batches)
    # random batches of 64 pad to nearly the longest action sequence (49 with <eos>); sorted pools do not
    assert widths[1] > 40 and widths[16] < 0.6 * widths[1]

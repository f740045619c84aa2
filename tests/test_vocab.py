"""Vocabulary ids, encoding and decoding, padded batches and saving."""
import json

import pytest
import torch

from modmask.data.vocab import EOS_ID, PAD_ID, SOS_ID, UNK_ID, UnknownTokenError, Vocabulary

TEXTS = ["walk left twice", "jump", "look and walk"]


def test_special_tokens_then_sorted_tokens():
    vocab = Vocabulary.build(TEXTS)
    assert (PAD_ID, SOS_ID, EOS_ID, UNK_ID) == (0, 1, 2, 3)
    assert vocab.itos == ["<pad>", "<sos>", "<eos>", "<unk>", "and", "jump", "left", "look", "twice", "walk"]
    assert len(vocab) == 10 and "walk" in vocab and "run" not in vocab
    assert Vocabulary.build(reversed(TEXTS)) == vocab  # order of the texts does not matter


def test_encode_decode_round_trip():
    vocab = Vocabulary.build(TEXTS)
    assert vocab.encode("walk left twice") == [9, 6, 8]
    assert vocab.encode("jump", sos=True, eos=True) == [SOS_ID, 5, EOS_ID]
    for text in TEXTS:
        assert vocab.decode(vocab.encode(text, sos=True, eos=True)) == text
    # decoding stops at <eos> and skips padding
    assert vocab.decode([SOS_ID, 9, PAD_ID, 6, EOS_ID, 5, 5]) == "walk left"
    assert vocab.decode(torch.tensor([5, EOS_ID])) == "jump"


def test_unknown_tokens():
    vocab = Vocabulary.build(TEXTS)
    assert vocab.encode("run left") == [UNK_ID, 6]
    assert vocab.decode(vocab.encode("run left")) == "<unk> left"
    with pytest.raises(UnknownTokenError, match="'run'"):
        vocab.encode("run left", strict=True)
    with pytest.raises(ValueError, match="outside"):
        vocab.decode([42])


def test_character_level():
    vocab = Vocabulary.build(["1 + 2", "10"], level="char")
    assert vocab.itos[4:] == [" ", "+", "0", "1", "2"]
    ids = vocab.encode("12 + 0", eos=True)
    assert ids == [7, 8, 4, 5, 4, 6, EOS_ID]
    assert vocab.decode(ids) == "12 + 0"


def test_padded_batch_time_major():
    vocab = Vocabulary.build(TEXTS)
    batch, lengths = vocab.encode_batch(TEXTS, sos=True, eos=True)
    assert batch.dtype == torch.long and batch.shape == (5, 3)  # [T, B]; longest: 3 tokens + sos + eos
    assert lengths.tolist() == [5, 3, 5]
    assert batch[:, 1].tolist() == [SOS_ID, 5, EOS_ID, PAD_ID, PAD_ID]
    assert (batch[0] == SOS_ID).all()
    for b, n in enumerate(lengths.tolist()):
        assert batch[n - 1, b] == EOS_ID and (batch[n:, b] == PAD_ID).all()
    assert vocab.decode_batch(batch) == TEXTS


def test_padded_batch_batch_first():
    vocab = Vocabulary.build(TEXTS)
    batch, lengths = vocab.encode_batch(TEXTS, batch_first=True)
    assert batch.shape == (3, 3) and lengths.tolist() == [3, 1, 3]
    assert batch[1].tolist() == [5, PAD_ID, PAD_ID]
    assert vocab.decode_batch(batch, batch_first=True) == TEXTS
    with pytest.raises(UnknownTokenError):
        vocab.encode_batch(["walk", "run"], strict=True)


def test_save_and_restore():
    vocab = Vocabulary.build(["a bb", "ccc"])
    data = json.loads(json.dumps(vocab.to_dict()))
    assert data["tokens"] == ["a", "bb", "ccc"]
    restored = Vocabulary.from_dict(data)
    assert restored == vocab and restored.encode("ccc a") == vocab.encode("ccc a") == [6, 4]
    with pytest.raises(ValueError, match="special tokens"):
        Vocabulary.from_dict({**data, "specials": ["<pad>", "<unk>"]})


def test_bad_vocabularies():
    with pytest.raises(ValueError, match="level"):
        Vocabulary.build(TEXTS, level="byte")
    with pytest.raises(ValueError, match="clash"):
        Vocabulary.build(["walk <eos>"])
    with pytest.raises(ValueError, match="distinct"):
        Vocabulary(["a", "a"])

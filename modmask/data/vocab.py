"""Token vocabularies and padded batches for the sequence tasks, in plain torch (no torchtext).

A :class:`Vocabulary` splits text into whitespace-separated words (SCAN) or single characters (the
Mathematics Dataset). Ids are deterministic: the special tokens first (``<pad>`` = 0, ``<sos>`` = 1,
``<eos>`` = 2, ``<unk>`` = 3), then the text's tokens in sorted order, so the same texts give the same
ids on every machine and run. :meth:`Vocabulary.to_dict` / :meth:`Vocabulary.from_dict` save and
restore one (e.g. as JSON next to a checkpoint).
"""
from __future__ import annotations

from typing import Iterable, Sequence

import torch
from torch.nn.utils.rnn import pad_sequence

PAD, SOS, EOS, UNK = "<pad>", "<sos>", "<eos>", "<unk>"
SPECIALS = (PAD, SOS, EOS, UNK)
PAD_ID, SOS_ID, EOS_ID, UNK_ID = range(len(SPECIALS))
LEVELS = ("word", "char")


class UnknownTokenError(ValueError):
    """A token not in the vocabulary, met while encoding with ``strict=True``."""


class Vocabulary:
    """Token <-> id map; ``level`` is ``"word"`` (whitespace tokens) or ``"char"`` (characters)."""

    def __init__(self, tokens: Iterable[str], level: str = "word"):
        if level not in LEVELS:
            raise ValueError(f"unknown vocabulary level {level!r}; known: {', '.join(LEVELS)}")
        tokens = list(tokens)
        clash = sorted(set(tokens) & set(SPECIALS))
        if clash:
            raise ValueError(f"tokens {clash} clash with the special tokens {list(SPECIALS)}")
        if len(set(tokens)) != len(tokens):
            raise ValueError("vocabulary tokens must be distinct")
        self.level = level
        self.itos = list(SPECIALS) + tokens
        self.stoi = {token: i for i, token in enumerate(self.itos)}

    @classmethod
    def build(cls, texts: Iterable[str], level: str = "word") -> "Vocabulary":
        """The vocabulary of every token in ``texts``, sorted after the special tokens."""
        if level not in LEVELS:
            raise ValueError(f"unknown vocabulary level {level!r}; known: {', '.join(LEVELS)}")
        seen = set()
        for text in texts:
            seen.update(_split(text, level))
        return cls(sorted(seen), level)

    def __len__(self) -> int:
        return len(self.itos)

    def __contains__(self, token: str) -> bool:
        return token in self.stoi

    def __eq__(self, other) -> bool:
        return isinstance(other, Vocabulary) and (self.level, self.itos) == (other.level, other.itos)

    def __repr__(self) -> str:
        return f"Vocabulary(level={self.level!r}, size={len(self)})"

    def tokenize(self, text: str) -> list[str]:
        return _split(text, self.level)

    def encode(self, text: str, sos: bool = False, eos: bool = False, strict: bool = False) -> list[int]:
        """Ids of ``text``'s tokens, optionally framed by ``<sos>`` / ``<eos>``.

        Unknown tokens become ``<unk>``, or raise :class:`UnknownTokenError` with ``strict=True``.
        """
        ids = []
        for token in self.tokenize(text):
            index = self.stoi.get(token)
            if index is None:
                if strict:
                    raise UnknownTokenError(f"token {token!r} of {text[:80]!r} is not in the vocabulary "
                                            f"({len(self)} tokens)")
                index = UNK_ID
            ids.append(index)
        return [SOS_ID] * sos + ids + [EOS_ID] * eos

    def decode(self, ids: Sequence[int] | torch.Tensor) -> str:
        """Text of ``ids``: stops at the first ``<eos>``, skips ``<pad>`` and ``<sos>``."""
        if isinstance(ids, torch.Tensor):
            ids = ids.tolist()
        tokens = []
        for index in ids:
            if index == EOS_ID:
                break
            if index in (PAD_ID, SOS_ID):
                continue
            if not 0 <= index < len(self.itos):
                raise ValueError(f"id {index} is outside the vocabulary (0..{len(self.itos) - 1})")
            tokens.append(self.itos[index])
        return ("" if self.level == "char" else " ").join(tokens)

    def encode_batch(self, texts: Sequence[str], sos: bool = False, eos: bool = False,
                     batch_first: bool = False, strict: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        """Padded ids and lengths of ``texts``.

        Returns a LongTensor ``[T, B]`` (time-major), or ``[B, T]`` with ``batch_first``, padded with
        ``<pad>`` (0) to the longest sequence, and the lengths ``[B]`` (``<sos>``/``<eos>`` included).
        """
        if len(texts) == 0:
            raise ValueError("encode_batch needs at least one text")
        seqs = [torch.tensor(self.encode(t, sos, eos, strict), dtype=torch.long) for t in texts]
        lengths = torch.tensor([len(s) for s in seqs], dtype=torch.long)
        padded = pad_sequence(seqs, batch_first=batch_first, padding_value=PAD_ID)
        return padded, lengths

    def decode_batch(self, ids: torch.Tensor, batch_first: bool = False) -> list[str]:
        """Texts of a padded batch laid out as :meth:`encode_batch` returns it."""
        rows = ids if batch_first else ids.t()
        return [self.decode(row) for row in rows]

    def to_dict(self) -> dict:
        """A JSON-able description: the level and the non-special tokens in id order."""
        return {"level": self.level, "specials": list(SPECIALS), "tokens": self.itos[len(SPECIALS):]}

    @classmethod
    def from_dict(cls, data: dict) -> "Vocabulary":
        """The vocabulary :meth:`to_dict` described; refuses one saved with other special tokens."""
        missing = {"level", "tokens"} - set(data)
        if missing:
            raise ValueError(f"vocabulary description lacks {sorted(missing)}")
        specials = list(data.get("specials", SPECIALS))
        if specials != list(SPECIALS):
            raise ValueError(f"vocabulary saved with special tokens {specials}, expected {list(SPECIALS)}")
        return cls(data["tokens"], data["level"])


def _split(text: str, level: str) -> list[str]:
    """Tokens of ``text``: whitespace-separated words, or every character (spaces included)."""
    return text.split() if level == "word" else list(text)

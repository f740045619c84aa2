"""Sequence-to-sequence models for SCAN and the Mathematics Dataset, written so that masks and ``vmap`` apply.

Two models share one interface (:class:`Seq2Seq`):

* :class:`LSTMSeq2Seq`: Lake & Baroni's (2018) baseline as the paper uses it: an encoder and a
  decoder LSTM (2 layers x 200 units, embeddings of 16, dropout 0.5 on the embeddings and between
  the layers, no attention); the encoder's final states start the decoder; teacher forcing with
  probability ``teacher_forcing`` per training batch.
* :class:`TransformerSeq2Seq`: an encoder-decoder Transformer (d_model 100, 4 heads, d_ff 200, 3 + 3
  layers, sinusoidal positions), post-LN by default as in Vaswani et al.; always teacher forced.

Conventions: every tensor is time-major, ``[T, B]`` token ids and ``[T, B, V]`` logits, with the
batch on dimension 1, so mask samples follow the batch with ``MaskedModel(model, mask,
batch_dim=1)``. Under ``MaskedModel`` pass ``src_lengths=None``: it cuts every tensor argument along
dimension 1, which ``[B]`` lengths lack; the lengths are then counted from ``<pad>``, with the same
result (no real token is ``<pad>``). Decoder inputs ``tgt_in`` start with ``<sos>``; targets
``tgt_out`` end with ``<eos>`` and are padded with ``<pad>`` (:mod:`modmask.data.vocab`'s ids).

Why no ``nn.LSTM`` / ``nn.MultiheadAttention``: ``aten::lstm`` has no ``vmap`` batching rule (the
K-sample pass of :class:`~modmask.masked_model.MaskedModel` fails on it). ``nn.MultiheadAttention``
does run under ``vmap`` in eval mode, but its fast paths are version-dependent and its fused
``in_proj_weight`` hides query, key and value in one masked tensor; here they are separate, named
``nn.Linear`` maps. Everything is ``nn.Linear``, ``nn.Embedding``, ``nn.LayerNorm`` and plain ops.

What runs under ``vmap`` (so under ``MaskedModel.forward``): :meth:`Seq2Seq.forward`, teacher forced
or free running for a fixed number of steps, with dropout off (eval mode, as ``train_mask`` runs the
network, or dropout 0): random ops raise under ``vmap``'s default ``randomness="error"``.
:meth:`Seq2Seq.greedy_decode` stops once every sequence has produced ``<eos>``, a data-dependent
branch ``vmap`` cannot take; run it plainly, or under a fixed binary mask with
``modmask.experiments.scan.decode_with_mask`` (``run_with_mask`` on a :class:`GreedyDecoder`, a module
whose ``forward`` is ``greedy_decode``).

Masking: word embeddings are never masked, as in the paper: :class:`~modmask.masks.MaskSelection`
skips every ``nn.Embedding`` by type, so no exclude pattern is needed. The output layer,
``decoder.output``, is masked (the paper's Fig. 4b reads its weights into each output token); with
``tie_embeddings=True`` the Transformer has no separate output layer (it reads out through the
shared embedding), so nothing of the read-out is masked.
"""
from __future__ import annotations

import inspect
import math
import random

import torch
import torch.nn.functional as F
from torch import nn

from .data.vocab import EOS_ID, PAD_ID, SOS_ID

# Keys of a config's architecture block that override a stage's settings, not the model's (the same as
# modmask.config.STAGE_OVERRIDES; kept here so that the models do not import the workflow's config).
STAGE_OVERRIDES = ("pretrain", "mask")


# ---- shared helpers ----------------------------------------------------------------------------

def source_lengths(src: torch.Tensor, src_lengths: torch.Tensor | None) -> torch.Tensor:
    """Lengths ``[B]`` of a padded ``[T, B]`` batch: as given, else the count of non-``<pad>`` ids."""
    if src_lengths is not None:
        return src_lengths.to(src.device)
    return (src != PAD_ID).sum(0)


def valid_positions(lengths: torch.Tensor, steps: int) -> torch.Tensor:
    """Bool ``[T, B]``: True where position t < length (a real token, not padding)."""
    return torch.arange(steps, device=lengths.device)[:, None] < lengths[None, :]


def sinusoidal_positions(length: int, size: int, device=None, dtype=torch.float32) -> torch.Tensor:
    """Vaswani et al.'s position encodings ``[length, size]``: sin on even, cos on odd features."""
    position = torch.arange(length, device=device, dtype=torch.float32)[:, None]
    frequency = torch.exp(torch.arange(0, size, 2, device=device, dtype=torch.float32)
                          * (-math.log(10000.0) / size))
    angles = position * frequency
    # Interleave sin/cos (feature 2i: sin, 2i+1: cos) without in-place writes; cut the odd extra.
    table = torch.stack([angles.sin(), angles.cos()], -1).flatten(-2)[:, :size]
    return table.to(dtype)


def sequence_loss(logits: torch.Tensor, tgt_out: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy over the non-``<pad>`` target tokens; ``logits [T, B, V]``, ``tgt_out [T, B]``."""
    if logits.dim() != 3 or logits.shape[:2] != tgt_out.shape:
        raise ValueError(f"logits of shape {tuple(logits.shape)} do not match targets of shape "
                         f"{tuple(tgt_out.shape)}; expected logits [T, B, V] and targets [T, B]")
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), tgt_out.reshape(-1), ignore_index=PAD_ID)


loss = sequence_loss


def batch_first_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """:func:`sequence_loss` of time-major ``logits [T, B, V]`` against batch-first target ids ``[B, T']``
    (cut to the T steps the logits cover): the loss the SCAN and Mathematics experiments train with."""
    return sequence_loss(logits, targets.t()[:logits.shape[0]])


def _pad_to(ids: torch.Tensor, steps: int) -> torch.Tensor:
    if ids.shape[0] >= steps:
        return ids
    return torch.cat([ids, ids.new_full((steps - ids.shape[0], ids.shape[1]), PAD_ID)])


def sequence_correct(pred_ids: torch.Tensor, tgt_ids: torch.Tensor) -> torch.Tensor:
    """Bool ``[B]``: the prediction equals the target up to and including the target's first ``<eos>``.

    Both are ``[T, B]`` (the lengths may differ); what follows the ``<eos>`` is not compared. Every
    target column must contain an ``<eos>``: without it "the whole sequence" is undefined.
    """
    if pred_ids.dim() != 2 or tgt_ids.dim() != 2 or pred_ids.shape[1] != tgt_ids.shape[1]:
        raise ValueError(f"expected predictions and targets [T, B] with the same B, got {tuple(pred_ids.shape)} "
                         f"and {tuple(tgt_ids.shape)}")
    is_eos = tgt_ids == EOS_ID
    missing = (~is_eos.any(0)).nonzero().flatten().tolist()
    if missing:
        raise ValueError(f"target columns {missing[:10]} have no <eos> (id {EOS_ID}); pass tgt_out, "
                         f"which ends every sequence with <eos>")
    steps = max(pred_ids.shape[0], tgt_ids.shape[0])
    pred, tgt = _pad_to(pred_ids, steps), _pad_to(tgt_ids, steps).to(pred_ids.device)
    length = is_eos.int().argmax(0).to(pred.device) + 1   # position of the first <eos>, plus one
    compared = valid_positions(length, steps)
    return ((pred == tgt) | ~compared).all(0)


def sequence_accuracy(pred_ids: torch.Tensor, tgt_ids: torch.Tensor) -> float:
    """Fraction of sequences predicted exactly, ``<eos>`` included (see :func:`sequence_correct`)."""
    return sequence_correct(pred_ids, tgt_ids).float().mean().item()


# ---- the common interface ----------------------------------------------------------------------

class Seq2Seq(nn.Module):
    """Encoder-decoder interface; subclasses implement ``_start``, ``_step`` and may override ``_forced``.

    ``_start(src, lengths)`` returns the decoder state after encoding, ``_step(state, token)`` the
    logits ``[B, V]`` for the next token and the new state, ``_forced(src, lengths, tgt_in)`` all
    teacher-forced logits at once.
    """

    def forward(self, src: torch.Tensor, src_lengths: torch.Tensor | None = None,
                tgt_in: torch.Tensor | None = None, max_len: int | None = None,
                teacher_forcing: bool | None = None) -> torch.Tensor:
        """Logits ``[T_out, B, V_out]`` (time-major) for source ids ``src [T_in, B]``.

        Teacher forced, the decoder reads ``tgt_in`` (``[T_out, B]``, starting with ``<sos>``);
        free running, it reads ``<sos>`` and then its own argmax, for ``tgt_in``'s length or, without
        ``tgt_in``, ``max_len`` steps (never stopping early, so that this runs under ``vmap``).
        ``teacher_forcing``: True / False force the choice; None lets the model decide (see
        :meth:`use_teacher_forcing`).
        """
        lengths = source_lengths(src, src_lengths)
        if self.use_teacher_forcing(tgt_in, teacher_forcing):
            return self._forced(src, lengths, tgt_in)
        steps = _free_steps(tgt_in, max_len)
        state = self._start(src, lengths)
        token = torch.full((src.shape[1],), SOS_ID, dtype=torch.long, device=src.device)
        outputs = []
        for _ in range(steps):
            logits, state = self._step(state, token)
            outputs.append(logits)
            token = logits.argmax(-1)
        return torch.stack(outputs)

    def use_teacher_forcing(self, tgt_in: torch.Tensor | None, teacher_forcing: bool | None) -> bool:
        """Whether :meth:`forward` feeds ``tgt_in``. Default (None): yes whenever ``tgt_in`` is given."""
        if tgt_in is None:
            if teacher_forcing:
                raise ValueError("teacher_forcing=True needs the decoder inputs tgt_in")
            return False
        return True if teacher_forcing is None else bool(teacher_forcing)

    @torch.no_grad()
    def greedy_decode(self, src: torch.Tensor, src_lengths: torch.Tensor | None, max_len: int) -> torch.Tensor:
        """Greedy output ids ``[T, B]`` (T <= ``max_len``): each column stops at its ``<eos>`` (kept),
        ``<pad>`` after it; decoding stops once every column has its ``<eos>``. Not ``vmap``-able (the
        early stop depends on the data); dropout follows ``self.training``, so call ``eval()`` first.
        """
        if max_len < 1:
            raise ValueError(f"max_len must be >= 1, got {max_len}")
        state = self._start(src, source_lengths(src, src_lengths))
        token = torch.full((src.shape[1],), SOS_ID, dtype=torch.long, device=src.device)
        finished = torch.zeros_like(token, dtype=torch.bool)
        outputs = []
        for _ in range(max_len):
            logits, state = self._step(state, token)
            token = logits.argmax(-1).masked_fill(finished, PAD_ID)
            outputs.append(token)
            finished = finished | (token == EOS_ID)
            if bool(finished.all()):
                break
        return torch.stack(outputs)

    def _forced(self, src, lengths, tgt_in):
        """Teacher forcing one step at a time (the recurrent default)."""
        state = self._start(src, lengths)
        outputs = []
        for token in tgt_in.unbind(0):
            logits, state = self._step(state, token)
            outputs.append(logits)
        return torch.stack(outputs)

    def _start(self, src, lengths):
        raise NotImplementedError

    def _step(self, state, token):
        raise NotImplementedError

    @staticmethod
    def loss(logits: torch.Tensor, tgt_out: torch.Tensor) -> torch.Tensor:
        """:func:`sequence_loss`: mean cross-entropy ignoring ``<pad>``."""
        return sequence_loss(logits, tgt_out)


def _free_steps(tgt_in, max_len) -> int:
    steps = tgt_in.shape[0] if tgt_in is not None else max_len
    if steps is None or steps < 1:
        raise ValueError(f"free-running decoding needs tgt_in or max_len >= 1, got max_len={max_len!r}")
    return int(steps)


class GreedyDecoder(nn.Module):
    """A module whose ``forward`` is ``model.greedy_decode``, with the model's parameter names.

    ``functional_call`` (hence :func:`~modmask.masked_model.run_with_mask` and ``WithMask``) swaps
    parameters only for a module's ``forward``; this wrapper registers the model's own submodules
    under their own names, so ``run_with_mask(GreedyDecoder(model, max_len), mask, src, lengths)``
    decodes under a binary mask made for ``model``.
    """

    def __init__(self, model: Seq2Seq, max_len: int):
        super().__init__()
        if any(True for _ in model.parameters(recurse=False)):
            raise ValueError(f"{type(model).__name__} holds parameters outside its submodules; "
                             f"GreedyDecoder cannot mirror their names")
        for name, child in model.named_children():
            self.add_module(name, child)
        object.__setattr__(self, "_model", model)   # not registered: its names would gain a prefix
        self.max_len = max_len

    def forward(self, src, src_lengths=None):
        return self._model.greedy_decode(src, src_lengths, self.max_len)

    def train(self, mode: bool = True):
        self._model.train(mode)
        return super().train(mode)


# ---- LSTM --------------------------------------------------------------------------------------

class LSTMLayer(nn.Module):
    """One LSTM layer as two linear maps (input -> 4H with bias, hidden -> 4H without), gates i, f, g, o."""

    def __init__(self, input_size: int, hidden_size: int):
        super().__init__()
        self.input_map = nn.Linear(input_size, 4 * hidden_size)
        self.recurrent_map = nn.Linear(hidden_size, 4 * hidden_size, bias=False)

    def cell(self, projected_input, h, c):
        """One step; ``projected_input`` is ``input_map(x)`` (computed for a whole sequence at once)."""
        i, f, g, o = (projected_input + self.recurrent_map(h)).chunk(4, dim=-1)
        c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
        h = torch.sigmoid(o) * torch.tanh(c)
        return h, c


class LSTMEncoder(nn.Module):
    """Embedding, dropout, stacked LSTM layers (dropout between them); returns each layer's final (h, c)."""

    def __init__(self, vocab_size: int, embedding: int, hidden: int, layers: int, dropout: float):
        super().__init__()
        self.embedding = nn.Embedding(vocab_size, embedding)
        self.layers = nn.ModuleList(LSTMLayer(embedding if i == 0 else hidden, hidden) for i in range(layers))
        self.hidden_size, self.dropout = hidden, dropout

    def forward(self, src, lengths):
        x = F.dropout(self.embedding(src), self.dropout, self.training)
        steps, batch = src.shape
        # A padded step leaves the state as it was, so the final state is the one after the last real token.
        valid = valid_positions(lengths, steps).unsqueeze(-1)
        finals = []
        for index, layer in enumerate(self.layers):
            projected = layer.input_map(x)   # all steps in one matmul; only the recurrence is sequential
            h = c = projected.new_zeros(batch, self.hidden_size)
            outputs = []
            for t in range(steps):
                h_new, c_new = layer.cell(projected[t], h, c)
                h, c = torch.where(valid[t], h_new, h), torch.where(valid[t], c_new, c)
                outputs.append(h)
            finals.append((h, c))
            if index < len(self.layers) - 1:
                x = F.dropout(torch.stack(outputs), self.dropout, self.training)
        return finals


class LSTMDecoder(nn.Module):
    """Embedding, dropout, stacked LSTM layers (dropout between them) and the output layer ``output``."""

    def __init__(self, vocab_size: int, embedding: int, hidden: int, layers: int, dropout: float):
        super().__init__()
        self.embedding = nn.Embedding(vocab_size, embedding)
        self.layers = nn.ModuleList(LSTMLayer(embedding if i == 0 else hidden, hidden) for i in range(layers))
        self.output = nn.Linear(hidden, vocab_size)
        self.dropout = dropout

    def step(self, token, state):
        """Logits ``[B, V]`` for the next token after reading ``token [B]``, and the new state."""
        x = F.dropout(self.embedding(token), self.dropout, self.training)
        new_state = []
        for index, (layer, (h, c)) in enumerate(zip(self.layers, state)):
            h, c = layer.cell(layer.input_map(x), h, c)
            new_state.append((h, c))
            x = F.dropout(h, self.dropout, self.training) if index < len(self.layers) - 1 else h
        # No dropout before the read-out, as in Lake & Baroni's code (nn.LSTM's dropout skips the last layer).
        return self.output(x), new_state


class LSTMSeq2Seq(Seq2Seq):
    """Lake & Baroni's LSTM encoder-decoder without attention (the paper's SCAN baseline).

    ``teacher_forcing`` is the probability that a training batch is teacher forced; the decision is
    drawn once per batch (in :meth:`forward` when ``teacher_forcing`` is None and the model is in
    training mode) from a ``random.Random(seed)`` kept in the model's state dict, so runs and
    resumed runs repeat it. Python's generator rather than a ``torch.Generator`` because a torch
    random op raises inside ``vmap`` (under ``MaskedModel`` all K chunks share one draw; the
    reference loop ``forward_loop`` draws per chunk). In eval mode a given ``tgt_in`` is always
    teacher forced (validation loss, mask training); test accuracy uses :meth:`greedy_decode`.
    """

    def __init__(self, in_vocab_size: int, out_vocab_size: int, hidden: int = 200, layers: int = 2,
                 embedding: int = 16, dropout: float = 0.5, teacher_forcing: float = 0.5, seed: int = 0):
        super().__init__()
        _check_positive(hidden=hidden, layers=layers, embedding=embedding,
                        in_vocab_size=in_vocab_size, out_vocab_size=out_vocab_size)
        _check_probability(dropout=dropout, teacher_forcing=teacher_forcing)
        self.encoder = LSTMEncoder(in_vocab_size, embedding, hidden, layers, dropout)
        self.decoder = LSTMDecoder(out_vocab_size, embedding, hidden, layers, dropout)
        self.teacher_forcing = teacher_forcing
        self._rng = random.Random(seed)

    def draw_teacher_forcing(self) -> bool:
        """One draw: True with probability ``teacher_forcing`` (no draw is used up for 0 or 1)."""
        if self.teacher_forcing >= 1:
            return True
        if self.teacher_forcing <= 0:
            return False
        return self._rng.random() < self.teacher_forcing

    def use_teacher_forcing(self, tgt_in, teacher_forcing) -> bool:
        if tgt_in is not None and teacher_forcing is None and self.training:
            return self.draw_teacher_forcing()
        return super().use_teacher_forcing(tgt_in, teacher_forcing)

    def _start(self, src, lengths):
        return self.encoder(src, lengths)

    def _step(self, state, token):
        return self.decoder.step(token, state)

    # The generator's state travels with state_dict() (key "_extra_state"), so checkpoints resume it.
    def get_extra_state(self):
        return {"teacher_forcing_rng": self._rng.getstate()}

    def set_extra_state(self, state):
        self._rng.setstate(state["teacher_forcing_rng"])


# ---- Transformer -------------------------------------------------------------------------------

class MultiHeadAttention(nn.Module):
    """Scaled dot-product attention with separate ``query``/``key``/``value``/``output`` maps (time-major)."""

    def __init__(self, d_model: int, heads: int, dropout: float):
        super().__init__()
        if d_model % heads:
            raise ValueError(f"d_model {d_model} is not divisible by heads {heads}")
        self.heads, self.dropout = heads, dropout
        self.query = nn.Linear(d_model, d_model)
        self.key = nn.Linear(d_model, d_model)
        self.value = nn.Linear(d_model, d_model)
        self.output = nn.Linear(d_model, d_model)

    def _split(self, x):
        """[T, B, D] -> [B, heads, T, D / heads]."""
        steps, batch, size = x.shape
        return x.reshape(steps, batch, self.heads, size // self.heads).permute(1, 2, 0, 3)

    def forward(self, x, memory, key_padding: torch.Tensor | None = None, causal: bool = False):
        """``x [T, B, D]`` attends to ``memory [S, B, D]``; ``key_padding [B, S]`` is True at padding."""
        q, k, v = self._split(self.query(x)), self._split(self.key(memory)), self._split(self.value(memory))
        scores = q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1])       # [B, heads, T, S]
        if key_padding is not None:
            scores = scores.masked_fill(key_padding[:, None, None, :], float("-inf"))
        if causal:
            steps, keys = x.shape[0], memory.shape[0]
            future = torch.ones(steps, keys, dtype=torch.bool, device=x.device).triu(1)
            scores = scores.masked_fill(future, float("-inf"))
        weights = F.dropout(torch.softmax(scores, dim=-1), self.dropout, self.training)
        out = (weights @ v).permute(2, 0, 1, 3)                          # [T, B, heads, D / heads]
        return self.output(out.reshape(out.shape[0], out.shape[1], -1))


class FeedForward(nn.Module):
    def __init__(self, d_model: int, d_ff: int, dropout: float):
        super().__init__()
        self.hidden = nn.Linear(d_model, d_ff)
        self.output = nn.Linear(d_ff, d_model)
        self.dropout = dropout

    def forward(self, x):
        return self.output(F.dropout(torch.relu(self.hidden(x)), self.dropout, self.training))


class _Sublayers(nn.Module):
    """Residual sublayers with post-LN (``norm(x + f(x))``) or pre-LN (``x + f(norm(x))``)."""

    def __init__(self, dropout: float, norm_first: bool):
        super().__init__()
        self.dropout, self.norm_first = dropout, norm_first

    def _residual(self, x, norm, fn):
        if self.norm_first:
            return x + F.dropout(fn(norm(x)), self.dropout, self.training)
        return norm(x + F.dropout(fn(x), self.dropout, self.training))


class EncoderLayer(_Sublayers):
    def __init__(self, d_model, heads, d_ff, dropout, norm_first):
        super().__init__(dropout, norm_first)
        self.self_attention = MultiHeadAttention(d_model, heads, dropout)
        self.feedforward = FeedForward(d_model, d_ff, dropout)
        self.norm1, self.norm2 = nn.LayerNorm(d_model), nn.LayerNorm(d_model)

    def forward(self, x, padding):
        x = self._residual(x, self.norm1, lambda y: self.self_attention(y, y, padding))
        return self._residual(x, self.norm2, self.feedforward)


class DecoderLayer(_Sublayers):
    def __init__(self, d_model, heads, d_ff, dropout, norm_first):
        super().__init__(dropout, norm_first)
        self.self_attention = MultiHeadAttention(d_model, heads, dropout)
        self.cross_attention = MultiHeadAttention(d_model, heads, dropout)
        self.feedforward = FeedForward(d_model, d_ff, dropout)
        self.norm1, self.norm2, self.norm3 = nn.LayerNorm(d_model), nn.LayerNorm(d_model), nn.LayerNorm(d_model)

    def forward(self, x, memory, memory_padding):
        # Target padding needs no mask: with the causal mask a real position never sees a later pad.
        x = self._residual(x, self.norm1, lambda y: self.self_attention(y, y, causal=True))
        x = self._residual(x, self.norm2, lambda y: self.cross_attention(y, memory, memory_padding))
        return self._residual(x, self.norm3, self.feedforward)


class TransformerStack(nn.Module):
    """Layers plus, for pre-LN, the final LayerNorm; the decoder stack also holds ``output`` (untied)."""

    def __init__(self, layers: list[nn.Module], d_model: int, norm_first: bool):
        super().__init__()
        self.layers = nn.ModuleList(layers)
        # Pre-LN leaves the residual stream unnormalised; post-LN's last sublayer already normalised it.
        self.final_norm = nn.LayerNorm(d_model) if norm_first else None

    def finish(self, x):
        return self.final_norm(x) if self.final_norm is not None else x


class TransformerSeq2Seq(Seq2Seq):
    """Encoder-decoder Transformer, always teacher forced in training, greedy at test time.

    Post-LN (``norm_first=False``, default) as in Vaswani et al. and the paper's era of SCAN /
    Mathematics baselines; with 3 + 3 layers of width 100 it trains stably with Adam at ~1e-4-1e-3.
    ``norm_first=True`` gives pre-LN, which tolerates larger learning rates without warm-up.
    Embeddings are scaled by sqrt(d_model) (initialised N(0, 1/d_model)) and summed with sinusoidal
    positions. ``tie_embeddings=True`` (one vocabulary for source and target, as in the Mathematics
    Dataset) uses one ``embedding`` for both sides and reads out through its transpose, so there is
    no ``decoder.output`` layer and nothing of the read-out is masked.
    """

    def __init__(self, in_vocab_size: int, out_vocab_size: int, d_model: int = 100, heads: int = 4,
                 d_ff: int = 200, encoder_layers: int = 3, decoder_layers: int = 3, dropout: float = 0.1,
                 norm_first: bool = False, tie_embeddings: bool = False):
        super().__init__()
        _check_positive(d_model=d_model, heads=heads, d_ff=d_ff, encoder_layers=encoder_layers,
                        decoder_layers=decoder_layers, in_vocab_size=in_vocab_size, out_vocab_size=out_vocab_size)
        _check_probability(dropout=dropout)
        if tie_embeddings and in_vocab_size != out_vocab_size:
            raise ValueError(f"tie_embeddings needs one vocabulary for source and target, got sizes "
                             f"{in_vocab_size} and {out_vocab_size}")
        self.d_model, self.dropout, self.tie_embeddings = d_model, dropout, tie_embeddings
        self.encoder = TransformerStack([EncoderLayer(d_model, heads, d_ff, dropout, norm_first)
                                         for _ in range(encoder_layers)], d_model, norm_first)
        self.decoder = TransformerStack([DecoderLayer(d_model, heads, d_ff, dropout, norm_first)
                                         for _ in range(decoder_layers)], d_model, norm_first)
        if tie_embeddings:
            self.embedding = _embedding(in_vocab_size, d_model)
        else:
            self.source_embedding = _embedding(in_vocab_size, d_model)
            self.target_embedding = _embedding(out_vocab_size, d_model)
            self.decoder.output = nn.Linear(d_model, out_vocab_size)

    def _embed(self, table: nn.Embedding, ids):
        x = table(ids) * math.sqrt(self.d_model)
        x = x + sinusoidal_positions(ids.shape[0], self.d_model, x.device, x.dtype)[:, None, :]
        return F.dropout(x, self.dropout, self.training)

    def encode(self, src, lengths):
        """Encoder output ``[S, B, D]`` and the key padding mask ``[B, S]`` (True at padding)."""
        padding = ~valid_positions(lengths, src.shape[0]).t()
        x = self._embed(self.embedding if self.tie_embeddings else self.source_embedding, src)
        for layer in self.encoder.layers:
            x = layer(x, padding)
        return self.encoder.finish(x), padding

    def decode(self, tgt_in, memory, memory_padding):
        """Logits ``[T, B, V]`` for decoder inputs ``tgt_in [T, B]`` (causal: position t sees inputs <= t)."""
        x = self._embed(self.embedding if self.tie_embeddings else self.target_embedding, tgt_in)
        for layer in self.decoder.layers:
            x = layer(x, memory, memory_padding)
        x = self.decoder.finish(x)
        if self.tie_embeddings:
            return F.linear(x, self.embedding.weight)
        return self.decoder.output(x)

    def _forced(self, src, lengths, tgt_in):
        memory, padding = self.encode(src, lengths)
        return self.decode(tgt_in, memory, padding)

    def _start(self, src, lengths):
        memory, padding = self.encode(src, lengths)
        return memory, padding, None

    def _step(self, state, token):
        # No key/value cache: the prefix is re-decoded each step (outputs are short: SCAN <= 49 tokens).
        memory, padding, prefix = state
        prefix = token[None] if prefix is None else torch.cat([prefix, token[None]])
        logits = self.decode(prefix, memory, padding)[-1]
        return logits, (memory, padding, prefix)


def _embedding(vocab_size: int, d_model: int) -> nn.Embedding:
    table = nn.Embedding(vocab_size, d_model)
    nn.init.normal_(table.weight, std=d_model ** -0.5)   # times sqrt(d_model): unit-variance inputs
    return table


# ---- construction ------------------------------------------------------------------------------

MODELS = {"lstm_seq2seq": LSTMSeq2Seq, "transformer": TransformerSeq2Seq}


def spec_keys(kind: str) -> list[str]:
    """The options a ``{model: kind, ...}`` block may set: the model's constructor arguments."""
    parameters = inspect.signature(MODELS[kind].__init__).parameters
    return [n for n in parameters if n not in ("self", "in_vocab_size", "out_vocab_size")]


def build_seq2seq(spec: dict, in_vocab_size: int, out_vocab_size: int) -> Seq2Seq:
    """Model from a config block, e.g. ``{model: lstm_seq2seq, hidden: 200, layers: 2, dropout: 0.5}`` or
    ``{model: transformer, d_model: 100, heads: 4, tie_embeddings: true}``.

    Per-stage overrides (``pretrain``, ``mask``) are ignored; any other unknown key is an error.
    """
    kind = spec.get("model")
    if kind not in MODELS:
        raise ValueError(f"unknown sequence model {kind!r} (key 'model'); known: {sorted(MODELS)}")
    known = spec_keys(kind)
    options = {k: v for k, v in spec.items() if k != "model" and k not in STAGE_OVERRIDES}
    unknown = sorted(set(options) - set(known))
    if unknown:
        raise ValueError(f"unknown key(s) {unknown} for model {kind!r}; known: {known}")
    return MODELS[kind](in_vocab_size, out_vocab_size, **options)


def _check_positive(**values):
    for name, value in values.items():
        if int(value) != value or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")


def _check_probability(**values):
    for name, value in values.items():
        if not 0.0 <= value <= 1.0:
            raise ValueError(f"{name} must be in [0, 1], got {value!r}")

"""SCAN with masks (paper section 3.4; Fig. 4a, 4b, 16).

A sequence model is trained on the IID (``simple``) split. Masks are then trained on the frozen
network, one on the full problem (the simple split's training set) and one on each other split's
training set. Every mask is evaluated on every split's test set, by exact match of the whole
action sequence. The baseline trains the same network directly on each split, without masks.

Data layout: commands and action sequences are encoded batch-first and packed into one tensor per
example, ``[command ids padded to SOURCE_WIDTH | action ids + <eos>, padded]``, so that the
training loops' ``(inputs, targets)`` batches carry both. :func:`teacher_forced` unpacks a batch,
cuts it to its longest sequence and runs the model time-major (the batch on dimension 1, where
``MaskedModel(batch_dim=1)`` splits it into mask samples).

Exact match without decoding: a greedy decoder emits the target sequence exactly if and only if,
fed the target's own prefix at every step (teacher forcing), its argmax equals the next target
token at every position up to and including ``<eos>``: both runs then see the same prefixes.
:func:`exact_match` uses this to score a whole test set in one teacher-forced pass per batch
instead of a step-by-step decode; ``tests/test_scan_experiment.py`` checks that it agrees with
:func:`decode_with_mask`.
"""
from __future__ import annotations

import logging

import pandas as pd
import torch

from ..data import scan as scan_data
from ..data.vocab import PAD_ID, SOS_ID, Vocabulary
from ..masked_model import run_with_mask
from ..masks import BinaryMask, MaskSelection, WeightMask
from ..seq2seq import GreedyDecoder, Seq2Seq, batch_first_loss, build_seq2seq, sequence_correct, spec_keys
from .. import training
from ..training import BatchSampler, History, TrainSettings

NAME = "scan"
SPLITS = scan_data.SPLITS
IID = "simple"  # the split the network learns; its mask is the full-problem mask
COMMAND_WORDS = ("after", "and", "around", "jump", "left", "look", "opposite", "right", "run", "thrice", "turn",
                 "twice", "walk")
ACTIONS = ("I_JUMP", "I_LOOK", "I_RUN", "I_TURN_LEFT", "I_TURN_RIGHT", "I_WALK")
SOURCE_WIDTH = 9  # the longest command: "jump around left twice and jump around left twice"
OUTPUT_LAYER = "decoder.output.weight"  # Fig. 4b reads this layer's weights per output token
SELECTION = MaskSelection()  # weights only (biases, embeddings unmasked)


def vocabularies() -> tuple[Vocabulary, Vocabulary]:
    """The command and action vocabularies: fixed by the grammar, so every split shares the same ids."""
    return Vocabulary(COMMAND_WORDS), Vocabulary(ACTIONS)


def encode(df: pd.DataFrame, in_vocab: Vocabulary, out_vocab: Vocabulary) -> torch.Tensor:
    """Packed examples ``[N, SOURCE_WIDTH + T]`` (see the module doc). Unknown words raise an error."""
    if len(df) == 0:
        raise ValueError("a SCAN table with no rows")
    src, src_lengths = in_vocab.encode_batch(list(df["command"]), batch_first=True, strict=True)
    if src.shape[1] > SOURCE_WIDTH:
        longest = df["command"].iloc[int(src_lengths.argmax())]
        raise ValueError(f"command {longest!r} has {src.shape[1]} words; SCAN's commands have at most {SOURCE_WIDTH}")
    src = torch.nn.functional.pad(src, (0, SOURCE_WIDTH - src.shape[1]), value=PAD_ID)
    tgt, _ = out_vocab.encode_batch(list(df["actions"]), eos=True, batch_first=True, strict=True)
    return torch.cat([src, tgt], 1)


def _trim(ids: torch.Tensor) -> torch.Tensor:
    """Cut a batch-first padded batch to its longest sequence (the rest is padding)."""
    width = int((ids != PAD_ID).sum(1).max())
    return ids[:, :max(width, 1)]


def unpack(packed: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Time-major ``src [S, B]``, decoder inputs ``tgt_in [T, B]`` (``<sos>`` first), targets ``tgt_out [T, B]``."""
    src = _trim(packed[:, :SOURCE_WIDTH])
    tgt_out = _trim(packed[:, SOURCE_WIDTH:])
    tgt_in = torch.cat([torch.full_like(tgt_out[:, :1], SOS_ID), tgt_out[:, :-1]], 1)
    return src.t(), tgt_in.t(), tgt_out.t()


def training_tensors(df: pd.DataFrame, in_vocab: Vocabulary, out_vocab: Vocabulary) -> list[torch.Tensor]:
    """``[inputs, targets]`` for :class:`BatchSampler`: the packed examples, and their action ids."""
    packed = encode(df, in_vocab, out_vocab)
    return [packed, packed[:, SOURCE_WIDTH:]]


def training_batches(df: pd.DataFrame, in_vocab: Vocabulary, out_vocab: Vocabulary, settings: TrainSettings,
                     seed: int, device) -> BatchSampler:
    """Random training batches; ``settings.length_pool`` > 1 sorts each pool of them by sequence length."""
    tensors = training_tensors(df, in_vocab, out_vocab)
    # by action length (the decoder's steps), then command length
    lengths = (tensors[1] != PAD_ID).sum(1) * (SOURCE_WIDTH + 1) + (tensors[0][:, :SOURCE_WIDTH] != PAD_ID).sum(1)
    return BatchSampler(tensors, settings.batch_size, seed, device, lengths=lengths, pool=settings.length_pool)


def teacher_forced(model, packed: torch.Tensor, **kwargs) -> torch.Tensor:
    """Logits ``[T, B, V]`` of ``model`` (a Seq2Seq or a MaskedModel over one) on a packed batch.

    ``src_lengths`` stays None: under ``MaskedModel`` every tensor argument is cut along the batch
    dimension, and the lengths are counted from ``<pad>`` instead.
    """
    src, tgt_in, _ = unpack(packed)
    return model(src, None, tgt_in, **kwargs)


loss = batch_first_loss  # cross-entropy over the non-padding action tokens; targets are batch-first action ids


def decode_with_mask(model: Seq2Seq, mask, src: torch.Tensor, src_lengths: torch.Tensor | None,
                     max_len: int) -> torch.Tensor:
    """Greedy ids ``[T, B]`` with ``model``'s masked parameters multiplied by a
    :class:`~modmask.masks.BinaryMask` (None: the plain model)."""
    return run_with_mask(GreedyDecoder(model, max_len), mask, src, src_lengths)


def build_network(spec: dict, seed: int) -> Seq2Seq:
    """The model of an architecture block; a model with its own random choices (the LSTM's teacher
    forcing draws) gets the job's seed."""
    in_vocab, out_vocab = vocabularies()
    options = {**spec, "seed": seed} if "seed" in spec_keys(spec["model"]) else spec
    return build_seq2seq(options, len(in_vocab), len(out_vocab))


def network_from_file(data: dict) -> Seq2Seq:
    """The architecture of a saved SCAN network (modmask.steps.load_network fills in its weights)."""
    return build_network(data["spec"], seed=0)


def pretrain(df: pd.DataFrame, spec: dict, settings: TrainSettings, seed: int, device, log: logging.Logger,
             checkpoint_path=None, identity: str = "") -> tuple[Seq2Seq, History]:
    """Train a network of architecture ``spec`` on a split's training table (the IID pretraining, or
    the direct-training baseline)."""
    in_vocab, out_vocab = vocabularies()
    model = build_network(spec, seed).to(device)
    sampler = training_batches(df, in_vocab, out_vocab, settings, seed, device)
    log.info("training %s (%d parameters) on %d examples for %d steps", spec["model"],
             sum(p.numel() for p in model.parameters()), len(df), settings.steps)
    history = training.train_network(model, sampler, loss, settings, forward=teacher_forced,
                                     checkpoint_path=checkpoint_path, identity=identity, log=log)
    return model, history


def train_split_mask(model: Seq2Seq, df: pd.DataFrame, settings: TrainSettings, seed: int, device,
                     log: logging.Logger, checkpoint_path=None, identity: str = "") -> tuple[WeightMask, History]:
    """A mask on the frozen ``model`` for one split's training table (teacher forced, eval mode)."""
    in_vocab, out_vocab = vocabularies()
    for p in model.parameters():
        p.requires_grad_(False)
    sampler = training_batches(df, in_vocab, out_vocab, settings, seed, device)
    mask = WeightMask.for_module(model, SELECTION, settings.initial_logit)
    log.info("training a mask on %d examples: %d masked weights, K=%d, beta %g, %d steps", len(df), mask.numel(),
             settings.mask_samples, settings.beta, settings.steps)
    return training.train_mask(model, sampler, loss, settings, mask=mask, seed=seed, batch_dim=1,
                               forward=teacher_forced, checkpoint_path=checkpoint_path, identity=identity, log=log)


@torch.no_grad()
def exact_match(model: Seq2Seq, mask: BinaryMask | None, packed: torch.Tensor, device, chunk: int = 1024) -> torch.Tensor:
    """Bool ``[N]``: greedy decoding under ``mask`` (None: no mask) reproduces the whole action sequence.

    Computed from one teacher-forced pass per chunk (see the module doc), dropout off.
    """
    model.eval()
    correct = []
    for start in range(0, len(packed), chunk):
        batch = packed[start:start + chunk].to(device)
        src, tgt_in, tgt_out = unpack(batch)
        logits = run_with_mask(model, mask, src, None, tgt_in, teacher_forcing=True)
        correct.append(sequence_correct(logits.argmax(-1), tgt_out).cpu())
    return torch.cat(correct)


def accuracy_rows(model: Seq2Seq, masks: dict[str, BinaryMask | None], tests: dict[str, torch.Tensor], device,
                  **columns) -> list[dict]:
    """One row per (mask, test split): exact-match counts and accuracy; ``columns`` are added to each row."""
    rows = []
    for mask_name, mask in masks.items():
        for split, packed in tests.items():
            correct = exact_match(model, mask, packed, device)
            rows.append({**columns, "mask": mask_name, "test_split": split, "correct": int(correct.sum()),
                         "total": len(correct), "accuracy": float(correct.float().mean())})
    return rows


def removed_output_weights(iid: BinaryMask, split_mask: BinaryMask, out_vocab: Vocabulary) -> list[dict]:
    """Fig. 4b: per output token j, the weights into j that the IID mask keeps and ``split_mask`` removes.

    ``removed_fraction`` = |IID and not split| / |IID| over the output layer's row j (NaN where the
    IID mask keeps no weight into j).
    """
    kept_iid, kept_split = iid.bits[OUTPUT_LAYER], split_mask.bits[OUTPUT_LAYER]
    rows = []
    for index, token in enumerate(out_vocab.itos):
        weights = int(kept_iid[index].sum())
        removed = int((kept_iid[index] & ~kept_split[index]).sum())
        rows.append({"token": token, "token_index": index, "iid_kept": weights, "removed": removed,
                     "split_kept": int(kept_split[index].sum()),
                     "removed_fraction": removed / weights if weights else float("nan")})
    return rows


# ---- the workflow's steps (modmask.experiments protocol) -------------------------------------------

def train_network(step):
    """A network trained on one split's training table (``data["train"]``): the IID pretraining, or the
    direct-training baseline. Its file keeps both vocabularies."""
    model, history = pretrain(step.data["train"], step.spec, step.train, step.seed, step.device, step.log,
                              checkpoint_path=step.checkpoint_path, identity=step.identity)
    in_vocab, out_vocab = vocabularies()
    return model, history, {"vocabularies": {"command": in_vocab.to_dict(), "actions": out_vocab.to_dict()}}


def train_mask(step):
    """A mask on the IID-trained network for one split's training table (``data["train"]``)."""
    mask, history = train_split_mask(step.network, step.data["train"], step.train, step.seed, step.device, step.log,
                                     checkpoint_path=step.checkpoint_path, identity=step.identity)
    return mask, history, {}


def evaluate(step) -> dict[str, pd.DataFrame]:
    """Tables ``accuracy`` and ``output_weights`` of one (architecture, seed).

    ``accuracy``: the IID-trained network without a mask and with each split's mask, and each directly
    trained network (``networks``) without a mask, on every split's test set (``data["tests"]``).
    ``output_weights`` (Fig. 4b): per split mask and output token, the decoder output weights the IID mask
    keeps and the split's removes.
    """
    in_vocab, out_vocab = vocabularies()
    tests = {split: encode(df, in_vocab, out_vocab) for split, df in step.data["tests"].items()}
    masks = {split: mask.binary() for split, mask in step.masks.items()}
    rows = accuracy_rows(step.network, {"none": None, **masks}, tests, step.device, network="pretrained",
                         trained_on=IID)
    for split, network in step.networks.items():
        rows += accuracy_rows(network, {"none": None}, tests, step.device, network="direct", trained_on=split)
    accuracy = pd.DataFrame(rows)
    for row in accuracy.itertuples():
        step.log.info("%s network (trained on %s), mask %s, %s test: %.4f (%d/%d)", row.network, row.trained_on,
                      row.mask, row.test_split, row.accuracy, row.correct, row.total)
    weights = []
    if IID in masks and OUTPUT_LAYER in masks[IID].bits:
        for split, mask in masks.items():
            if split != IID:
                weights += [{"mask": split, **row} for row in removed_output_weights(masks[IID], mask, out_vocab)]
    return {"accuracy": accuracy, "output_weights": pd.DataFrame(weights)}

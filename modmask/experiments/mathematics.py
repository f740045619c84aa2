"""The Mathematics Dataset with masks (paper section 3.5; Fig. 5).

Per task, a character-level Transformer is trained on all difficulty levels (easy, medium, hard).
Two masks are then trained on the frozen network: a control mask on all levels, and a mask on the
easy level only. Each is evaluated by exact answer match on the held-out test set of each level;
Fig. 5 shows the hard level: the unmasked network, the control mask and the easy mask.

Vocabulary: one character vocabulary for questions and answers,
:func:`modmask.data.mathematics.char_vocabulary` (the generator's characters: printable ASCII, space
to ``~``), so that every task and table shares the same ids. The
model uses one embedding for both sides, tied to its read-out (``tie_embeddings=True``): there is no
separate output layer, and the shared embedding is never masked (word embeddings are excluded by
:class:`~modmask.masks.MaskSelection`), so nothing of the read-out is masked. :data:`SELECTION`
also excludes ``decoder.output`` by name, so that this holds for an untied model too.

Data layout, as for SCAN (:mod:`modmask.experiments.scan`): questions and answers are encoded
batch-first and packed into one tensor per example, ``[question ids padded to source_width |
answer ids + <eos>, padded]`` (``source_width`` defaults to :data:`QUESTION_WIDTH`, the generator's
longest question), so that the training loops' ``(inputs, targets)`` batches carry both.
:func:`teacher_forced` unpacks a batch, cuts each part to the batch's longest sequence and runs the
model time-major (batch on dimension 1, where ``MaskedModel(batch_dim=1)`` splits it into mask
samples).

Exact match: as for SCAN, a greedy decoder emits the answer exactly if and only if its teacher-forced
argmax equals the answer at every position up to and including ``<eos>``, so :func:`exact_match`
scores a test set with one teacher-forced pass per chunk (test examples sorted by question length,
so that a chunk carries little padding). ``tests/test_mathematics_experiment.py`` checks it against
:func:`~modmask.experiments.scan.decode_with_mask`.
"""
from __future__ import annotations

import functools
import logging
from typing import Sequence

import pandas as pd
import torch

from ..config import task_stage_settings
from ..data import mathematics as mathematics_data
from ..data.vocab import PAD_ID, SOS_ID, Vocabulary
from ..masked_model import run_with_mask
from ..masks import BinaryMask, MaskSelection, WeightMask
from ..seq2seq import MODELS, Seq2Seq, batch_first_loss, build_seq2seq, sequence_correct, spec_keys
from .. import training
from ..training import BatchSampler, History, TrainSettings

NAME = "mathematics"
TASKS = mathematics_data.TASKS
LEVELS = mathematics_data.LEVELS  # easy, medium, hard
QUESTION_WIDTH = 160  # the generator's longest question (mathematics_dataset: _MAX_QUESTION_LENGTH)
ANSWER_WIDTH = 30     # its longest answer (_MAX_ANSWER_LENGTH); answers are packed with one more, <eos>
SELECTION = MaskSelection(exclude=(r"^decoder\.output\.",))  # weights only; embeddings and read-out unmasked
SUBSETS = {"control": None, "easy": ("easy",)}  # mask name -> levels of the training table it sees (None: all)
MASKS = ("none", *SUBSETS)  # the evaluated conditions: no mask, then each subset's mask

loss = batch_first_loss  # cross-entropy over the non-padding answer characters; targets are batch-first ids
__all__ = ["NAME", "TASKS", "LEVELS", "QUESTION_WIDTH", "ANSWER_WIDTH", "SELECTION", "SUBSETS",
           "MASKS", "vocabulary", "encode", "unpack", "training_tensors", "teacher_forced", "loss",
           "build_network", "network_from_file", "pretrain", "level_subset", "train_level_mask", "exact_match",
           "accuracy_rows", "network_spec", "stage_settings", "run_settings", "train_network", "train_mask",
           "evaluate"]


def vocabulary() -> Vocabulary:
    """The character vocabulary of questions and answers: the specials, then the generator's characters."""
    return mathematics_data.char_vocabulary()


def encode(df: pd.DataFrame, vocab: Vocabulary, source_width: int = QUESTION_WIDTH) -> torch.Tensor:
    """Packed examples ``[N, source_width + T]`` (see the module doc); T is the longest answer plus <eos>.

    Unknown characters raise :class:`~modmask.data.vocab.UnknownTokenError`, longer questions a ValueError.
    """
    if len(df) == 0:
        raise ValueError("a Mathematics Dataset table with no rows")
    src, src_lengths = vocab.encode_batch(list(df["question"]), batch_first=True, strict=True)
    if src.shape[1] > source_width:
        longest = df["question"].iloc[int(src_lengths.argmax())]
        raise ValueError(f"question {longest!r} has {src.shape[1]} characters; the packing holds at most "
                         f"{source_width}")
    src = torch.nn.functional.pad(src, (0, source_width - src.shape[1]), value=PAD_ID)
    tgt, _ = vocab.encode_batch(list(df["answer"]), eos=True, batch_first=True, strict=True)
    return torch.cat([src, tgt], 1)


def _trim(ids: torch.Tensor) -> torch.Tensor:
    """Cut a batch-first padded batch to its longest sequence (the rest is padding)."""
    width = int((ids != PAD_ID).sum(1).max())
    return ids[:, :max(width, 1)]


def unpack(packed: torch.Tensor, source_width: int = QUESTION_WIDTH) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Time-major ``src [S, B]``, decoder inputs ``tgt_in [T, B]`` (``<sos>`` first), targets ``tgt_out [T, B]``."""
    src = _trim(packed[:, :source_width])
    tgt_out = _trim(packed[:, source_width:])
    tgt_in = torch.cat([torch.full_like(tgt_out[:, :1], SOS_ID), tgt_out[:, :-1]], 1)
    return src.t(), tgt_in.t(), tgt_out.t()


def training_tensors(df: pd.DataFrame, vocab: Vocabulary, source_width: int = QUESTION_WIDTH) -> list[torch.Tensor]:
    """``[inputs, targets]`` for :class:`BatchSampler`: the packed examples, and their answer ids."""
    packed = encode(df, vocab, source_width)
    return [packed, packed[:, source_width:]]


def teacher_forced(model, packed: torch.Tensor, source_width: int = QUESTION_WIDTH, **kwargs) -> torch.Tensor:
    """Logits ``[T, B, V]`` of ``model`` (a Seq2Seq or a MaskedModel over one) on a packed batch.

    ``src_lengths`` stays None: under ``MaskedModel`` every tensor argument is cut along the batch
    dimension, and the lengths are counted from ``<pad>`` instead.
    """
    src, tgt_in, _ = unpack(packed, source_width)
    return model(src, None, tgt_in, **kwargs)


def build_network(spec: dict, seed: int, vocab_size: int | None = None) -> Seq2Seq:
    """The model of an architecture block over the one character vocabulary.

    A Transformer ties its embeddings unless the block says otherwise (the paper's model: d_model 256,
    d_ff 512, 4 heads, 3 + 3 layers, shared input/output embedding tied to the read-out).
    """
    size = vocab_size or len(vocabulary())
    options = dict(spec)
    if options.get("model") == "transformer":
        options.setdefault("tie_embeddings", True)
    if options.get("model") in MODELS and "seed" in spec_keys(options["model"]):
        options["seed"] = seed  # a model with its own random choices (the LSTM's teacher forcing) gets the job's
    return build_seq2seq(options, size, size)


def network_from_file(data: dict) -> Seq2Seq:
    """The architecture of a saved network, sized by the vocabulary it was trained with."""
    return build_network(data["spec"], seed=0, vocab_size=len(Vocabulary.from_dict(data["vocabulary"])))


def pretrain(df: pd.DataFrame, spec: dict, settings: TrainSettings, seed: int, device, log: logging.Logger,
             checkpoint_path=None, identity: str = "", source_width: int = QUESTION_WIDTH) -> tuple[Seq2Seq, History]:
    """Train a network of architecture ``spec`` on a task's training table (every level in it)."""
    vocab = vocabulary()
    model = build_network(spec, seed, len(vocab)).to(device)
    sampler = BatchSampler(training_tensors(df, vocab, source_width), settings.batch_size, seed, device)
    log.info("training %s (%d parameters) on %d examples (%s) for %d steps", spec["model"],
             sum(p.numel() for p in model.parameters()), len(df), _level_counts(df), settings.steps)
    history = training.train_network(model, sampler, loss, settings,
                                     forward=functools.partial(teacher_forced, source_width=source_width),
                                     checkpoint_path=checkpoint_path, identity=identity, log=log)
    return model, history


def _level_counts(df: pd.DataFrame) -> str:
    if "level" not in df:
        return "no level column"
    counts = df["level"].value_counts()
    return ", ".join(f"{level} {int(counts[level])}" for level in [*LEVELS, *sorted(set(counts.index) - set(LEVELS))]
                     if level in counts)


def level_subset(df: pd.DataFrame, levels: Sequence[str] | None) -> pd.DataFrame:
    """The rows of ``df`` whose ``level`` is in ``levels`` (None: every row); an error if none is left."""
    if levels is None:
        return df
    picked = df[df["level"].isin(list(levels))]
    if len(picked) == 0:
        present = sorted(df["level"].unique()) if "level" in df else []
        raise ValueError(f"no rows of level(s) {list(levels)} in a table of levels {present}")
    return picked


def train_level_mask(model: Seq2Seq, df: pd.DataFrame, settings: TrainSettings, seed: int, device,
                     log: logging.Logger, levels: Sequence[str] | None = None, checkpoint_path=None,
                     identity: str = "", vocab: Vocabulary | None = None,
                     source_width: int = QUESTION_WIDTH) -> tuple[WeightMask, History]:
    """A mask on the frozen ``model`` for the rows of ``df`` of ``levels`` (None: all, the control mask).

    Teacher forced, network in eval mode, ``settings.mask_samples`` mask samples per batch (8 in the
    paper) cut along the batch dimension of the time-major tensors.
    """
    vocab = vocab or vocabulary()
    df = level_subset(df, levels)
    for p in model.parameters():
        p.requires_grad_(False)
    sampler = BatchSampler(training_tensors(df, vocab, source_width), settings.batch_size, seed, device)
    mask = WeightMask.for_module(model, SELECTION, settings.initial_logit)
    log.info("training a mask on %d examples (%s): %d masked weights, K=%d, beta %g, %d steps", len(df),
             _level_counts(df), mask.numel(), settings.mask_samples, settings.beta, settings.steps)
    return training.train_mask(model, sampler, loss, settings, mask=mask, seed=seed, batch_dim=1,
                               forward=functools.partial(teacher_forced, source_width=source_width),
                               checkpoint_path=checkpoint_path, identity=identity, log=log)


@torch.no_grad()
def exact_match(model: Seq2Seq, mask: BinaryMask | None, packed: torch.Tensor, device, chunk: int = 256,
                source_width: int = QUESTION_WIDTH) -> torch.Tensor:
    """Bool ``[N]`` (in ``packed``'s order): greedy decoding under ``mask`` (None: no mask) reproduces the
    whole answer. One teacher-forced pass per chunk of examples of similar question length, dropout off."""
    model.eval()
    order = (packed[:, :source_width] != PAD_ID).sum(1).argsort(stable=True)
    correct = torch.empty(len(packed), dtype=torch.bool)
    for start in range(0, len(packed), chunk):
        index = order[start:start + chunk]
        src, tgt_in, tgt_out = unpack(packed[index].to(device), source_width)
        logits = run_with_mask(model, mask, src, None, tgt_in, teacher_forcing=True)
        correct[index] = sequence_correct(logits.argmax(-1), tgt_out).cpu()
    return correct


def accuracy_rows(model: Seq2Seq, masks: dict[str, BinaryMask | None], test: pd.DataFrame, device,
                  levels: Sequence[str] = LEVELS, vocab: Vocabulary | None = None, chunk: int = 256,
                  source_width: int = QUESTION_WIDTH, **columns) -> list[dict]:
    """One row per (mask, test level): exact-match counts and accuracy on ``test``'s rows of that level.

    ``masks`` maps a name ("none", "control", "easy") to a binary mask (None: the plain network);
    ``columns`` are added to each row. A level without test rows is an error.
    """
    vocab = vocab or vocabulary()
    packed = {level: encode(level_subset(test, [level]), vocab, source_width) for level in levels}
    rows = []
    for mask_name, mask in masks.items():
        for level, examples in packed.items():
            correct = exact_match(model, mask, examples, device, chunk, source_width)
            rows.append({**columns, "mask": mask_name, "test_level": level, "correct": int(correct.sum()),
                         "total": len(correct), "accuracy": float(correct.float().mean())})
    return rows


# ---- the workflow's steps (modmask.experiments protocol) -------------------------------------------

def network_spec(block: dict) -> dict:
    """The architecture of every task's network (the config block's ``network``)."""
    return dict(block["network"])


def stage_settings(block: dict, task: str, stage: str) -> dict:
    """The ``pretrain`` or ``mask`` block with ``task_settings.<task>.<stage>`` merged over it
    (``task_settings: null`` in a smaller scale's config drops the paper's per-task table)."""
    return task_stage_settings(block, task, stage)


def run_settings(block: dict, task: str) -> dict:
    """What one task's run depends on: the data settings, the network, its training and the task's mask settings."""
    return {"data": block["data"], "network": network_spec(block), "pretrain": stage_settings(block, task, "pretrain"),
            "mask": stage_settings(block, task, "mask")}


def train_network(step):
    """A network trained on every level of one task's training table (``data["train"]``); its file keeps
    the vocabulary."""
    model, history = pretrain(step.data["train"], step.spec, step.train, step.seed, step.device, step.log,
                              checkpoint_path=step.checkpoint_path, identity=step.identity)
    return model, history, {"vocabulary": vocabulary().to_dict()}


def train_mask(step):
    """The mask ``step.name``, a subset of the task's training table: ``control`` (every level) or ``easy``
    (:data:`SUBSETS`)."""
    if step.name not in SUBSETS:
        raise ValueError(f"unknown mask subset {step.name!r}; known: {list(SUBSETS)}")
    mask, history = train_level_mask(step.network, step.data["train"], step.train, step.seed, step.device, step.log,
                                     levels=SUBSETS[step.name],
                                     vocab=Vocabulary.from_dict(step.network_file["vocabulary"]),
                                     checkpoint_path=step.checkpoint_path, identity=step.identity)
    return mask, history, {"subset": step.name}


def evaluate(step, levels: Sequence[str] = LEVELS) -> dict[str, pd.DataFrame]:
    """Table ``accuracy`` of one (task, seed): exact answer match on the test rows (``data["test"]``) of
    each of ``levels``, for the network without a mask (``mask`` "none") and through each mask."""
    masks = {name: mask.binary() for name, mask in step.masks.items()}
    rows = accuracy_rows(step.network, {"none": None, **masks}, step.data["test"], step.device, levels=list(levels),
                         vocab=Vocabulary.from_dict(step.network_file["vocabulary"]))
    accuracy = pd.DataFrame(rows)
    for row in accuracy.itertuples():
        step.log.info("mask %s, %s test: %.4f (%d/%d)", row.mask, row.test_level, row.accuracy, row.correct, row.total)
    return {"accuracy": accuracy}

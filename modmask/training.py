"""Training loops: ordinary network training and mask training, with progress logs and resumable
checkpoints. Experiments supply data, a loss and settings; they never write their own loop."""
from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import torch
from torch import nn

from .io import load_checkpoint, save_torch
from .masked_model import MaskedModel
from .masks import WeightMask

LOG = logging.getLogger("modmask")


@dataclass
class TrainSettings:
    """Settings of one training run (network or mask). Names follow the paper's."""

    steps: int
    lr: float = 1e-3
    batch_size: int = 128
    grad_clip: float | None = 1.0
    optimizer: str = "adam"
    weight_decay: float = 0.0
    # Adam's betas and eps (PyTorch's defaults; the Mathematics Dataset uses (0.9, 0.995) and 1e-9)
    adam_betas: tuple[float, float] = (0.9, 0.999)
    adam_eps: float = 1e-8
    # linear learning-rate warm-up (network, mask and joint training): optimiser step s (1-based) uses
    # lr * min(1, s / warmup); 0: none. It multiplies any lr_milestones factor.
    warmup: int = 0
    # network training only: the learning rate is divided by 10 at each of these steps (ResNet schedule)
    lr_milestones: tuple[int, ...] = ()
    # sequence data: batches drawn this many at a time and sorted by length (BatchSampler); 1: plain
    # random batches
    length_pool: int = 1
    log_every: int = 500
    checkpoint_every: int = 0  # 0: no periodic checkpoints
    # mask training only
    beta: float = 1e-4
    mask_samples: int = 4
    temperature: float = 1.0
    initial_logit: float = 2.0
    kernels: str = "auto"
    # Sharpening (not in the paper): over the last ``sharpen_fraction`` of the steps the masks are
    # sampled with P(keep) = sigmoid(c * logit), c rising geometrically from 1 to ``sharpen_scale``.
    # The samples then converge on the thresholded mask that evaluation uses, so logits left near 0
    # (kept in some samples, dropped in others) must settle on the side the task needs. 0: off.
    sharpen_fraction: float = 0.0
    sharpen_scale: float = 10.0
    # weights and masks trained together (train_jointly): the weights' learning rate (None: lr)
    weight_lr: float | None = None

    def __post_init__(self):
        # YAML gives lists; keep the dataclass hashable and comparable whatever the source
        betas = tuple(float(b) for b in self.adam_betas)
        if len(betas) != 2 or not all(0.0 <= b < 1.0 for b in betas):
            raise ValueError(f"adam_betas must be two numbers in [0, 1), got {self.adam_betas!r}")
        self.adam_betas = betas
        self.adam_eps = float(self.adam_eps)
        if int(self.warmup) != self.warmup or self.warmup < 0:
            raise ValueError(f"warmup must be a non-negative whole number of steps, got {self.warmup!r}")
        self.warmup = int(self.warmup)
        self.lr_milestones = tuple(int(m) for m in self.lr_milestones)
        if not 0.0 <= self.sharpen_fraction <= 1.0:
            raise ValueError(f"sharpen_fraction must be in [0, 1], got {self.sharpen_fraction!r}")
        if not self.sharpen_scale >= 1.0:
            raise ValueError(f"sharpen_scale must be at least 1, got {self.sharpen_scale!r}")

    def logit_scale(self, step: int) -> float:
        """The factor on the logits when sampling masks at ``step`` (1-based); see ``sharpen_fraction``."""
        sharpened = round(self.sharpen_fraction * self.steps)
        start = self.steps - sharpened
        if sharpened == 0 or step <= start:
            return 1.0
        return float(self.sharpen_scale) ** ((step - start) / sharpened)

    @classmethod
    def from_config(cls, block: dict, **overrides) -> "TrainSettings":
        known = {f for f in cls.__dataclass_fields__}
        values = {k: v for k, v in {**block, **overrides}.items() if k in known}
        return cls(**values)


class BatchSampler:
    """Uniformly random batches (with replacement) from in-memory tensors, seeded and resumable.

    With per-example ``lengths`` and ``pool`` > 1, batches of similar length: ``pool`` batches' worth
    of examples are drawn at once, sorted by length and cut into ``pool`` batches, served in random
    order. Each example is still drawn uniformly with replacement, but a padded batch is only as long
    as its longest sequence, so sequence models compute on far less padding (SCAN: a random batch of
    64 pads to ~42 tokens where the mean is 15).
    """

    def __init__(self, tensors: Sequence[torch.Tensor], batch_size: int, seed: int, device="cpu",
                 lengths: torch.Tensor | None = None, pool: int = 1):
        if not tensors or any(len(t) != len(tensors[0]) for t in tensors):
            raise ValueError("BatchSampler needs tensors of equal length")
        if len(tensors[0]) == 0:
            raise ValueError("BatchSampler got an empty data set")
        if int(pool) != pool or pool < 1:
            raise ValueError(f"pool must be a whole number of batches >= 1, got {pool!r}")
        if pool > 1 and (lengths is None or len(lengths) != len(tensors[0])):
            raise ValueError("a length-sorted pool needs one length per example")
        self.tensors = [t.to(device) for t in tensors]
        self.batch_size = batch_size
        self.lengths = lengths.cpu() if lengths is not None else None
        self.pool = int(pool)
        self.pending: list[torch.Tensor] = []  # index batches of the current pool not yet served
        self.generator = torch.Generator()
        self.generator.manual_seed(seed)

    def _next_index(self) -> torch.Tensor:
        size = len(self.tensors[0])
        if self.pool == 1:
            return torch.randint(size, (self.batch_size,), generator=self.generator)
        if not self.pending:
            index = torch.randint(size, (self.pool * self.batch_size,), generator=self.generator)
            batches = index[torch.argsort(self.lengths[index], stable=True)].view(self.pool, self.batch_size)
            self.pending = list(batches[torch.randperm(self.pool, generator=self.generator)])
        return self.pending.pop()

    def __call__(self):
        index = self._next_index().to(self.tensors[0].device)
        return [t[index] for t in self.tensors]

    def state_dict(self):
        return {"generator": self.generator.get_state(),
                "pending": torch.stack(self.pending) if self.pending else None}

    def load_state_dict(self, state):
        self.generator.set_state(state["generator"])
        pending = state.get("pending")
        self.pending = list(pending) if pending is not None else []


@dataclass
class History:
    rows: list[dict] = field(default_factory=list)

    def add(self, **row):
        self.rows.append(row)


def _adam(params, settings: TrainSettings, fused: bool = False, **options):
    """Adam with the settings' betas and eps. ``fused``: PyTorch's one-pass kernel (3-4x faster on the CPU
    for the 2.6M weights and logits of the permuted-MNIST network; the same update up to float rounding,
    1 ulp here and there), where this PyTorch and device have it (CPU since 2.4), else the default one."""
    if fused:
        params = list(params)
        try:
            return torch.optim.Adam(params, betas=settings.adam_betas, eps=settings.adam_eps, fused=True, **options)
        except (RuntimeError, TypeError, ValueError):
            pass  # no fused kernel for this device or version
    return torch.optim.Adam(params, betas=settings.adam_betas, eps=settings.adam_eps, **options)


def _make_optimizer(params, settings: TrainSettings):
    if settings.optimizer == "adam":
        return _adam(params, settings, lr=settings.lr, weight_decay=settings.weight_decay)
    if settings.optimizer == "sgd":
        return torch.optim.SGD(params, lr=settings.lr, momentum=0.9, weight_decay=settings.weight_decay)
    raise ValueError(f"unknown optimizer {settings.optimizer!r}")


def _schedule(optimizer, settings: TrainSettings, milestones: tuple[int, ...] = ()):
    """The learning-rate scheduler of a loop (stepped after every optimiser step), or None.

    Milestones alone: ``MultiStepLR`` (lr / 10 at each). With ``warmup``: one ``LambdaLR`` whose factor
    for optimiser step s (1-based) is ``min(1, s / warmup) * 0.1 ** (number of milestones < s)``, the same
    milestone schedule times the linear warm-up. Either is checkpointed with the loop's state.
    """
    if settings.warmup:
        warmup = settings.warmup

        def factor(done: int) -> float:  # ``done`` optimiser steps so far: this is step done + 1
            return min(1.0, (done + 1) / warmup) * 0.1 ** sum(done >= m for m in milestones)

        return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
    if milestones:
        return torch.optim.lr_scheduler.MultiStepLR(optimizer, list(milestones), gamma=0.1)
    return None


class _GlobalRng:
    """The global torch generators, which dropout and other random layers draw from. Saved with a
    checkpoint, so that a resumed run draws the same dropout masks as an uninterrupted one."""

    def state_dict(self):
        state = {"cpu": torch.get_rng_state()}
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            state["cuda"] = torch.cuda.get_rng_state_all()
        return state

    def load_state_dict(self, state):
        torch.set_rng_state(state["cpu"])
        cuda = state.get("cuda")
        if cuda is not None and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(cuda)


class _Checkpointer:
    """Saves the full loop state every ``every`` steps; restores it when a job is restarted."""

    def __init__(self, path: str | Path | None, every: int, identity: str):
        self.path = Path(path) if path else None
        self.every = every
        self.identity = identity

    def load(self, log: logging.Logger):
        if self.path is None:
            return None
        state = load_checkpoint(self.path, log)  # None also when it is corrupt: moved aside, start afresh
        if state is None:
            return None
        if state.get("identity") != self.identity:
            log.warning("ignoring checkpoint %s: it belongs to different settings", self.path)
            return None
        log.info("resuming from checkpoint %s at step %d", self.path, state["step"])
        return state

    def maybe_save(self, step: int, total: int, make_state: Callable[[], dict]):
        if self.path is None or not self.every or step % self.every or step == total:
            return
        save_torch({"identity": self.identity, "step": step, **make_state()}, self.path)

    def remove(self):
        if self.path is not None and self.path.exists():
            self.path.unlink()


def _check_logits(stateful: dict, what: str, step: int) -> None:
    """Stop when a trained mask's logits are no longer finite (an exploding or NaN update)."""
    mask = stateful.get("mask")
    if mask is None:
        return
    bad = {n: int((~torch.isfinite(mask.logit(n))).sum()) for n in mask.names}
    bad = {n: count for n, count in bad.items() if count}
    if bad:
        name = next(iter(bad))
        raise FloatingPointError(f"{what}: {sum(bad.values())} mask logits became NaN or infinite by step {step} "
                                 f"({bad[name]} in {name}); lower the learning rate, check beta and initial_logit")


def _run_loop(step_fn, settings: TrainSettings, stateful: dict, checkpoint: _Checkpointer, log, what: str,
              progress: Callable[[], dict] | None = None, steps_after: int = 0) -> History:
    """``steps_after``: training steps the job runs after this loop (a sequential run's later tasks); its
    log lines then also say how long the whole job has left at this loop's speed (``job eta``), which
    ``python -m modmask.progress`` reads."""
    stateful = {**stateful, "global_rng": _GlobalRng()}
    history = History()
    start_step = 0
    running = 0.0  # loss summed since the last log line, so that a resumed run logs the same averages
    count = 0
    saved = checkpoint.load(log)
    if saved is not None:
        for key, obj in stateful.items():
            if key == "global_rng" and key not in saved:
                continue  # a checkpoint written before the generator was saved: resume without it
            obj.load_state_dict(saved[key])
        history.rows = saved["history"]
        start_step = saved["step"]
        running, count = saved.get("running", 0.0), saved.get("count", 0)
    started = time.perf_counter()
    for step in range(start_step + 1, settings.steps + 1):
        loss = step_fn(step)
        loss, total = loss if isinstance(loss, tuple) else (loss, loss)  # mask steps: (task loss, + regulariser)
        if not math.isfinite(loss):
            raise FloatingPointError(f"{what}: loss became {loss} at step {step}; lower the learning rate")
        if not math.isfinite(total):
            raise FloatingPointError(f"{what}: the loss with the regulariser became {total} at step {step} (task "
                                     f"loss {loss}); check beta, lower the learning rate")
        running += loss
        count += 1
        if step % settings.log_every == 0 or step == settings.steps:
            _check_logits(stateful, what, step)
            elapsed = time.perf_counter() - started
            done = step - start_step
            eta = elapsed / done * (settings.steps - step)
            extra = progress() if progress else {}
            history.add(step=step, loss=running / count, **extra)
            details = " ".join(f"{k} {v:.4g}" for k, v in extra.items())
            job_eta = f", job eta {elapsed / done * (settings.steps - step + steps_after):.0f}s" if steps_after else ""
            log.info("%s step %d/%d loss %.4f %s(%.1f steps/s, eta %.0fs%s)", what, step, settings.steps,
                     running / count, details + " " if details else "", done / max(elapsed, 1e-9), eta, job_eta)
            running, count = 0.0, 0
        checkpoint.maybe_save(step, settings.steps, lambda: {
            **{k: obj.state_dict() for k, obj in stateful.items()}, "history": history.rows,
            "running": running, "count": count})
    checkpoint.remove()
    return history


def train_network(model: nn.Module, sampler: BatchSampler, loss_fn: Callable, settings: TrainSettings,
                  forward: Callable | None = None, checkpoint_path=None, identity: str = "",
                  log: logging.Logger = LOG) -> History:
    """Ordinary training of all parameters. ``forward(model, inputs)`` defaults to ``model(inputs)``."""
    forward = forward or (lambda m, inputs: m(inputs))
    model.train()
    optimizer = _make_optimizer([p for p in model.parameters() if p.requires_grad], settings)
    stateful = {"model": model, "optimizer": optimizer, "sampler": sampler}
    scheduler = _schedule(optimizer, settings, settings.lr_milestones)
    if scheduler is not None:
        stateful["scheduler"] = scheduler  # resumed with the rest, so a restarted job keeps its schedule

    def step(_: int):
        inputs, targets = sampler()
        optimizer.zero_grad(set_to_none=True)
        loss = loss_fn(forward(model, inputs), targets)
        loss.backward()
        if settings.grad_clip:
            nn.utils.clip_grad_norm_(model.parameters(), settings.grad_clip)
        optimizer.step()
        if scheduler is not None:
            scheduler.step()
        return loss.item()

    history = _run_loop(step, settings, stateful, _Checkpointer(checkpoint_path, settings.checkpoint_every, identity),
                        log, "train")
    model.eval()
    return history


def train_mask(model: nn.Module, sampler: BatchSampler, loss_fn: Callable, settings: TrainSettings,
               mask: WeightMask | None = None, selection=None, seed: int = 0, batch_dim: int = 0,
               output_batch_dim: int | None = None, forward: Callable | None = None,
               checkpoint_path=None, identity: str = "", log: logging.Logger = LOG,
               monitor: Callable[[WeightMask], dict] | None = None) -> tuple[WeightMask, History]:
    """Train a mask on a frozen network; returns the mask and the loss history.

    The network runs in eval mode (dropout off, normalisation on running statistics) and receives
    no gradient; a fresh Adam optimises the mask's trainable logits only, and gradient clipping
    sees only those. The loss is the task loss plus ``beta * sum(logits) / batch_size``; the
    regulariser always sees the raw logits, also while ``settings.sharpen_fraction`` scales them for
    sampling. ``forward(masked_model, inputs)`` defaults to ``masked_model(inputs)``.
    ``monitor(mask)``: extra numbers (for example held-out accuracy of the thresholded mask) logged and
    added to the history every ``log_every`` steps; it must not draw from the global random generator,
    or the run would differ from one without it.
    """
    if settings.batch_size % settings.mask_samples:
        raise ValueError(f"batch_size {settings.batch_size} is not divisible by mask_samples {settings.mask_samples}")
    model.eval()
    if mask is None:
        mask = WeightMask.for_module(model, selection, settings.initial_logit)
    masked = MaskedModel(model, mask, settings.mask_samples, settings.temperature, batch_dim=batch_dim,
                         output_batch_dim=output_batch_dim, seed=seed, kernels=settings.kernels)
    forward = forward or (lambda m, inputs: m(inputs))
    trainable = mask.trainable_parameters()
    optimizer = _adam(trainable, settings, lr=settings.lr)
    scheduler = _schedule(optimizer, settings)

    def step(number: int):
        masked.logit_scale = settings.logit_scale(number)
        inputs, targets = sampler()
        optimizer.zero_grad(set_to_none=True)
        task_loss = loss_fn(forward(masked, inputs), targets)
        task_loss.backward()
        loss = task_loss.detach() + masked.add_regularizer_gradient_(settings.beta, settings.batch_size)
        if settings.grad_clip:
            nn.utils.clip_grad_norm_(trainable, settings.grad_clip)
        optimizer.step()
        if scheduler is not None:
            scheduler.step()
        return task_loss.item(), loss.item()

    def progress():
        kept = sum(int((mask.logit(n) > 0).sum()) for n in mask.names)
        return {"kept": kept / mask.numel(), **(monitor(mask) if monitor else {})}

    stateful = {"mask": mask, "optimizer": optimizer, "sampler": sampler, "noise": masked.noise}
    if scheduler is not None:
        stateful["scheduler"] = scheduler
    history = _run_loop(step, settings, stateful, _Checkpointer(checkpoint_path, settings.checkpoint_every, identity),
                        log, "mask", progress)
    return mask, history


def train_jointly(model: nn.Module, mask: WeightMask, sampler: BatchSampler, loss_fn: Callable,
                  settings: TrainSettings, frozen: dict[str, torch.Tensor] | None = None, seed: int = 0,
                  checkpoint_path=None, identity: str = "", log: logging.Logger = LOG, steps_after: int = 0) -> History:
    """Train a network's weights and a mask over them together (permuted MNIST, paper section 3.3).

    Every step runs the K mask samples in one vectorised pass of :class:`MaskedModel` with
    ``train_weights=True``; a fresh Adam holds the weights (``weight_lr``, default ``lr``) and the
    mask's logits (``lr``). The loss is the task loss plus ``beta * sum(logits) / batch_size``.

    ``frozen`` maps parameter names to bool tensors: those entries never change. Their gradient is
    zeroed before clipping and the optimiser step (so they neither count in the clipping norm nor
    build up Adam moments), and after each step they are copied back from a snapshot taken at the
    start, so no optimiser feature (momentum, weight decay) can move them: they stay bit-identical.
    ``steps_after``: training steps the job runs after this call, for the log's whole-job time left.
    """
    if settings.batch_size % settings.mask_samples:
        raise ValueError(f"batch_size {settings.batch_size} is not divisible by mask_samples {settings.mask_samples}")
    params = dict(model.named_parameters())
    frozen = {n: f.to(params[n].device, torch.bool) for n, f in (frozen or {}).items() if bool(f.any())}
    unknown = [n for n in frozen if n not in params]
    if unknown:
        raise KeyError(f"frozen entries for parameters the model lacks: {unknown}")
    snapshot = {n: params[n].detach().clone() for n in frozen}
    # 1 where an entry may move, 0 where it is frozen: multiplying the gradient by it is an order of magnitude
    # faster on the CPU than masked_fill_ with the bool mask (0.3 against 4.4 ms for 800 x 800), and a
    # finite gradient times 0 is a zero (of either sign), which leaves Adam's moments and the entry exactly
    # as they were (a non-finite loss stops training first)
    movable = {n: (~bits).to(params[n].dtype) for n, bits in frozen.items()}
    model.train()
    masked = MaskedModel(model, mask, settings.mask_samples, settings.temperature, seed=seed,
                         kernels=settings.kernels, train_weights=True)
    weights = [p for p in model.parameters() if p.requires_grad]
    logits = mask.trainable_parameters()
    # fused: Adam over every weight and logit is a fifth of this step with the default kernel
    optimizer = _adam([{"params": weights, "lr": settings.weight_lr or settings.lr},
                       {"params": logits, "lr": settings.lr}], settings, fused=True)
    scheduler = _schedule(optimizer, settings)
    # Adam moves an entry through its gradient, its moments or weight decay. The gradient of a frozen
    # entry is zeroed from the first step, so its moments stay exactly 0 and its update is exactly
    # -lr * 0 / eps = -0.0: without weight decay the copy-back changes nothing and is skipped (about 7%
    # of the permuted-MNIST step). The end of training checks that the frozen entries did not move.
    restore_frozen = any(group.get("weight_decay", 0) for group in optimizer.param_groups)

    def step(number: int):
        masked.logit_scale = settings.logit_scale(number)
        inputs, targets = sampler()
        optimizer.zero_grad(set_to_none=True)
        task_loss = loss_fn(masked(inputs), targets)
        task_loss.backward()
        loss = task_loss.detach() + masked.add_regularizer_gradient_(settings.beta, settings.batch_size)
        for name, keep in movable.items():
            if params[name].grad is not None:
                params[name].grad.mul_(keep)
        if settings.grad_clip:
            nn.utils.clip_grad_norm_(weights + logits, settings.grad_clip)
        optimizer.step()
        if restore_frozen:
            with torch.no_grad():
                for name, bits in frozen.items():
                    params[name].copy_(torch.where(bits, snapshot[name], params[name]))
        if scheduler is not None:
            scheduler.step()
        return task_loss.item(), loss.item()

    def progress():
        kept = sum(int((mask.logit(n) > 0).sum()) for n in mask.names)
        return {"kept": kept / mask.numel()}

    stateful = {"model": model, "mask": mask, "optimizer": optimizer, "sampler": sampler, "noise": masked.noise}
    if scheduler is not None:
        stateful["scheduler"] = scheduler
    history = _run_loop(step, settings, stateful, _Checkpointer(checkpoint_path, settings.checkpoint_every, identity),
                        log, "joint", progress, steps_after)
    moved = [n for n, bits in frozen.items() if not torch.equal(params[n].detach()[bits], snapshot[n][bits])]
    if moved:
        raise RuntimeError(f"frozen entries of {moved} changed during joint training: the optimiser moved "
                           f"zero-gradient entries; this is a bug in modmask, please report it")
    model.eval()
    return history

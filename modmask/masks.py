"""Mask parameters (logits) for chosen weights of any module, and binary masks derived from them."""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Iterable, Mapping

import torch
from torch import nn


@dataclass(frozen=True)
class MaskSelection:
    """Which parameters of a module get a mask, by name.

    ``include``/``exclude`` are regular expressions matched (``re.search``) against parameter names
    as ``module.named_parameters()`` gives them. Embedding weights are never masked: the paper
    excludes them, and a masked embedding row would remove a token rather than a connection.
    """

    include: tuple[str, ...] = (r".*",)
    exclude: tuple[str, ...] = ()
    mask_biases: bool = False
    mask_norms: bool = False

    def select(self, module: nn.Module) -> list[str]:
        skipped = set()
        for prefix, sub in module.named_modules():
            dot = f"{prefix}." if prefix else ""
            if isinstance(sub, (nn.Embedding, nn.EmbeddingBag)):
                skipped.update(dot + n for n, _ in sub.named_parameters(recurse=False))
            if not self.mask_norms and isinstance(sub, _NORM_TYPES):
                skipped.update(dot + n for n, _ in sub.named_parameters(recurse=False))
        names = []
        for name, param in module.named_parameters():
            if name in skipped:
                continue
            if not self.mask_biases and (name.endswith("bias") or name.split(".")[-1].startswith("bias")):
                continue
            if not any(re.search(p, name) for p in self.include):
                continue
            if any(re.search(p, name) for p in self.exclude):
                continue
            names.append(name)
        if not names:
            raise ValueError(f"mask selection {self} matches no parameter of {type(module).__name__}")
        return names


_NORM_TYPES = (nn.LayerNorm, nn.GroupNorm, nn.modules.batchnorm._BatchNorm, nn.modules.instancenorm._InstanceNorm)


def _key(name: str) -> str:
    # ParameterDict keys may not contain dots.
    return name.replace(".", "__")


class WeightMask(nn.Module):
    """One logit per masked weight. Fixed entries are sampled like the others but never optimised."""

    def __init__(self, shapes: Mapping[str, torch.Size], initial_logit: float = 2.0,
                 device=None, dtype=torch.float32):
        super().__init__()
        self.names = list(shapes)
        self.logits = nn.ParameterDict({
            _key(n): nn.Parameter(torch.full(tuple(s), float(initial_logit), device=device, dtype=dtype))
            for n, s in shapes.items()})
        self._fixed: dict[str, torch.Tensor] = {}

    @classmethod
    def for_module(cls, module: nn.Module, selection: MaskSelection | None = None,
                   initial_logit: float = 2.0) -> "WeightMask":
        selection = selection or MaskSelection()
        params = dict(module.named_parameters())
        names = selection.select(module)
        first = params[names[0]]
        return cls({n: params[n].shape for n in names}, initial_logit, device=first.device)

    def logit(self, name: str) -> torch.Tensor:
        return self._fixed[name] if name in self._fixed else self.logits[_key(name)]

    def items(self):
        return [(n, self.logit(n)) for n in self.names]

    def trainable_parameters(self) -> list[nn.Parameter]:
        return [self.logits[_key(n)] for n in self.names if n not in self._fixed]

    @property
    def fixed_names(self) -> list[str]:
        return [n for n in self.names if n in self._fixed]

    def fix(self, name: str, logits: torch.Tensor) -> None:
        """Use these logits for ``name`` and stop optimising it (CIFAR class removal's output layer)."""
        if name not in self.names:
            raise KeyError(f"{name!r} is not masked; masked parameters: {self.names}")
        if logits.shape != self.logits[_key(name)].shape:
            raise ValueError(f"logits for {name!r} have shape {tuple(logits.shape)}, "
                             f"expected {tuple(self.logits[_key(name)].shape)}")
        value = logits.detach().clone().to(self.logits[_key(name)].device)
        self._fixed[name] = value
        with torch.no_grad():
            self.logits[_key(name)].copy_(value)
        self.logits[_key(name)].requires_grad_(False)

    def fix_from(self, other: "WeightMask", names: Iterable[str]) -> None:
        for name in names:
            self.fix(name, other.logit(name))

    def regularizer(self) -> torch.Tensor:
        """Sum of all logits (the paper's regulariser before scaling by beta / batch size)."""
        return sum(self.logit(n).sum() for n in self.names)

    def binary(self) -> "BinaryMask":
        """The final deterministic mask ``M = 1[logit > 0]``."""
        return BinaryMask({n: (self.logit(n) > 0).detach() for n in self.names})

    def probabilities(self) -> dict[str, torch.Tensor]:
        return {n: torch.sigmoid(self.logit(n)).detach() for n in self.names}

    def numel(self) -> int:
        return sum(self.logit(n).numel() for n in self.names)

    # -- persistence ----------------------------------------------------------------------------
    def to_file_dict(self) -> dict:
        return {"format": "modmask.WeightMask/1", "names": self.names,
                "logits": {n: self.logit(n).detach().cpu() for n in self.names},
                "fixed": self.fixed_names}

    @classmethod
    def from_file_dict(cls, data: dict, device=None) -> "WeightMask":
        if data.get("format") != "modmask.WeightMask/1":
            raise ValueError(f"not a saved WeightMask (format {data.get('format')!r})")
        mask = cls({n: data["logits"][n].shape for n in data["names"]}, device=device)
        with torch.no_grad():
            for n in data["names"]:
                mask.logits[_key(n)].copy_(data["logits"][n])
        for n in data["fixed"]:
            mask.fix(n, data["logits"][n])
        return mask


class BinaryMask:
    """A deterministic mask: parameter name -> bool tensor. Unlisted parameters are left as they are."""

    def __init__(self, bits: Mapping[str, torch.Tensor]):
        self.bits = {n: b.to(torch.bool) for n, b in bits.items()}

    @property
    def names(self) -> list[str]:
        return list(self.bits)

    def _check(self, other: "BinaryMask"):
        if self.names != other.names or any(self.bits[n].shape != other.bits[n].shape for n in self.names):
            raise ValueError("masks cover different parameters; cannot combine them")

    def invert(self) -> "BinaryMask":
        return BinaryMask({n: ~b for n, b in self.bits.items()})

    def __invert__(self):
        return self.invert()

    def __or__(self, other: "BinaryMask") -> "BinaryMask":
        self._check(other)
        return BinaryMask({n: self.bits[n] | other.bits[n] for n in self.names})

    def __and__(self, other: "BinaryMask") -> "BinaryMask":
        self._check(other)
        return BinaryMask({n: self.bits[n] & other.bits[n] for n in self.names})

    @staticmethod
    def union(masks: Iterable["BinaryMask"]) -> "BinaryMask":
        masks = list(masks)
        result = masks[0]
        for m in masks[1:]:
            result = result | m
        return result

    def counts(self) -> dict[str, int]:
        return {n: int(b.sum()) for n, b in self.bits.items()}

    def sizes(self) -> dict[str, int]:
        return {n: b.numel() for n, b in self.bits.items()}

    def count(self) -> int:
        return sum(self.counts().values())

    def masked_parameters(self, module: nn.Module) -> dict[str, torch.Tensor]:
        """Parameters of ``module`` with this mask applied (zeros where the bit is 0)."""
        params = dict(module.named_parameters())
        missing = [n for n in self.names if n not in params]
        if missing:
            raise KeyError(f"mask names parameters the module lacks: {missing}")
        return {n: params[n].detach() * self.bits[n].to(params[n].device, params[n].dtype) for n in self.names}

    def to_file_dict(self) -> dict:
        return {"format": "modmask.BinaryMask/1", "bits": {n: b.cpu() for n, b in self.bits.items()}}

    @classmethod
    def from_file_dict(cls, data: dict) -> "BinaryMask":
        if data.get("format") != "modmask.BinaryMask/1":
            raise ValueError(f"not a saved BinaryMask (format {data.get('format')!r})")
        return cls(data["bits"])


def mask_conditions(masks: Mapping[str, BinaryMask]) -> list[tuple[str, bool, BinaryMask | None]]:
    """What the evaluations compare: (mask name, inverted, mask) for no mask ("none"), each mask and
    each inverted mask."""
    conditions: list[tuple[str, bool, BinaryMask | None]] = [("none", False, None)]
    for name, mask in masks.items():
        conditions += [(name, False, mask), (name, True, mask.invert())]
    return conditions

"""The CIFAR-10 networks of the paper (section 3.6): a simple CNN and a CIFAR-style ResNet.

Written with plain ``nn.Conv2d`` / ``nn.BatchNorm2d`` / ``nn.Linear`` layers and functional ops so
that :class:`modmask.MaskedModel` can run them under K mask samples at once (``vmap`` over
``functional_call``). The last layer of both is called ``output``, so the output layer's mask can be
fixed by name (``"output.weight"``) for the class-removal experiment. Masks are trained with the
network in eval mode: dropout off, BatchNorm on its running statistics.
"""
from __future__ import annotations

import bisect

import torch
import torch.nn.functional as F
from torch import nn

CIFAR_CLASSES = 10


class SimpleCNN(nn.Module):
    """The paper's Table 2 CNN: four 3x3 convolutions (padding 1) with ReLU, max pooling after the
    first three, dropout 0.25 after the third and 0.5 after the fourth (``dropout=True``), global
    average pooling and a linear output layer. ``widths`` are the four convolutions' channels."""

    def __init__(self, dropout: bool, widths=(32, 64, 128, 256), num_classes: int = CIFAR_CLASSES,
                 in_channels: int = 3):
        super().__init__()
        widths = tuple(int(w) for w in widths)
        if len(widths) != 4 or min(widths) < 1:
            raise ValueError(f"SimpleCNN needs four positive widths, got {widths}")
        self.dropout = bool(dropout)
        self.widths = widths
        sizes = (in_channels, *widths)
        self.conv1, self.conv2, self.conv3, self.conv4 = (
            nn.Conv2d(a, b, kernel_size=3, padding=1) for a, b in zip(sizes[:-1], sizes[1:]))
        self.output = nn.Linear(widths[-1], num_classes)

    def _drop(self, x, p: float):
        return F.dropout(x, p, training=self.training) if self.dropout else x

    def forward(self, x):
        x = F.max_pool2d(F.relu(self.conv1(x)), 2)
        x = F.max_pool2d(F.relu(self.conv2(x)), 2)
        x = F.max_pool2d(self._drop(F.relu(self.conv3(x)), 0.25), 2)
        x = self._drop(F.relu(self.conv4(x)), 0.5)
        return self.output(x.mean(dim=(-2, -1)))

    def layer_labels(self) -> dict[str, str]:
        labels = {}
        for i in range(1, 5):
            labels[f"conv{i}.weight"] = f"conv {i}"
            labels[f"conv{i}.bias"] = f"conv {i} (bias)"
        labels.update({"output.weight": "output layer", "output.bias": "output layer (bias)"})
        return labels


class BasicBlock(nn.Module):
    """Two 3x3 convolutions with BatchNorm; a 1x1 convolution + BatchNorm shortcut where the shape changes."""

    def __init__(self, in_channels: int, channels: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, channels, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(channels)
        self.conv2 = nn.Conv2d(channels, channels, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels)
        if stride != 1 or in_channels != channels:
            self.shortcut = nn.Sequential(nn.Conv2d(in_channels, channels, 1, stride=stride, bias=False),
                                          nn.BatchNorm2d(channels))
        else:
            self.shortcut = nn.Identity()

    def forward(self, x):
        y = F.relu(self.bn1(self.conv1(x)))
        y = self.bn2(self.conv2(y))
        return F.relu(y + self.shortcut(x))


class ResNetCifar(nn.Module):
    """CIFAR-style ResNet (He et al. 2016, section 4.2): a 3x3 stem, three stages of (depth - 2) / 6
    BasicBlocks with ``widths`` channels (the first block of stages 2 and 3 halves the resolution),
    global average pooling and a linear output layer. ``depth=110``: 54 blocks, 1.73M parameters."""

    def __init__(self, depth: int = 110, widths=(16, 32, 64), num_classes: int = CIFAR_CLASSES,
                 in_channels: int = 3):
        super().__init__()
        widths = tuple(int(w) for w in widths)
        if depth < 8 or (depth - 2) % 6:
            raise ValueError(f"ResNetCifar depth must be 6n + 2 with n >= 1 (8, 20, 32, 44, 56, 110...), got {depth}")
        if len(widths) != 3 or min(widths) < 1:
            raise ValueError(f"ResNetCifar needs three positive widths, got {widths}")
        self.depth, self.widths = depth, widths
        self.blocks_per_stage = (depth - 2) // 6
        self.conv = nn.Conv2d(in_channels, widths[0], 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(widths[0])
        stages, channels = [], widths[0]
        for i, width in enumerate(widths):
            blocks = []
            for j in range(self.blocks_per_stage):
                blocks.append(BasicBlock(channels, width, stride=2 if i > 0 and j == 0 else 1))
                channels = width
            stages.append(nn.Sequential(*blocks))
        self.stages = nn.ModuleList(stages)
        self.output = nn.Linear(widths[-1], num_classes)
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(module, nn.BatchNorm2d):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)

    def forward(self, x):
        x = F.relu(self.bn(self.conv(x)))
        for stage in self.stages:
            x = stage(x)
        return self.output(x.mean(dim=(-2, -1)))

    def layer_labels(self) -> dict[str, str]:
        labels = {"conv.weight": "stem conv", "output.weight": "output layer", "output.bias": "output layer (bias)"}
        for name, _ in self.named_parameters():
            parts = name.split(".")
            if parts[0] == "stages":
                labels[name] = f"stage {int(parts[1]) + 1} block {int(parts[2]) + 1} {'.'.join(parts[3:])}"
        return labels


MODELS = ("simple_cnn", "resnet")
_KEYS = {"simple_cnn": {"model", "dropout", "widths", "num_classes"},
         "resnet": {"model", "depth", "widths", "num_classes"}}


def build_cnn(spec: dict, seed: int) -> nn.Module:
    """A network from a config block, initialised from ``seed`` (the global RNG is left as it was).

    ``{"model": "simple_cnn", "dropout": true, "widths": [32, 64, 128, 256]}`` or
    ``{"model": "resnet", "depth": 110, "widths": [16, 32, 64]}``; ``widths`` and ``num_classes``
    are optional, ``dropout`` is required for the simple CNN.
    """
    kind = spec.get("model")
    if kind not in MODELS:
        raise ValueError(f"unknown value {kind!r} for key 'model' of the CIFAR-10 model spec; known: {MODELS}")
    unknown = sorted(set(spec) - _KEYS[kind])
    if unknown:
        raise ValueError(f"unknown key(s) {unknown} in the {kind} model spec; allowed: {sorted(_KEYS[kind])}")
    if kind == "simple_cnn" and not isinstance(spec.get("dropout"), bool):
        raise ValueError(f"the simple_cnn model spec needs key 'dropout' set to true or false, "
                         f"got {spec.get('dropout')!r}")
    num_classes = int(spec.get("num_classes", CIFAR_CLASSES))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(seed))
        if kind == "simple_cnn":
            return SimpleCNN(bool(spec["dropout"]), tuple(spec.get("widths", (32, 64, 128, 256))), num_classes)
        return ResNetCifar(int(spec.get("depth", 110)), tuple(spec.get("widths", (16, 32, 64))), num_classes)


def resnet_lr(step: int, base_lr: float = 0.1, milestones=(32000, 48000), warmup_steps: int = 0) -> float:
    """The ResNet step schedule: ``base_lr``, divided by 10 at each milestone (step >= milestone).

    ``warmup_steps`` > 0 uses ``base_lr / 10`` before that step (He et al.'s ResNet-110 warm-up);
    the paper's schedule has none (the default).
    """
    if step < warmup_steps:
        return base_lr / 10
    return base_lr / 10 ** bisect.bisect_right(sorted(milestones), step)

"""Figures of the CIFAR-10 class-removal experiment (paper Fig. 6a, 6b, 18 and 19-21).

For every class c a mask is trained on the pretrained network with c left out of the training data
("without_c"); the "control" mask is trained on all ten classes. Fig. 6a: the relative drop of the
removed class's accuracy, (control - without_c) / control, per architecture. Fig. 6b: the largest
relative drop of any *other* class under the same mask, divided by the removed class's drop (well below
1: the removal is specific to the class). Fig. 18: the control mask's confusion matrices. Fig. 19-21:
per architecture, how the confusion matrix changes when a class is removed (where its images go).
Everything is computed per seed, then the mean and standard deviation over seeds are shown.

The numbers behind every figure come from the pure functions of ``modmask.analysis.cifar10``
(``class_drops``, ``removed_class_drop``, ``other_class_drop_ratio``, ``confusion_matrix``,
``confusion_difference``, ``largest_confusions``), which return tidy frames that can be checked without
reading pixels; this module only draws them.
"""
from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.patches import Rectangle

from ..analysis.cifar10 import COLUMNS  # noqa: F401 (what scripts/figures.py reads)
from ..analysis.cifar10 import (ACCURACY_COLUMNS, ALL_CLASSES, ARCH_ORDER, CONFUSION_COLUMNS, CONTROL,
                                WITHOUT, archs_in, checked_frame, checked_table, classes_in, confusion_difference,
                                confusion_matrix, drop_rows, mask_rows, other_class_drop_ratio, removed_class_drop,
                                removed_classes)
from .common import finish, grouped_bars, panels, provenance_text, save_figure

ARCH_NAMES = {"simple_cnn": "simple CNN", "simple_cnn_nodrop": "simple CNN, no dropout", "resnet": "ResNet-110"}
FIRST_DIFF_FIGURE = 19


FIGURES = {  # name -> (file stem, title)
    "removed_drop": ("fig06_a_removed_class_drop",
                     "Fig. 6a: CIFAR-10, relative accuracy drop of the class the mask was trained without"),
    "other_drop": ("fig06_b_other_class_drop",
                   "Fig. 6b: CIFAR-10, largest relative drop of another class / drop of the removed class"),
    "control_confusion": ("fig18_confusion_control",
                          "Fig. 18: CIFAR-10, confusion matrix through the control mask (trained on all classes)"),
    "mask_length": ("mask_length",
                    "CIFAR-10: masks of different lengths and learning rates on the same network"),
    "confusion_diff": ("fig{number:02d}_confusion_diff_{arch}",
                       "Fig. {number}: CIFAR-10, {arch}: confusion through the mask trained without class c "
                       "minus through the control mask"),
}


def arch_label(arch: str, names: dict[str, str] | None = None) -> str:
    """Display name of ``arch``: from ``names`` (e.g. {"resnet": "ResNet-20"}), then ``ARCH_NAMES``, else ``arch``."""
    return {**ARCH_NAMES, **(names or {})}.get(arch, arch)


def short_class(name: str) -> str:
    """A class name cut to 4 letters (airp, auto, bird, cat, ...), for tick labels of small panels."""
    return name[:4]


# ---- the numbers ----------------------------------------------------------------------------------


def diff_figure_numbers(archs: list[str]) -> dict[str, int]:
    """Paper figure number of each arch's confusion-difference figure: simple_cnn 19, simple_cnn_nodrop 20,
    resnet 21 (whether or not the others are present), any other arch 22, 23, ... in the given order."""
    numbers, extra = {}, FIRST_DIFF_FIGURE + len(ARCH_ORDER)
    for arch in archs:
        if arch in ARCH_ORDER:
            numbers[arch] = FIRST_DIFF_FIGURE + ARCH_ORDER.index(arch)
        else:
            numbers[arch], extra = extra, extra + 1
    return numbers


# ---- the figures ----------------------------------------------------------------------------------

def _series(stats: pd.DataFrame, archs: list[str], groups: list[str], names) -> dict:
    by = stats.set_index(["arch", "removed_class"])
    return {arch_label(a, names): (np.array([by.loc[(a, g), "mean"] for g in groups], dtype=float),
                                   np.array([by.loc[(a, g), "std"] for g in groups], dtype=float))
            for a in archs}


def _mark_missing(ax, series: dict, y: float = 0.0):
    """Write "n/a" where a bar of ``grouped_bars`` is missing (NaN), so that it does not read as 0."""
    width = 0.8 / max(len(series), 1)
    for i, (mean, _) in enumerate(series.values()):
        for group in np.flatnonzero(np.isnan(mean)):
            ax.text(group - 0.4 + width * (i + 0.5), y, "n/a", ha="center", va="bottom", fontsize=6, color="#666666",
                    rotation=90)


def _bar_panel(stats: pd.DataFrame, groups: list[str], names, ylabel: str, percent: bool):
    archs = list(dict.fromkeys(stats["arch"]))
    fig, axes = panels(1, width=9.0, height=3.4)
    ax = axes[0]
    series = _series(stats, archs, groups, names)
    for _, std in series.values():
        std[np.isnan(std)] = 0.0  # a single seed: no error bar
    grouped_bars(ax, groups, series, ylabel, percent=percent)
    ax.tick_params(axis="x", labelsize=8)
    ax.axhline(0, color="black", linewidth=0.6)
    return fig, ax, series


def removed_drop_figure(accuracy: pd.DataFrame, arch_names: dict[str, str] | None = None):
    """Paper Fig. 6a: bars per removed class (and all classes), one colour per arch."""
    stats = removed_class_drop(accuracy, overall=True)
    groups = list(dict.fromkeys(stats["removed_class"]))
    if groups == [ALL_CLASSES]:
        raise ValueError("CIFAR-10 'accuracy' table has no without_<class> mask with a matching control run")
    fig, ax, series = _bar_panel(stats, groups, arch_names, "relative drop of the removed class", percent=True)
    _mark_missing(ax, series, 1)
    ax.axvline(len(groups) - 1.5, color="#999999", linewidth=0.8, linestyle=":")
    top = np.nanmax([np.nanmax(m + s) if np.isfinite(m).any() else 0 for m, s in series.values()]) * 100
    bottom = np.nanmin([np.nanmin(m - s) if np.isfinite(m).any() else 0 for m, s in series.values()]) * 100
    ax.set_ylim(min(0, bottom - 5), max(105, top + 5))
    ax.set_xlabel("class removed from the mask's training data")
    return finish(fig, [ax], FIGURES["removed_drop"][1])


def other_drop_figure(accuracy: pd.DataFrame, arch_names: dict[str, str] | None = None):
    """Paper Fig. 6b: per removed class, the worst other class's relative drop / the removed class's drop;
    the worst other class (most frequent over seeds) written above each bar, 4 letters."""
    stats = other_class_drop_ratio(accuracy)
    groups = list(dict.fromkeys(stats["removed_class"]))
    if not groups:
        raise ValueError("CIFAR-10 'accuracy' table has no without_<class> mask with a matching control run")
    fig, ax, series = _bar_panel(stats, groups, arch_names, "largest other-class drop /\nremoved-class drop",
                                 percent=False)
    _mark_missing(ax, series, 0.02)
    ax.axhline(1, color="black", linewidth=0.9, linestyle="--")
    ax.annotate("other class drops as much as the removed one", (1.0, 1.0), xycoords=("axes fraction", "data"),
                xytext=(0, 2), textcoords="offset points", ha="right", va="bottom", fontsize=7)
    width = 0.8 / max(len(series), 1)
    by = stats.set_index(["arch", "removed_class"])
    for i, arch in enumerate(dict.fromkeys(stats["arch"])):
        mean, std = list(series.values())[i]
        for g, group in enumerate(groups):
            worst = by.loc[(arch, group), "worst_class"]
            if worst is not None and np.isfinite(mean[g]):
                ax.text(g - 0.4 + width * (i + 0.5), max(mean[g] + std[g], 0) + 0.02, short_class(worst),
                        ha="center", va="bottom", rotation=90, fontsize=6, color="#444444")
    top = max([np.nanmax(m + s) for m, s in series.values() if np.isfinite(m).any()] + [1.0])
    bottom = min([np.nanmin(m - s) for m, s in series.values() if np.isfinite(m).any()] + [0.0])
    ax.set_ylim(min(0, bottom - 0.05), max(1.1, top * 1.25 + 0.05))
    ax.set_xlabel("class removed from the mask's training data (above each bar: the other class that drops most)")
    return finish(fig, [ax], FIGURES["other_drop"][1])


def _cell_numbers(ax, values: np.ndarray, threshold: float, fontsize: float, fmt: str = "{:.0f}", skip=None):
    for (i, j), v in np.ndenumerate(values):
        if np.isnan(v) or (skip is not None and abs(v) < skip):
            continue
        ax.text(j, i, fmt.format(v), ha="center", va="center", fontsize=fontsize,
                color="white" if abs(v) > threshold else "black")


def control_confusion_figure(confusion: pd.DataFrame, arch_names: dict[str, str] | None = None):
    """Paper Fig. 18: one panel per arch, the control mask's confusion matrix in percent, numbers in the cells."""
    confusion = checked_frame(confusion, "confusion", CONFUSION_COLUMNS)
    archs = [a for a in archs_in(confusion) if not mask_rows(confusion, a, CONTROL).empty]
    if not archs:
        raise ValueError(f"CIFAR-10 'confusion' table has no {CONTROL!r} mask rows")
    fig, axes = panels(len(archs), width=5.0, height=4.9)
    for ax, arch in zip(axes, archs):
        matrix = confusion_matrix(confusion, arch, CONTROL) * 100
        image = ax.imshow(matrix.to_numpy(), cmap="Blues", vmin=0, vmax=100)
        _cell_numbers(ax, matrix.to_numpy(), 60, 7)
        ticks = np.arange(len(matrix))
        ax.set_xticks(ticks, list(matrix.columns), rotation=45, ha="right", rotation_mode="anchor", fontsize=8)
        ax.set_yticks(ticks, list(matrix.index), fontsize=8)
        ax.set_xlabel("predicted class")
        ax.set_ylabel("true class")
        ax.set_title(arch_label(arch, arch_names))
        ax.grid(False)
        ax.tick_params(length=0)
        colorbar = fig.colorbar(image, cax=ax.inset_axes([1.03, 0.0, 0.04, 1.0]))
        colorbar.set_label("share of the true class's test images [%]", fontsize=8)
        colorbar.ax.tick_params(labelsize=7)
    return finish(fig, axes, FIGURES["control_confusion"][1], legend=False)


def confusion_diff_figure(confusion: pd.DataFrame, arch: str, number: int | None = None,
                          arch_names: dict[str, str] | None = None):
    """Paper Fig. 19-21 for ``arch``: one panel per removed class c (up to 5 per row; 2 x 5 when all ten were
    removed), confusion(without_c) - confusion(control) in percentage points, one symmetric colour scale for
    all panels, row c outlined, changes of at least 5 points written in the cells; class names (4 letters) on
    the left column and bottom row. Classes no mask was trained without get no panel (a run may remove a
    few classes only)."""
    confusion = checked_frame(confusion, "confusion", CONFUSION_COLUMNS)
    number = number if number is not None else diff_figure_numbers([arch])[arch]
    classes = classes_in(confusion)
    removed = [c for c in classes if c in set(removed_classes(confusion, arch))]
    if not removed:
        raise ValueError(f"CIFAR-10 'confusion' table has no without_<class> mask rows for arch {arch!r}")
    if mask_rows(confusion, arch, CONTROL).empty:
        raise ValueError(f"CIFAR-10 'confusion' table has no {CONTROL!r} mask rows for arch {arch!r}")
    differences = {c: confusion_difference(confusion, arch, c) * 100 for c in removed}
    limit = max(float(np.nanmax(np.abs(d.to_numpy()))) for d in differences.values()) or 1.0
    columns = min(5, len(removed))
    rows = int(np.ceil(len(removed) / columns))
    fig = plt.figure(figsize=(2.7 * columns + 0.5, 3.0 * rows + 0.7))
    grid = fig.add_gridspec(rows, columns + 1, width_ratios=[1] * columns + [0.05])
    axes = [fig.add_subplot(grid[i // columns, i % columns]) for i in range(len(removed))]
    image = None
    short = [short_class(c) for c in classes]
    ticks = np.arange(len(classes))
    for index, (ax, c) in enumerate(zip(axes, removed)):
        ax.set_title(c, fontsize=10)
        ax.grid(False)
        # class names on the outer panels only: every panel has the same axes (and it is much faster to draw)
        bottom, left = index + columns >= len(removed), index % columns == 0
        ax.set_xticks(ticks, short, rotation=90)
        ax.set_yticks(ticks, short)
        ax.tick_params(length=0, labelsize=7, labelbottom=bottom, labelleft=left)
        if bottom:
            ax.set_xlabel("predicted class", fontsize=8)
        if left:
            ax.set_ylabel("true class", fontsize=8)
        values = differences[c].to_numpy()
        image = ax.imshow(values, cmap="RdBu_r", vmin=-limit, vmax=limit)
        _cell_numbers(ax, values, 0.6 * limit, 6, "{:+.0f}", skip=5)
        row = classes.index(c)
        ax.add_patch(Rectangle((-0.5, row - 0.5), len(classes), 1, fill=False, edgecolor="black", linewidth=1.5,
                               clip_on=False))
    colorbar = fig.colorbar(image, cax=fig.add_subplot(grid[:, columns]))
    colorbar.set_label("change of the share of the true class's images [percentage points]" if rows > 1
                       else "change of the true class's share [points]", fontsize=8)
    title = FIGURES["confusion_diff"][1].format(number=number, arch=arch_label(arch, arch_names))
    return finish(fig, axes, title, legend=False)


MASK_LENGTH_COLUMNS = ("arch", "lr", "steps", "mask", "step", "kept", "removed_class", "removed_class_accuracy")
REFERENCE_LR = 1e-3  # the paper's mask lr: steps are drawn as their equivalent at this lr


def mask_length_figure(probes: pd.DataFrame, arch_names: dict[str, str] | None = None):
    """The mask-length probe (benchmarks/cifar10_mask_length.py): the control mask's kept weights and the
    removed class's accuracy through its removal mask (relative to the control's at the probe's end),
    against steps x lr / 1e-3, one colour per network, one line style per lr: where lines of different lr
    lie on each other, ten times the lr does in a tenth of the steps what the paper's lr does."""
    probes = checked_frame(probes, "mask_length", MASK_LENGTH_COLUMNS)
    fig, (kept_ax, removed_ax) = panels(2, width=4.6, height=3.2)
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    styles = ["-", "--", ":", "-."]
    lrs = sorted(probes["lr"].unique())
    classes = sorted(probes["removed_class"].unique())
    for i, arch in enumerate(dict.fromkeys(probes["arch"])):
        for lr, style in zip(lrs, styles):
            run = probes[(probes["arch"] == arch) & (probes["lr"] == lr)]
            if run.empty:
                continue
            scale = lr / REFERENCE_LR
            control = run[run["mask"] == CONTROL].sort_values("step")
            removal = run[run["mask"].str.startswith(WITHOUT)].sort_values("step")
            end = control[control["step"] == control["steps"]]["removed_class_accuracy"]
            label = f"{arch_label(arch, arch_names)}, lr {lr:g}"
            kept_ax.plot(control["step"] * scale, control["kept"] * 100, style, color=colours[i % len(colours)],
                         marker="o", markersize=3, label=label)
            if len(end):
                removed_ax.plot(removal["step"] * scale, removal["removed_class_accuracy"] / end.iloc[0] * 100,
                                style, color=colours[i % len(colours)], marker="o", markersize=3, label=label)
    for ax in (kept_ax, removed_ax):
        ax.set_xlabel(f"mask steps x lr / {REFERENCE_LR:g}")
        ax.grid(alpha=0.3)
    kept_ax.set_ylabel("weights kept by the control mask [%]")
    removed_ax.set_ylabel(f"{'/'.join(classes)} accuracy, % of control")
    removed_ax.set_ylim(0, 110)
    return finish(fig, [kept_ax, removed_ax], FIGURES["mask_length"][1])


def save_mask_length_figure(probes: pd.DataFrame, out_dir: str | Path,
                            arch_names: dict[str, str] | None = None) -> list[Path]:
    return save_figure(mask_length_figure(probes, arch_names), out_dir, FIGURES["mask_length"][0],
                       provenance_text(probes))


def build_all(tables: dict[str, pd.DataFrame], out_dir: str | Path,
              arch_names: dict[str, str] | None = None) -> list[Path]:
    """Every CIFAR-10 figure as PDF and PNG in ``out_dir``; ``arch_names`` overrides ``ARCH_NAMES``
    (e.g. {"resnet": "ResNet-20"} for a shallower ResNet)."""
    accuracy = checked_table(tables, "accuracy", ACCURACY_COLUMNS)
    confusion = checked_table(tables, "confusion", CONFUSION_COLUMNS)
    used_rows = drop_rows(accuracy)
    paths = []
    paths += save_figure(removed_drop_figure(accuracy, arch_names), out_dir, FIGURES["removed_drop"][0],
                         provenance_text(used_rows))
    paths += save_figure(other_drop_figure(accuracy, arch_names), out_dir, FIGURES["other_drop"][0],
                         provenance_text(used_rows))
    paths += save_figure(control_confusion_figure(confusion, arch_names), out_dir, FIGURES["control_confusion"][0],
                         provenance_text(confusion[confusion["mask"] == CONTROL]))
    archs = archs_in(confusion)
    for arch, number in diff_figure_numbers(archs).items():
        rows = confusion[(confusion["arch"] == arch)
                         & ((confusion["mask"] == CONTROL) | confusion["mask"].str.startswith(WITHOUT))]
        stem = FIGURES["confusion_diff"][0].format(number=number, arch=arch)
        paths += save_figure(confusion_diff_figure(confusion, arch, number, arch_names), out_dir, stem,
                             provenance_text(rows))
    return paths

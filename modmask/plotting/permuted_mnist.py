"""Figures of permuted MNIST transfer (paper Fig. 3 and 15 a, b), one per mask-init variant.

Each figure: the share of task t's weights that an earlier task used, for layers 2-4 after every
second task (the paper's panel); beside it how much of each layer earlier tasks had frozen when
task t started (what is left to learn with), and the accuracy of each task's network right after
its own training. Mean and standard deviation over seeds.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from ..analysis import mean_std
from .common import COLORS, check_tables, finish, grouped_bars, panels, provenance_text, save_figure

FIGURES = {  # variant -> (file stem, title)
    "normal": ("fig03_sharing_normal_init", "Fig. 3: permuted MNIST, new masks at the normal init"),
    "used2_new0": ("fig15_a_sharing_used2_new0", "Fig. 15a: used weights' logits start at 2, new ones at 0"),
    "used2_new-1": ("fig15_b_sharing_used2_new-1", "Fig. 15b: used weights' logits start at 2, new ones at -1"),
}
LAYERS = ("layers.1.weight", "layers.2.weight", "layers.3.weight")  # the paper's layers 2-4
COLUMNS = {  # table -> the columns the figures read
    "sharing": ("variant", "task", "layer", "layer_label", "shared_fraction"),
    "layers": ("variant", "task", "layer", "layer_label", "frozen_fraction"),
    "accuracy": ("variant", "task", "mask", "accuracy"),
}


def shown_tasks(tasks) -> list[int]:
    """Every second task after the first: 2, 4, ..., as in the paper."""
    return [t for t in sorted(set(int(t) for t in tasks)) if t > 0 and t % 2 == 0]


def _bars_by_layer(ax, df: pd.DataFrame, value: str, tasks: list[int], ylabel: str):
    stats = mean_std(df, ["task", "layer"], value).set_index(["task", "layer"])
    labels = {row.layer: row.layer_label for row in df.drop_duplicates("layer").itertuples()}
    layers = [layer for layer in LAYERS if layer in labels]
    series = {f"after task {t}": (np.array([stats.loc[(t, layer), "mean"] for layer in layers]),
                                  np.array([stats.loc[(t, layer), "std"] for layer in layers]))
              for t in tasks}
    grouped_bars(ax, [labels[layer] for layer in layers], series, ylabel, percent=True)
    ax.set_ylim(0, 105)


def variant_figure(sharing: pd.DataFrame, layers: pd.DataFrame, accuracy: pd.DataFrame, title: str):
    tasks = shown_tasks(sharing["task"])
    fig, axes = panels(3, width=4.0, height=3.0)
    _bars_by_layer(axes[0], sharing, "shared_fraction", tasks, "task's weights used by an earlier task")
    axes[0].set_title("sharing with earlier tasks")
    # capacity when task t started = frozen after task t - 1
    before = layers.assign(task=layers["task"] + 1)
    _bars_by_layer(axes[1], before[before["task"].isin(tasks)], "frozen_fraction", tasks,
                   "layer frozen by earlier tasks")
    axes[1].set_title("capacity used before the task")
    # the two lines often lie on each other: distinct markers and line styles, and a small sideways
    # offset, keep both visible
    styles = (("own_mask", "with its mask", "o", "-", -0.1), ("no_mask", "without mask", "s", "--", 0.1))
    for i, (mask, label, marker, line, shift) in enumerate(styles):
        stats = mean_std(accuracy[accuracy["mask"] == mask], ["task"], "accuracy").sort_values("task")
        color = COLORS[(i + 5) % len(COLORS)]
        axes[2].errorbar(stats["task"] + shift, stats["mean"] * 100, yerr=stats["std"] * 100, marker=marker,
                         ms=4, linestyle=line, color=color, label=label, capsize=2,
                         markerfacecolor=color if i == 0 else "white")
    axes[2].set_xlabel("task (permutation)")
    axes[2].set_ylabel("test accuracy [%]")
    axes[2].set_title("accuracy after its own training")
    axes[2].legend(fontsize=7, loc="best")
    return finish(fig, axes, title)


def build_all(tables: dict[str, pd.DataFrame], out_dir: str | Path) -> list[Path]:
    check_tables(tables, COLUMNS, "permuted MNIST")
    sharing, layers, accuracy = tables["sharing"], tables["layers"], tables["accuracy"]
    paths = []
    for variant in dict.fromkeys(sharing["variant"]):
        stem, title = FIGURES.get(variant, (f"sharing_{variant}", f"Permuted MNIST, mask init {variant}"))
        pick = [t[t["variant"] == variant] for t in (sharing, layers, accuracy)]
        fig = variant_figure(*pick, title)
        paths += save_figure(fig, out_dir, stem, provenance_text(*pick))
    return paths

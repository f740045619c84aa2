"""Figure of the Mathematics Dataset experiment (paper Fig. 5).

Per task, the hard-level test accuracy (exact answer match) of the network trained on all levels:
without a mask, through the control mask (trained on all levels) and through the mask trained on the
easy level only. Bars are means over seeds with standard-deviation error bars (no error bar where
only one seed ran). The numbers come from the pure function ``modmask.analysis.mathematics.level_accuracy_stats``,
so that they can be checked without reading pixels.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from ..analysis.mathematics import COLUMNS  # noqa: F401 (what scripts/figures.py reads)
from ..analysis.mathematics import CONDITIONS, LEVEL, level_rows, checked_accuracy, level_accuracy_stats, task_label
from .common import COLORS, finish, panels, provenance_text, save_figure

FIGURE = ("fig05_mathematics", "Fig. 5: Mathematics Dataset, {level} test accuracy")


def accuracy_figure(accuracy: pd.DataFrame, level: str = LEVEL):
    """Paper Fig. 5: per task, bars for no mask, the control mask and the easy mask (accuracy on ``level``)."""
    stats = level_accuracy_stats(accuracy, level)
    tasks = list(dict.fromkeys(stats["task"]))
    if not tasks:
        raise ValueError("Mathematics 'accuracy' table has no rows")
    fig, axes = panels(1, width=max(4.2, 1.3 * len(tasks) + 1.2), height=3.2)
    ax = axes[0]
    by = stats.set_index(["task", "mask"])
    x = np.arange(len(tasks))
    width = 0.8 / len(CONDITIONS)
    for i, (mask, label) in enumerate(CONDITIONS.items()):
        mean = np.array([by.loc[(t, mask), "mean"] for t in tasks], dtype=float) * 100
        std = np.array([by.loc[(t, mask), "std"] for t in tasks], dtype=float) * 100
        pos = x - 0.4 + width * (i + 0.5)
        ax.bar(pos, mean, width, label=label, color=COLORS[i % len(COLORS)])
        has_bar = ~np.isnan(std)
        if has_bar.any():
            ax.errorbar(pos[has_bar], mean[has_bar], yerr=std[has_bar], fmt="none", ecolor="black",
                        elinewidth=0.8, capsize=2)
        for j in np.flatnonzero(np.isnan(mean)):
            ax.text(pos[j], 1, "n/a", ha="center", va="bottom", fontsize=6, color="#666666")
    ax.set_xticks(x)
    ax.set_xticklabels([task_label(t) for t in tasks])
    ax.set_ylabel(f"{level} test accuracy [%]")
    ax.set_xlabel("task")
    ax.set_ylim(0, 105)
    return finish(fig, axes, FIGURE[1].format(level=level))


def build_all(tables: dict[str, pd.DataFrame], out_dir: str | Path, level: str = LEVEL) -> list[Path]:
    """Fig. 5 as PDF and PNG in ``out_dir`` from the ``accuracy`` table (every task and seed)."""
    if "accuracy" not in tables or tables["accuracy"] is None:
        raise ValueError(f"Mathematics figures need the 'accuracy' table, but only got: {sorted(tables)}")
    accuracy = checked_accuracy(tables["accuracy"])
    return save_figure(accuracy_figure(accuracy, level), out_dir, FIGURE[0], provenance_text(level_rows(accuracy, level)))

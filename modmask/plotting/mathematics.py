"""Figure of the Mathematics Dataset experiment (paper Fig. 5).

Per task, the hard-level test accuracy (exact answer match) of the network trained on all levels:
without a mask, through the control mask (trained on all levels) and through the mask trained on the
easy level only. Bars are means over seeds with standard-deviation error bars (no error bar where
only one seed ran). The numbers come from the pure function :func:`level_accuracy_stats`, so that
they can be checked without reading pixels.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from .common import COLORS, finish, mean_std, panels, provenance_text, save_figure

# task -> short label, in the paper's order
TASK_LABELS = {"arithmetic__add_or_sub": "add_or_sub", "algebra__linear_1d": "linear_1d",
               "calculus__differentiate": "differentiate", "comparison__sort": "sort",
               "polynomials__collect": "collect"}
# mask -> legend label, in bar order
CONDITIONS = {"none": "no mask", "control": "control mask (all levels)", "easy": "mask trained on easy only"}
ACCURACY_COLUMNS = ("task", "seed", "mask", "test_level", "accuracy")
COLUMNS = {"accuracy": ACCURACY_COLUMNS}  # table -> what the figure reads
LEVEL = "hard"
FIGURE = ("fig05_mathematics", "Fig. 5: Mathematics Dataset, {level} test accuracy")


def task_label(task: str) -> str:
    """A short label: the paper's five tasks by name, any other task by the part after its module prefix."""
    return TASK_LABELS.get(task, task.split("__")[-1])


def _checked(accuracy: pd.DataFrame) -> pd.DataFrame:
    missing = [c for c in ACCURACY_COLUMNS if c not in accuracy.columns]
    if missing:
        raise ValueError(f"Mathematics 'accuracy' table lacks column(s) {missing}; it has {list(accuracy.columns)}")
    return accuracy.astype({c: str for c in ("task", "mask", "test_level")})


def tasks_in_order(accuracy: pd.DataFrame) -> list[str]:
    """The tasks present: the paper's five in its order, then any others in order of appearance."""
    present = list(dict.fromkeys(accuracy["task"].astype(str)))
    return [t for t in TASK_LABELS if t in present] + [t for t in present if t not in TASK_LABELS]


def _rows(accuracy: pd.DataFrame, level: str) -> pd.DataFrame:
    return accuracy[(accuracy["test_level"] == level) & accuracy["mask"].isin(list(CONDITIONS))]


def level_accuracy_stats(accuracy: pd.DataFrame, level: str = LEVEL) -> pd.DataFrame:
    """Fig. 5's numbers: one row per (task, mask) with the accuracy on ``level``'s test set over seeds.

    Columns task, label, mask, mean, std, count. Tasks as :func:`tasks_in_order`, masks none, control,
    easy. ``std`` is the sample standard deviation over seeds, NaN where fewer than two seeds ran
    (no error bar); a (task, mask) that never ran has NaN mean and count 0.
    """
    accuracy = _checked(accuracy)
    rows = _rows(accuracy, level)
    index = pd.MultiIndex.from_product([tasks_in_order(accuracy), list(CONDITIONS)], names=["task", "mask"])
    if len(rows):
        stats = mean_std(rows, ["task", "mask"], "accuracy").set_index(["task", "mask"])[["mean", "std", "count"]]
    else:
        stats = pd.DataFrame(columns=["mean", "std", "count"], index=index, dtype=float)
    out = stats.reindex(index).reset_index()
    out["count"] = out["count"].fillna(0).astype(int)
    out.loc[out["count"] < 2, "std"] = np.nan
    out.insert(1, "label", out["task"].map(task_label))
    return out


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
    accuracy = _checked(tables["accuracy"])
    return save_figure(accuracy_figure(accuracy, level), out_dir, FIGURE[0], provenance_text(_rows(accuracy, level)))

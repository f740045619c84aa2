"""The numbers of the Mathematics Dataset experiment (paper Fig. 5), from its accuracy table: per task, the
test accuracy (exact answer match) of the network without a mask, through the control mask (trained on all
levels) and through the mask trained on the easy level only, over seeds."""
from __future__ import annotations

import numpy as np
import pandas as pd

from . import mean_std

# task -> short label, in the paper's order
TASK_LABELS = {"arithmetic__add_or_sub": "add_or_sub", "algebra__linear_1d": "linear_1d",
               "calculus__differentiate": "differentiate", "comparison__sort": "sort",
               "polynomials__collect": "collect"}
# mask -> legend label, in bar order
CONDITIONS = {"none": "no mask", "control": "control mask (all levels)", "easy": "mask trained on easy only"}
ACCURACY_COLUMNS = ("task", "seed", "mask", "test_level", "accuracy")
COLUMNS = {"accuracy": ACCURACY_COLUMNS}  # table -> what the figure reads
LEVEL = "hard"


def task_label(task: str) -> str:
    """A short label: the paper's five tasks by name, any other task by the part after its module prefix."""
    return TASK_LABELS.get(task, task.split("__")[-1])


def checked_accuracy(accuracy: pd.DataFrame) -> pd.DataFrame:
    missing = [c for c in ACCURACY_COLUMNS if c not in accuracy.columns]
    if missing:
        raise ValueError(f"Mathematics 'accuracy' table lacks column(s) {missing}; it has {list(accuracy.columns)}")
    return accuracy.astype({c: str for c in ("task", "mask", "test_level")})


def tasks_in_order(accuracy: pd.DataFrame) -> list[str]:
    """The tasks present: the paper's five in its order, then any others in order of appearance."""
    present = list(dict.fromkeys(accuracy["task"].astype(str)))
    return [t for t in TASK_LABELS if t in present] + [t for t in present if t not in TASK_LABELS]


def level_rows(accuracy: pd.DataFrame, level: str) -> pd.DataFrame:
    return accuracy[(accuracy["test_level"] == level) & accuracy["mask"].isin(list(CONDITIONS))]


def level_accuracy_stats(accuracy: pd.DataFrame, level: str = LEVEL) -> pd.DataFrame:
    """Fig. 5's numbers: one row per (task, mask) with the accuracy on ``level``'s test set over seeds.

    Columns task, label, mask, mean, std, count. Tasks as :func:`tasks_in_order`, masks none, control,
    easy. ``std`` is the sample standard deviation over seeds, NaN where fewer than two seeds ran
    (no error bar); a (task, mask) that never ran has NaN mean and count 0.
    """
    accuracy = checked_accuracy(accuracy)
    rows = level_rows(accuracy, level)
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

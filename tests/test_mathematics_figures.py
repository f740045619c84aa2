"""Mathematics Dataset figure (paper Fig. 5): the numbers behind each bar against hand-computed means and
standard deviations over seeds, the bars and error bars drawn, the files written, missing tables or columns."""
import math

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest

from frames import cell
from modmask.analysis import mathematics as math_numbers
from modmask.plotting import mathematics as fig5

TASKS = ["polynomials__collect", "arithmetic__add_or_sub", "calculus__differentiate"]  # not the paper's order
SEEDS = [0, 4]  # seed 4 adds 0.1
TASK_OFFSET = {"polynomials__collect": 0.1, "arithmetic__add_or_sub": 0.5, "calculus__differentiate": 0.3}
MASK_OFFSET = {"none": 0.3, "control": 0.25, "easy": 0.0}
LEVEL_OFFSET = {"easy": 0.15, "medium": 0.05, "hard": 0.0}
PROVENANCE = {"experiment": "mathematics", "scale": "smoke", "config_hash": "abc", "code_version": "v0"}


def make_accuracy() -> pd.DataFrame:
    rows = []
    for task in TASKS:
        for i, seed in enumerate(SEEDS):
            for mask, m in MASK_OFFSET.items():
                for level, lv in LEVEL_OFFSET.items():
                    total = 1000
                    correct = int(round((TASK_OFFSET[task] + m + lv + 0.1 * i) * total))
                    rows.append({**PROVENANCE, "task": task, "seed": seed, "mask": mask, "test_level": level,
                                 "correct": correct, "total": total, "accuracy": correct / total})
    return pd.DataFrame(rows).sample(frac=1.0, random_state=0).reset_index(drop=True)  # order must not matter


def test_stats_are_hand_computed_means_and_stds_over_seeds():
    stats = math_numbers.level_accuracy_stats(make_accuracy())
    # the paper's task order, then masks none, control, easy
    assert list(dict.fromkeys(stats["task"])) == ["arithmetic__add_or_sub", "calculus__differentiate",
                                                  "polynomials__collect"]
    assert list(dict.fromkeys(stats["label"])) == ["add_or_sub", "differentiate", "collect"]
    assert list(stats["mask"][:3]) == ["none", "control", "easy"] and len(stats) == 9
    # add_or_sub, hard, no mask: 0.5 + 0.3 = 0.8 and 0.9
    row = cell(stats, task="arithmetic__add_or_sub", mask="none")
    assert (row["mean"], row["std"], row["count"]) == pytest.approx((0.85, 0.1 / math.sqrt(2), 2))
    # collect, hard, easy mask: 0.1 and 0.2
    assert cell(stats, task="polynomials__collect", mask="easy")["mean"] == pytest.approx(0.15)
    # differentiate, control mask: 0.55 and 0.65
    assert cell(stats, task="calculus__differentiate", mask="control")["mean"] == pytest.approx(0.6)
    # another level: easy-level accuracy of add_or_sub's easy mask: 0.65 and 0.75
    easy = math_numbers.level_accuracy_stats(make_accuracy(), level="easy")
    assert cell(easy, task="arithmetic__add_or_sub", mask="easy")["mean"] == pytest.approx(0.7)


def test_one_seed_has_no_std_and_a_missing_run_is_nan():
    accuracy = make_accuracy()
    one_seed = accuracy[accuracy["seed"] == 0]
    gone = (one_seed["task"] == "calculus__differentiate") & (one_seed["mask"] == "easy")
    stats = math_numbers.level_accuracy_stats(one_seed[~gone])
    row = cell(stats, task="arithmetic__add_or_sub", mask="none")
    assert row["mean"] == pytest.approx(0.8) and row["count"] == 1 and math.isnan(row["std"])
    row = cell(stats, task="calculus__differentiate", mask="easy")
    assert math.isnan(row["mean"]) and row["count"] == 0
    fig = fig5.accuracy_figure(one_seed[~gone])
    ax = fig.axes[0]
    heights = [p.get_height() for p in ax.patches]
    assert np.isnan(heights[7]) and not np.isnan(heights[6])  # easy series, second task
    assert not [c for c in ax.containers if type(c).__name__ == "ErrorbarContainer"]  # one seed: no error bars
    assert [t.get_text() for t in ax.texts] == ["n/a"]
    plt.close(fig)


def test_bars_are_the_means_in_percent_with_error_bars():
    fig = fig5.accuracy_figure(make_accuracy())
    ax = fig.axes[0]
    assert fig._suptitle.get_text() == "Fig. 5: Mathematics Dataset, hard test accuracy"
    assert [t.get_text() for t in ax.get_xticklabels()] == ["add_or_sub", "differentiate", "collect"]
    # series none, control, easy; groups add_or_sub (0.5), differentiate (0.3), collect (0.1); + 0.05 mean offset
    np.testing.assert_allclose([p.get_height() for p in ax.patches],
                               [85, 65, 45, 80, 60, 40, 55, 35, 15])
    bars = [c for c in ax.containers if type(c).__name__ == "ErrorbarContainer"]
    assert len(bars) == 3
    segments = bars[0].lines[2][0].get_segments()  # the no-mask series' error bars
    np.testing.assert_allclose([s[1][1] - s[0][1] for s in segments], [2 * 10 / math.sqrt(2)] * 3)
    np.testing.assert_allclose([(s[0][1] + s[1][1]) / 2 for s in segments], [85, 65, 45])
    assert [t.get_text() for t in fig.legends[0].get_texts()] == list(math_numbers.CONDITIONS.values())
    assert ax.get_ylim() == (0, 105)
    plt.close(fig)


def test_task_labels():
    assert [math_numbers.task_label(t) for t in math_numbers.TASK_LABELS] == ["add_or_sub", "linear_1d", "differentiate", "sort",
                                                              "collect"]
    assert math_numbers.task_label("numbers__gcd") == "gcd" and math_numbers.task_label("reverse") == "reverse"


def test_build_all_writes_the_two_files(tmp_path):
    paths = fig5.build_all({"accuracy": make_accuracy()}, tmp_path)
    expected = {tmp_path / f"fig05_mathematics.{ext}" for ext in ("pdf", "png")}
    assert set(paths) == expected and set(tmp_path.iterdir()) == expected
    for path in paths:
        assert path.read_bytes()[:8].startswith(b"%PDF" if path.suffix == ".pdf" else b"\x89PNG")
        assert path.stat().st_size > 1000


def test_missing_table_or_column_is_named(tmp_path):
    with pytest.raises(ValueError, match="accuracy"):
        fig5.build_all({}, tmp_path)
    with pytest.raises(ValueError, match="accuracy.*test_level"):
        fig5.build_all({"accuracy": make_accuracy().drop(columns="test_level")}, tmp_path)
    assert not list(tmp_path.iterdir())

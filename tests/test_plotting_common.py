"""Shared bar-chart helper: error bars of percentages stay inside 0-100%, one-seed bars get none."""
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

import pandas as pd  # noqa: E402

from modmask.plotting.common import grouped_bars, provenance_text  # noqa: E402


def error_segments(ax):
    return [seg for coll in ax.collections for seg in coll.get_segments()]


def test_percent_error_bars_are_clipped_at_0_and_100():
    fig, ax = plt.subplots()
    # 74.9 +- 34.7 would reach 109.6; 10 +- 20 would reach -10; 50 +- 5 stays as it is
    grouped_bars(ax, ["a", "b", "c"], {"s": (np.array([0.749, 0.10, 0.50]), np.array([0.347, 0.20, 0.05]))},
                 "accuracy", percent=True)
    segments = sorted(error_segments(ax), key=lambda seg: seg[0][0])
    spans = [(min(seg[:, 1]), max(seg[:, 1])) for seg in segments]
    assert np.allclose(spans, [(74.9 - 34.7, 100.0), (0.0, 30.0), (45.0, 55.0)])
    plt.close(fig)


def test_unclipped_values_and_one_seed_series():
    fig, ax = plt.subplots()
    grouped_bars(ax, ["a"], {"s": (np.array([2.0]), np.array([3.0]))}, "loss")  # not a percentage: as is
    (segment,) = error_segments(ax)
    assert np.allclose(sorted(segment[:, 1]), [-1.0, 5.0])
    plt.close(fig)
    fig, ax = plt.subplots()
    grouped_bars(ax, ["a", "b"], {"one seed": (np.array([0.5, 0.9]), np.array([np.nan, 0.0]))}, "x", percent=True)
    assert error_segments(ax) == []
    assert [round(p.get_height(), 6) for p in ax.patches] == [50.0, 90.0]
    plt.close(fig)


def test_footer_says_mean_and_std_only_for_several_seeds():
    one = pd.DataFrame({"scale": ["quick"] * 2, "seed": [3, 3], "config_hash": ["abc"] * 2, "code_version": ["v1"] * 2})
    assert provenance_text(one) == "scale quick · 1 seed · config abc · code v1"
    two = one.assign(seed=[0, 1])
    assert "2 seeds (mean ± std)" in provenance_text(two)
    assert "3 seeds (mean ± std)" in provenance_text(two, one)  # seeds counted across the tables

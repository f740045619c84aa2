"""Distribution of the mask probabilities after training (paper Fig. 7)."""
from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from .common import COLORS, arch_name, check_tables, provenance_text, save_figure

NEAR_ZERO = 0.05  # the linear-scale panels drop probabilities below this; almost all weights sit there
EXPERIMENT_NAMES = {"addmul": "add/mul", "double_add": "double addition"}
COLUMNS = {"histogram": ("experiment", "arch", "bin_left", "bin_right", "count")}  # what the figure reads


def fig7_histogram(histogram: pd.DataFrame):
    """Counts summed over every trained mask and seed of each (experiment, architecture)."""
    groups = list(dict.fromkeys(zip(histogram["experiment"], histogram["arch"])))
    fig, axes = plt.subplots(2, len(groups), figsize=(2.9 * len(groups), 4.6), squeeze=False)
    for col, (experiment, arch) in enumerate(groups):
        df = histogram[(histogram["experiment"] == experiment) & (histogram["arch"] == arch)]
        counts = df.groupby(["bin_left", "bin_right"], as_index=False)["count"].sum().sort_values("bin_left")
        left, width = counts["bin_left"].to_numpy(), (counts["bin_right"] - counts["bin_left"]).to_numpy()
        values = counts["count"].to_numpy().astype(float)
        share = values / max(values.sum(), 1)
        color = COLORS[col % len(COLORS)]
        keep = left >= NEAR_ZERO
        axes[0][col].bar(left[keep], share[keep] * 100, width[keep], align="edge", color=color)
        axes[0][col].set_title(f"{EXPERIMENT_NAMES.get(experiment, experiment)}, {arch_name(arch)}", fontsize=9)
        axes[1][col].bar(left, np.where(share > 0, share * 100, np.nan), width, align="edge", color=color)
        axes[1][col].set_yscale("log")
        for ax in (axes[0][col], axes[1][col]):
            ax.set_xlim(0, 1)
        axes[1][col].set_xlabel("sigmoid(logit)")
        middle = share[(left >= 0.1) & (left < 0.9)].sum() * 100
        axes[1][col].text(0.5, 0.9, f"{middle:.2f}% in [0.1, 0.9)", transform=axes[1][col].transAxes,
                          ha="center", fontsize=7)
    axes[0][0].set_ylabel(f"% of weights (p ≥ {NEAR_ZERO})")
    axes[1][0].set_ylabel("% of weights, log scale")
    fig.suptitle("Fig. 7: distribution of the mask probabilities sigmoid(logit) after training", fontsize=10)
    fig.tight_layout()
    return fig


def build_all(tables: dict[str, pd.DataFrame], out_dir: str | Path) -> list[Path]:
    """Fig. 7 from ``tables["histogram"]``: every experiment's histogram table, concatenated."""
    check_tables(tables, COLUMNS, "mask probability histogram")
    histogram = tables["histogram"]
    return save_figure(fig7_histogram(histogram), out_dir, "fig07_mask_probability_histogram",
                       provenance_text(histogram))

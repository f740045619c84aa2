"""Sensitivity figures of the add/mul experiment (paper Fig. 8: beta; Fig. 9: network size)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from ..analysis import mean_std
from ..metrics import TOTAL
from .common import (COLORS, arch_name, check_tables, finish, grouped_bars, panels, provenance_text,
                     save_figure)

OP_NAMES = {"add": "addition", "mul": "multiplication"}
COLUMNS = {  # table -> the columns the figures read
    "sharing": ("arch", "beta", "mask", "layer", "shared_fraction"),
    "accuracy": ("arch", "beta", "mask", "inverted", "operation", "accuracy"),
    "layers": ("arch", "layer", "size"),
}


def _beta_rows(df: pd.DataFrame) -> pd.DataFrame:
    """Rows of architectures swept over several beta values."""
    swept = df.groupby("arch")["beta"].nunique()
    return df[df["arch"].isin(swept[swept > 1].index)]


def _size_rows(df: pd.DataFrame) -> pd.DataFrame:
    """Rows at the beta that every architecture was trained with (the size sweep)."""
    common = set.intersection(*(set(g) for _, g in df.groupby("arch")["beta"]))
    if not common:
        raise ValueError("no beta value is shared by all swept architectures; cannot compare sizes")
    beta = sorted(common)[len(common) // 2]
    return df[df["beta"] == beta]


def _network_sizes(layers: pd.DataFrame) -> dict[str, int]:
    totals = layers[layers["layer"] == TOTAL].drop_duplicates("arch")
    return dict(zip(totals["arch"], totals["size"]))


def _arch_label(arch: str, sizes: dict[str, int]) -> str:
    n = sizes.get(arch)
    if n is None:
        return arch_name(arch)
    return f"{arch_name(arch)} ({n / 1e6:.2f}M weights)" if n >= 1e5 else f"{arch_name(arch)} ({n / 1e3:.0f}k weights)"


def fig8_beta(sharing: pd.DataFrame, accuracy: pd.DataFrame, layers: pd.DataFrame):
    sharing, accuracy = _beta_rows(sharing), _beta_rows(accuracy)
    sizes = _network_sizes(layers)
    archs = sorted(set(sharing["arch"]), key=lambda a: -sizes.get(a, 0))
    fig, (ax_share, ax_acc) = panels(2, width=4.6)
    total = sharing[sharing["layer"] == TOTAL]
    own = accuracy[(~accuracy["inverted"]) & (accuracy["mask"] == accuracy["operation"])]
    if "split" in own:
        own = own[own["split"] == "train"]
    for i, arch in enumerate(archs):
        for j, op in enumerate(("add", "mul")):
            style = dict(color=COLORS[i], linestyle="-" if op == "add" else "--", marker="o", markersize=3,
                         label=f"{_arch_label(arch, sizes)}, {OP_NAMES[op]} mask", capsize=2)
            s = mean_std(total[(total["arch"] == arch) & (total["mask"] == op)], ["beta"], "shared_fraction")
            s = s.sort_values("beta")
            ax_share.errorbar(s["beta"], s["mean"] * 100, yerr=s["std"] * 100, **style)
            a = mean_std(own[(own["arch"] == arch) & (own["mask"] == op)], ["beta"], "accuracy").sort_values("beta")
            ax_acc.errorbar(a["beta"], a["mean"] * 100, yerr=a["std"] * 100, **style)
    for ax, label in ((ax_share, "total weights shared [%]"), (ax_acc, "accuracy on its own operation [%]")):
        ax.set_xscale("log")
        ax.set_xlabel("β (regularisation strength)")
        ax.set_ylabel(label)
        ax.set_ylim(0, 105)
        ax.grid(True, which="both", alpha=0.3)
    ax_share.set_title("sharing between the operations")
    ax_acc.set_title("accuracy")
    return finish(fig, [ax_acc], "Fig. 8: sensitivity to β (add/mul FNN)")


def fig9_size(sharing: pd.DataFrame, layers: pd.DataFrame):
    sharing = _size_rows(sharing)
    beta = sharing["beta"].iloc[0]
    sharing = sharing[sharing["layer"] == TOTAL]
    sizes = _network_sizes(layers)
    archs = sorted(set(sharing["arch"]), key=lambda a: sizes.get(a, 0))
    fig, axes = panels(1, width=5.0)
    series = {}
    for op in ("add", "mul"):
        stats = mean_std(sharing[sharing["mask"] == op], ["arch"], "shared_fraction").set_index("arch")
        series[f"{OP_NAMES[op]} mask"] = (np.array([stats.loc[a, "mean"] for a in archs]),
                                          np.array([stats.loc[a, "std"] for a in archs]))
    grouped_bars(axes[0], [_arch_label(a, sizes).replace(" (", "\n(") for a in archs], series,
                 "total weights shared", percent=True, annotate=True)
    axes[0].set_ylim(0, 105)
    axes[0].tick_params(axis="x", labelsize=7)
    return finish(fig, axes, f"Fig. 9: sharing between addition and multiplication vs network size (β = {beta:g})")


def build_all(tables: dict[str, pd.DataFrame], out_dir: str | Path) -> list[Path]:
    check_tables(tables, COLUMNS, "sweep")
    footer = provenance_text(tables["sharing"])
    paths = []
    paths += save_figure(fig8_beta(tables["sharing"], tables["accuracy"], tables["layers"]), out_dir,
                         "fig08_beta_sensitivity", footer)
    paths += save_figure(fig9_size(tables["sharing"], tables["layers"]), out_dir, "fig09_network_size", footer)
    return paths

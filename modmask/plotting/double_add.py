"""Figures of the double-addition experiment (paper Fig. 2, 13, 14)."""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from .common import (SHARING_PANEL_COLUMNS, arch_name, check_tables, condition_panel, finish, panels, provenance_text,
                     save_figure, sharing_panel)

CONDITIONS = [("none", False, "no mask"), ("all", False, "full-task\nmask"), ("pair1", False, "pair-1\nmask"),
              ("pair1", True, "pair-1 mask\ninverted"), ("pair2", False, "pair-2\nmask"),
              ("pair2", True, "pair-2 mask\ninverted")]
PAIR_SERIES = {1: "accuracy on pair 1 (a+b)", 2: "accuracy on pair 2 (c+d)"}
SHARING_SERIES = {"pair1": "pair-1 mask", "pair2": "pair-2 mask"}
SEQUENTIAL = "lstm_seq"
COLUMNS = {  # table -> the columns the figures read
    "accuracy": ("arch", "mask", "inverted", "pair", "accuracy"),
    "sharing": ("arch", *SHARING_PANEL_COLUMNS),
}


def _main_archs(df: pd.DataFrame) -> list[str]:
    return [a for a in dict.fromkeys(df["arch"]) if a != SEQUENTIAL]


def fig2_accuracy(accuracy: pd.DataFrame):
    archs = _main_archs(accuracy)
    fig, axes = panels(len(archs), width=5.0)
    for ax, arch in zip(axes, archs):
        condition_panel(ax, accuracy[accuracy["arch"] == arch], CONDITIONS, "pair", PAIR_SERIES)
        ax.set_title(arch_name(arch))
    return finish(fig, axes, "Fig. 2: double addition: accuracy on each pair with each mask and its inverse")


def fig13_sharing(sharing: pd.DataFrame):
    archs = _main_archs(sharing)
    fig, axes = panels(len(archs))
    for ax, arch in zip(axes, archs):
        sharing_panel(ax, sharing[sharing["arch"] == arch], SHARING_SERIES)
        ax.set_title(f"{arch_name(arch)}: sharing between the two pairs")
    return finish(fig, axes, "Fig. 13: double addition: share of each pair's weights also used by the other pair")


def fig14_sequential(accuracy: pd.DataFrame, sharing: pd.DataFrame):
    fig, axes = panels(2, width=5.0)
    condition_panel(axes[0], accuracy[accuracy["arch"] == SEQUENTIAL], CONDITIONS, "pair", PAIR_SERIES)
    axes[0].set_title("accuracy")
    axes[0].legend(loc="upper right")
    sharing_panel(axes[1], sharing[sharing["arch"] == SEQUENTIAL], SHARING_SERIES)
    axes[1].set_title("sharing per layer")
    axes[1].legend(loc="upper center")
    return finish(fig, axes, "Fig. 14: LSTM given one pair at a time (pair 1 in steps 1-3, pair 2 in steps 4-6)",
                  legend=False)


def build_all(tables: dict[str, pd.DataFrame], out_dir: str | Path) -> list[Path]:
    check_tables(tables, COLUMNS, "double addition")
    footer = provenance_text(tables["accuracy"], tables["sharing"])
    paths = []
    paths += save_figure(fig2_accuracy(tables["accuracy"]), out_dir, "fig02_accuracy_masks_inverted", footer)
    paths += save_figure(fig13_sharing(tables["sharing"]), out_dir, "fig13_sharing_per_layer", footer)
    if SEQUENTIAL in set(tables["accuracy"]["arch"]):
        paths += save_figure(fig14_sequential(tables["accuracy"], tables["sharing"]), out_dir,
                             "fig14_lstm_one_pair_at_a_time", footer)
    return paths

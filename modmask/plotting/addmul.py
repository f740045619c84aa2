"""Figures of the addition / multiplication experiment (paper Fig. 1, 10, 11, 12)."""
from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from ..metrics import TOTAL
from .common import (SHARING_PANEL_COLUMNS, arch_name, check_tables, condition_panel, finish, grouped_bars, layer_order,
                     mean_std, panels, provenance_text, save_figure, sharing_panel)

OP_NAMES = {"add": "addition", "mul": "multiplication", "all": "full task (control)", "none": "no mask"}
MAIN_ARCHS = ("fnn", "lstm")
COLUMNS = {  # table -> the columns the figures read
    "sharing": ("arch", *SHARING_PANEL_COLUMNS),
    "accuracy": ("arch", "split", "mask", "inverted", "operation", "accuracy"),
    "layers": ("arch", "seed", "mask", "layer", "layer_index", "layer_label", "kept"),
    "confusion": ("arch", "mask", "inverted", "operation", "outcome", "fraction"),
}


def _archs(df: pd.DataFrame) -> list[str]:
    present = list(dict.fromkeys(df["arch"]))
    return [a for a in MAIN_ARCHS if a in present] or present


def fig1_sharing(sharing: pd.DataFrame):
    """Shared fraction per layer of the addition and multiplication masks (paper Fig. 1)."""
    archs = _archs(sharing)
    fig, axes = panels(len(archs))
    for ax, arch in zip(axes, archs):
        sharing_panel(ax, sharing[sharing["arch"] == arch], {m: f"{OP_NAMES[m]} mask" for m in ("add", "mul")})
        ax.set_title(f"{arch_name(arch)}: sharing between operations")
    return finish(fig, axes, "Fig. 1: share of each operation's weights also used by the other operation")


ACCURACY_CONDITIONS = [("none", False, "no mask"), ("all", False, "full-task\nmask"), ("add", False, "add\nmask"),
                       ("add", True, "add mask\ninverted"), ("mul", False, "mul\nmask"),
                       ("mul", True, "mul mask\ninverted")]


def fig10_accuracy(accuracy: pd.DataFrame, split: str = "train"):
    """Accuracy on each operation with each mask and inverted mask (paper Fig. 10)."""
    archs = _archs(accuracy)
    fig, axes = panels(len(archs), width=5.0)
    df_all = accuracy[accuracy["split"] == split]
    for ax, arch in zip(axes, archs):
        condition_panel(ax, df_all[df_all["arch"] == arch], ACCURACY_CONDITIONS, "operation",
                        {op: f"accuracy on {OP_NAMES[op]}" for op in ("add", "mul")})
        ax.set_title(f"{arch_name(arch)}")
    return finish(fig, axes, "Fig. 10: accuracy with each mask and its inverse")


def mul_add_ratio(layers: pd.DataFrame, arch: str) -> pd.Series:
    """Per seed: weights kept by the multiplication mask / by the addition mask."""
    totals = layers[(layers["arch"] == arch) & (layers["layer"] == TOTAL)]
    per_seed = totals.pivot_table(index="seed", columns="mask", values="kept")
    return per_seed["mul"] / per_seed["add"]


def fig11_weights(layers: pd.DataFrame):
    """Weights kept per layer by the addition and multiplication masks (paper Fig. 11)."""
    archs = _archs(layers)
    fig, axes = panels(len(archs))
    for ax, arch in zip(axes, archs):
        df = layers[(layers["arch"] == arch) & (layers["layer"] != TOTAL)]
        order = layer_order(df)
        stats = mean_std(df, ["mask", "layer"], "kept").set_index(["mask", "layer"])
        series = {f"{OP_NAMES[m]} mask": (np.array([stats.loc[(m, layer), "mean"] for layer, _ in order]),
                                          np.array([stats.loc[(m, layer), "std"] for layer, _ in order]))
                  for m in ("add", "mul")}
        grouped_bars(ax, [label for _, label in order], series, "weights kept")
        ax.set_yscale("log")
        ratio = mul_add_ratio(layers, arch)
        spread = ratio.std(ddof=1) if len(ratio) > 1 else 0.0
        ax.set_title(f"{arch_name(arch)}: mul keeps {ratio.mean():.2f}× (± {spread:.2f}) the weights of add", fontsize=9)
        ax.tick_params(axis="x", labelsize=7)
    return finish(fig, axes, "Fig. 11: weights used by each operation, per layer")


def fig12_confusion(confusion: pd.DataFrame):
    """What the network answers with each operation's mask (paper Fig. 12)."""
    archs = _archs(confusion)
    masks = ["add", "mul"]
    fig, axes = plt.subplots(len(archs), len(masks), figsize=(3.6 * len(masks), 2.2 * len(archs)), squeeze=False)
    outcomes = ["add_result", "mul_result", "neither"]
    outcome_labels = ["= add result", "= mul result", "neither"]
    df_all = confusion[~confusion["inverted"]]
    for row, arch in enumerate(archs):
        for col, mask in enumerate(masks):
            ax = axes[row][col]
            df = df_all[(df_all["arch"] == arch) & (df_all["mask"] == mask)]
            stats = mean_std(df, ["operation", "outcome"], "fraction").set_index(["operation", "outcome"])
            matrix = np.array([[stats.loc[(op, o), "mean"] for o in outcomes] for op in ("add", "mul")])
            spread = np.array([[stats.loc[(op, o), "std"] for o in outcomes] for op in ("add", "mul")])
            ax.imshow(matrix * 100, vmin=0, vmax=100, cmap="Blues")
            for i in range(2):
                for j in range(3):
                    ax.text(j, i, f"{matrix[i, j] * 100:.0f}±{spread[i, j] * 100:.0f}%", ha="center", va="center",
                            fontsize=8, color="white" if matrix[i, j] > 0.6 else "black")
            ax.set_xticks(range(3))
            ax.set_xticklabels(outcome_labels, fontsize=7)
            ax.set_yticks(range(2))
            ax.set_yticklabels(["asked to add", "asked to multiply"], fontsize=7)
            ax.grid(False)
            ax.set_title(f"{arch_name(arch)}, {OP_NAMES[mask]} mask", fontsize=9)
    return finish(fig, axes, "Fig. 12: which operation the masked network performs")


def build_all(tables: dict[str, pd.DataFrame], out_dir: str | Path) -> list[Path]:
    check_tables(tables, COLUMNS, "add/mul")
    footer = provenance_text(*tables.values())
    paths = []
    paths += save_figure(fig1_sharing(tables["sharing"]), out_dir, "fig01_sharing_per_layer", footer)
    paths += save_figure(fig10_accuracy(tables["accuracy"]), out_dir, "fig10_accuracy_masks_inverted", footer)
    paths += save_figure(fig11_weights(tables["layers"]), out_dir, "fig11_weights_per_layer", footer)
    paths += save_figure(fig12_confusion(tables["confusion"]), out_dir, "fig12_operation_confusion", footer)
    return paths

"""Figures of the addition / multiplication experiment (paper Fig. 1, 10, 11, 12)."""
from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from ..metrics import TOTAL
from .common import COLORS, arch_name, grouped_bars, mean_std, provenance_text, save_figure

OP_NAMES = {"add": "addition", "mul": "multiplication", "all": "full task (control)", "none": "no mask"}


def _archs(df: pd.DataFrame) -> list[str]:
    return list(dict.fromkeys(df["arch"]))


def _layer_order(df: pd.DataFrame) -> list[tuple[str, str]]:
    layers = df.drop_duplicates("layer").sort_values("layer_index")
    return [(row.layer, "all layers" if row.layer == TOTAL else row.layer_label) for row in layers.itertuples()]


def _panels(n: int, width: float = 4.2, height: float = 3.0):
    fig, axes = plt.subplots(1, n, figsize=(width * n, height), squeeze=False)
    return fig, axes[0]


def fig1_sharing(sharing: pd.DataFrame):
    """Shared fraction per layer of the addition and multiplication masks (paper Fig. 1)."""
    archs = _archs(sharing)
    fig, axes = _panels(len(archs))
    for ax, arch in zip(axes, archs):
        df = sharing[sharing["arch"] == arch]
        layers = _layer_order(df)
        stats = mean_std(df, ["mask", "layer"], "shared_fraction").set_index(["mask", "layer"])
        series = {}
        for mask in ("add", "mul"):
            mean = np.array([stats.loc[(mask, layer), "mean"] for layer, _ in layers])
            std = np.array([stats.loc[(mask, layer), "std"] for layer, _ in layers])
            series[f"{OP_NAMES[mask]} mask"] = (mean, std)
        grouped_bars(ax, [label for _, label in layers], series, "weights shared with the other task", percent=True,
                     annotate=True)
        ax.set_title(f"{arch_name(arch)}: sharing between operations")
        ax.set_ylim(0, 105)
        ax.tick_params(axis="x", labelsize=7)
    axes[0].legend(loc="upper center")
    fig.suptitle("Fig. 1: share of each operation's weights also used by the other operation", fontsize=10)
    fig.tight_layout()
    return fig


ACCURACY_CONDITIONS = [("none", False, "no mask"), ("all", False, "full-task\nmask"), ("add", False, "add\nmask"),
                       ("add", True, "add mask\ninverted"), ("mul", False, "mul\nmask"),
                       ("mul", True, "mul mask\ninverted")]


def fig10_accuracy(accuracy: pd.DataFrame, split: str = "train"):
    """Accuracy on each operation with each mask and inverted mask (paper Fig. 10)."""
    archs = _archs(accuracy)
    fig, axes = _panels(len(archs), width=5.0)
    df_all = accuracy[accuracy["split"] == split]
    for ax, arch in zip(axes, archs):
        df = df_all[df_all["arch"] == arch]
        stats = mean_std(df, ["mask", "inverted", "operation"], "accuracy").set_index(["mask", "inverted", "operation"])
        series = {}
        for op in ("add", "mul"):
            mean = np.array([stats.loc[(m, inv, op), "mean"] for m, inv, _ in ACCURACY_CONDITIONS])
            std = np.array([stats.loc[(m, inv, op), "std"] for m, inv, _ in ACCURACY_CONDITIONS])
            series[f"accuracy on {OP_NAMES[op]}"] = (mean, std)
        grouped_bars(ax, [label for *_, label in ACCURACY_CONDITIONS], series, "accuracy", percent=True)
        ax.set_ylim(0, 105)
        ax.set_title(f"{arch_name(arch)}")
        ax.tick_params(axis="x", labelsize=7)
    axes[0].legend(loc="upper right")
    fig.suptitle("Fig. 10: accuracy with each mask and its inverse", fontsize=10)
    fig.tight_layout()
    return fig


def fig11_weights(layers: pd.DataFrame):
    """Weights kept per layer by the addition and multiplication masks (paper Fig. 11)."""
    archs = _archs(layers)
    fig, axes = _panels(len(archs))
    for ax, arch in zip(axes, archs):
        df = layers[(layers["arch"] == arch) & (layers["layer"] != TOTAL)]
        order = _layer_order(df)
        stats = mean_std(df, ["mask", "layer"], "kept").set_index(["mask", "layer"])
        series = {}
        for mask in ("add", "mul"):
            mean = np.array([stats.loc[(mask, layer), "mean"] for layer, _ in order])
            std = np.array([stats.loc[(mask, layer), "std"] for layer, _ in order])
            series[f"{OP_NAMES[mask]} mask"] = (mean, std)
        grouped_bars(ax, [label for _, label in order], series, "weights kept")
        ax.set_yscale("log")
        totals = layers[(layers["arch"] == arch) & (layers["layer"] == TOTAL)]
        per_seed = totals.pivot_table(index="seed", columns="mask", values="kept")
        ratio = (per_seed["mul"] / per_seed["add"])
        ax.set_title(f"{arch_name(arch)}: mul keeps {ratio.mean():.2f}× (± {ratio.std(ddof=1) if len(ratio) > 1 else 0:.2f}) "
                     f"the weights of add", fontsize=9)
        ax.tick_params(axis="x", labelsize=7)
    axes[0].legend(loc="upper right")
    fig.suptitle("Fig. 11: weights used by each operation, per layer", fontsize=10)
    fig.tight_layout()
    return fig


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
    fig.suptitle("Fig. 12: which operation the masked network performs", fontsize=10)
    fig.tight_layout()
    return fig


def build_all(tables: dict[str, pd.DataFrame], out_dir: str | Path) -> list[Path]:
    footer = provenance_text(*tables.values())
    paths = []
    paths += save_figure(fig1_sharing(tables["sharing"]), out_dir, "fig01_sharing_per_layer", footer)
    paths += save_figure(fig10_accuracy(tables["accuracy"]), out_dir, "fig10_accuracy_masks_inverted", footer)
    paths += save_figure(fig11_weights(tables["layers"]), out_dir, "fig11_weights_per_layer", footer)
    paths += save_figure(fig12_confusion(tables["confusion"]), out_dir, "fig12_operation_confusion", footer)
    return paths

"""Shared figure helpers: style, grouped bars with error bars, provenance footers, saving."""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from ..analysis import mean_std  # noqa: E402
from ..io import TableError, atomic_path, missing_columns  # noqa: E402

COLORS = ["#3b75af", "#ef8636", "#519e3e", "#c53a32", "#8d69b8", "#84584e", "#d57dbf", "#7f7f7f"]
ARCH_NAMES = {"fnn": "FNN", "lstm": "LSTM", "lstm_seq": "LSTM (one pair at a time)"}

plt.rcParams.update({
    "figure.dpi": 110, "savefig.dpi": 200, "font.size": 9, "axes.titlesize": 10, "axes.spines.top": False,
    "axes.spines.right": False, "axes.grid": True, "axes.grid.axis": "y", "grid.alpha": 0.3, "legend.frameon": False,
})


# What sharing_panel reads of a sharing table.
SHARING_PANEL_COLUMNS = ("mask", "layer", "layer_index", "layer_label", "shared_fraction")


def check_tables(tables: dict[str, pd.DataFrame], columns: dict[str, tuple[str, ...]], what: str) -> None:
    """Every table a figure module reads is there with the columns it reads (``columns``: its ``COLUMNS``),
    else a :class:`~modmask.io.TableError` naming the table and the columns. The figure scripts read
    the files with :func:`modmask.io.read_table`, which also names the file."""
    for name, needed in columns.items():
        if tables.get(name) is None:
            raise TableError(f"{what} figures need the {name!r} table, but only got: {sorted(tables)}")
        missing = missing_columns(tables[name], needed)
        if missing:
            raise TableError(f"{what} {name!r} table lacks column(s) {missing}; it has {list(tables[name].columns)}")


def arch_name(arch: str) -> str:
    return ARCH_NAMES.get(arch, arch)


def error_extent(std) -> np.ndarray | None:
    """Standard deviations as error-bar lengths (NaN, one seed's missing spread, as 0), or None where nothing
    has any spread: then no error bars are drawn rather than zero-length caps."""
    std = np.nan_to_num(np.asarray(std, dtype=float))
    return std if (std > 0).any() else None


def grouped_bars(ax, groups: list[str], series: dict[str, tuple[np.ndarray, np.ndarray]], ylabel: str,
                 percent: bool = False, annotate: bool = False):
    """Bars for each group (x) and series (colour), with standard-deviation error bars.

    Percentages' bars stop at 0 and 100% (a large seed spread would otherwise draw past the axis); a
    series without spread (one seed) gets no error bars rather than zero-length caps."""
    n = len(series)
    width = 0.8 / max(n, 1)
    x = np.arange(len(groups))
    scale = 100.0 if percent else 1.0
    for i, (name, (mean, std)) in enumerate(series.items()):
        pos = x - 0.4 + width * (i + 0.5)
        mean, std = np.asarray(mean, dtype=float), error_extent(std)
        yerr = std
        if std is not None and percent:  # lower and upper lengths, stopping at 0 and 100%
            yerr = np.vstack([np.minimum(std, np.maximum(mean, 0.0)), np.minimum(std, np.maximum(1.0 - mean, 0.0))])
        yerr = None if yerr is None else yerr * scale
        bars = ax.bar(pos, mean * scale, width, yerr=yerr, label=name, color=COLORS[i % len(COLORS)],
                      capsize=2, error_kw={"elinewidth": 0.8})
        if annotate:
            for bar, value in zip(bars, mean * scale):
                ax.annotate(f"{value:.0f}" if percent else f"{value:.3g}", (bar.get_x() + bar.get_width() / 2,
                            bar.get_height()), ha="center", va="bottom", fontsize=6, xytext=(0, 1),
                            textcoords="offset points")
    ax.set_xticks(x)
    ax.set_xticklabels(groups, rotation=0)
    ax.set_ylabel(ylabel + (" [%]" if percent else ""))
    return ax


def provenance_text(*tables: pd.DataFrame) -> str:
    df = pd.concat([t[[c for c in ("scale", "seed", "config_hash", "code_version") if c in t]] for t in tables])
    parts = []
    if "scale" in df:
        parts.append("scale " + ",".join(sorted(df["scale"].astype(str).unique())))
    if "seed" in df:
        n = df["seed"].nunique()
        # one seed has no spread: its bars are the values themselves (grouped_bars draws no error bars)
        parts.append(f"{n} seeds (mean ± std)" if n > 1 else f"{n} seed")
    if "config_hash" in df:
        parts.append("config " + ",".join(sorted(df["config_hash"].astype(str).unique())[:3]))
    if "code_version" in df:
        parts.append("code " + ",".join(sorted(df["code_version"].astype(str).unique())[:3]))
    return " · ".join(parts)


def save_figure(fig, out_dir: str | Path, stem: str, footer: str | None = None) -> list[Path]:
    """Save as PDF and PNG (atomically), with a small provenance footer."""
    if footer:
        # hung below the figure's bottom edge (the tight bounding box takes it in), so that it never
        # overlaps the bottom panels' axis labels
        fig.text(0.995, 0.0, footer, ha="right", va="top", fontsize=6, color="#666666")
    out_dir = Path(out_dir)
    paths = []
    for ext in ("pdf", "png"):
        path = out_dir / f"{stem}.{ext}"
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format=ext, bbox_inches="tight")
        paths.append(path)
    plt.close(fig)
    return paths


def layer_order(df: pd.DataFrame, total_label: str = "all layers") -> list[tuple[str, str]]:
    """(layer, label) pairs in network order; the ``total`` row last."""
    layers = df.drop_duplicates("layer").sort_values("layer_index")
    # two-line tick labels, so that seven layers fit under a 4-inch panel
    return [(row.layer, (total_label if row.layer == "total" else row.layer_label).replace(" ", "\n", 1))
            for row in layers.itertuples()]


def panels(n: int, width: float = 4.2, height: float = 3.0):
    fig, axes = plt.subplots(1, n, figsize=(width * n, height), squeeze=False)
    return fig, axes[0]


def sharing_panel(ax, sharing: pd.DataFrame, masks: dict[str, str]):
    """Bars of the shared fraction per layer for each mask (``masks``: name -> legend label)."""
    layers = layer_order(sharing)
    stats = mean_std(sharing, ["mask", "layer"], "shared_fraction").set_index(["mask", "layer"])
    series = {label: (np.array([stats.loc[(mask, layer), "mean"] for layer, _ in layers]),
                      np.array([stats.loc[(mask, layer), "std"] for layer, _ in layers]))
              for mask, label in masks.items()}
    grouped_bars(ax, [label for _, label in layers], series, "weights shared", percent=True, annotate=True)
    ax.set_ylim(0, 110)
    ax.tick_params(axis="x", labelsize=7)


def condition_panel(ax, table: pd.DataFrame, conditions: list[tuple[str, bool, str]], key: str,
                    series: dict, value: str = "accuracy"):
    """Bars of ``value`` for each (mask, inverted) condition, one colour per ``key`` value."""
    stats = mean_std(table, ["mask", "inverted", key], value).set_index(["mask", "inverted", key])
    bars = {label: (np.array([stats.loc[(m, inv, k), "mean"] for m, inv, _ in conditions]),
                    np.array([stats.loc[(m, inv, k), "std"] for m, inv, _ in conditions]))
            for k, label in series.items()}
    grouped_bars(ax, [label for *_, label in conditions], bars, value, percent=True)
    ax.set_ylim(0, 105)
    ax.tick_params(axis="x", labelsize=7)


def finish(fig, axes, title: str, legend: bool = True):
    """Suptitle, one legend for the whole figure (from the first panel) above the panels, tight layout."""
    handles, labels = np.ravel(axes)[0].get_legend_handles_labels() if legend else ([], [])
    fig.suptitle(title, fontsize=10, y=0.99)
    if handles:
        fig.legend(handles, labels, loc="upper center", ncol=min(len(labels), 4), fontsize=8,
                   bbox_to_anchor=(0.5, 0.93))
    fig.tight_layout(rect=(0, 0, 1, 0.87 if handles else 0.95))
    return fig

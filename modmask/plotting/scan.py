"""Figures of the SCAN experiment (paper Fig. 4 a, b and Fig. 16).

Fig. 4a: the network pretrained on the IID ("simple") split, evaluated on each systematic split's test
set through the mask trained on the full problem (IID) and through the mask trained on that split's
train set; the unmasked network's accuracy as a black line. Fig. 4b: per output token, the share of
the decoder output layer's weights into it that the IID mask keeps and a split's mask removes (the
paper's metric), for the add-jump mask and, for comparison, the other split masks. Fig. 16: a
network trained directly on each split vs. IID pretraining plus that split's mask. Mean and standard
deviation over seeds everywhere.

The numbers behind every figure come from small pure functions (``split_mask_stats``,
``removed_by_token``, ``direct_vs_mask_stats``) that return tidy frames, so that they can be checked
without reading pixels.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from ..analysis import mean_std
from .common import COLORS, error_extent, finish, grouped_bars, panels, provenance_text, save_figure

SPLIT_NAMES = {"simple": "IID (simple)", "length": "length", "addprim_jump": "add jump",
               "addprim_turn_left": "add turn left"}
SYSTEMATIC_SPLITS = ("length", "addprim_jump", "addprim_turn_left")
SCAN_ARCH_NAMES = {"lstm": "LSTM", "transformer": "Transformer"}
HIDDEN_TOKENS = ("<pad>", "<sos>", "<unk>")
HIGHLIGHTED_TOKEN = "I_JUMP"

ACCURACY_COLUMNS = ("arch", "seed", "network", "trained_on", "mask", "test_split", "accuracy")
OUTPUT_WEIGHT_COLUMNS = ("arch", "seed", "mask", "token", "token_index", "removed_fraction")
_KEY_COLUMNS = ("arch", "network", "trained_on", "mask", "test_split", "token")
COLUMNS = {"accuracy": ACCURACY_COLUMNS, "output_weights": OUTPUT_WEIGHT_COLUMNS}  # table -> what the figures read

# condition -> legend label, in bar order
SPLIT_MASK_CONDITIONS = {"iid_mask": "mask trained on the full problem (IID)",
                         "split_mask": "mask trained on the split",
                         "no_mask": "no mask"}
DIRECT_CONDITIONS = {"direct": "trained directly on the split", "split_mask": "IID pretraining + split mask"}
TOKEN_MASKS = {"addprim_jump": "add jump mask", "length": "length mask", "addprim_turn_left": "add turn left mask"}

FIGURES = {  # name -> (file stem, title)
    "split_masks": ("fig04_a_split_masks",
                    "Fig. 4a: SCAN, pretrained network through the full-problem (IID) mask vs. each split's mask"),
    "output_weights": ("fig04_b_output_weights_removed",
                       "Fig. 4b: SCAN, {arch}: decoder output weights removed per output token"),
    "direct": ("fig16_direct_vs_mask", "Fig. 16: SCAN, trained directly on the split vs. IID pretraining + split mask"),
}


def split_name(split: str) -> str:
    return SPLIT_NAMES.get(split, split)


def scan_arch_name(arch: str) -> str:
    return SCAN_ARCH_NAMES.get(arch, arch)


def _checked(tables: dict[str, pd.DataFrame], name: str, columns: tuple[str, ...]) -> pd.DataFrame:
    """The table ``name`` with its key columns as plain strings; a ValueError naming what is missing."""
    if name not in tables or tables[name] is None:
        raise ValueError(f"SCAN figures need the {name!r} table, but only got: {sorted(tables)}")
    return _checked_frame(tables[name], name, columns)


def _checked_frame(df: pd.DataFrame, name: str, columns: tuple[str, ...]) -> pd.DataFrame:
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise ValueError(f"SCAN {name!r} table lacks column(s) {missing}; it has {list(df.columns)}")
    return df.astype({c: str for c in _KEY_COLUMNS if c in df.columns})


def _archs(df: pd.DataFrame) -> list[str]:
    return list(dict.fromkeys(df["arch"]))


def systematic_splits(accuracy: pd.DataFrame) -> list[str]:
    """The non-simple test splits present: the paper's three in its order, then any others as they appear."""
    present = list(dict.fromkeys(accuracy["test_split"].astype(str)))
    return ([s for s in SYSTEMATIC_SPLITS if s in present]
            + [s for s in present if s not in SYSTEMATIC_SPLITS and s != "simple"])


def _grid_stats(rows: pd.DataFrame, keys: list[str], levels: list[list], value: str) -> pd.DataFrame:
    """mean_std of ``value`` over every combination of ``levels``: NaN mean/std and count 0 where none ran."""
    index = pd.MultiIndex.from_product(levels, names=keys)
    if len(rows):
        stats = mean_std(rows, keys, value).set_index(keys)[["mean", "std", "count"]]
    else:
        stats = pd.DataFrame(columns=["mean", "std", "count"], index=index, dtype=float)
    out = stats.reindex(index).reset_index()
    out["count"] = out["count"].fillna(0).astype(int)
    return out


def _split_mask_rows(accuracy: pd.DataFrame) -> pd.DataFrame:
    """Accuracy rows of the pretrained network on each systematic split, tagged with split and condition."""
    pre = accuracy[accuracy["network"] == "pretrained"]
    parts = []
    for split in systematic_splits(accuracy):
        on = pre[pre["test_split"] == split]
        for condition, mask in (("iid_mask", "simple"), ("split_mask", split), ("no_mask", "none")):
            parts.append(on[on["mask"] == mask].assign(split=split, condition=condition))
    return pd.concat(parts, ignore_index=True) if parts else accuracy.iloc[:0].assign(split="", condition="")


def split_mask_stats(accuracy: pd.DataFrame) -> pd.DataFrame:
    """Fig. 4a's numbers: one row per (arch, split, condition) with the accuracy's mean, std and count over seeds.

    ``condition`` is "iid_mask" (pretrained network, mask trained on the full problem, tested on ``split``),
    "split_mask" (mask trained on ``split``) or "no_mask" (no mask). Archs in order of appearance, splits as
    in ``systematic_splits``; combinations that never ran have NaN mean and std and count 0.
    """
    accuracy = _checked_frame(accuracy, "accuracy", ACCURACY_COLUMNS)
    return _grid_stats(_split_mask_rows(accuracy), ["arch", "split", "condition"],
                       [_archs(accuracy), systematic_splits(accuracy), list(SPLIT_MASK_CONDITIONS)], "accuracy")


def _direct_rows(accuracy: pd.DataFrame) -> pd.DataFrame:
    parts = []
    for split in systematic_splits(accuracy):
        on = accuracy[accuracy["test_split"] == split]
        direct = on[(on["network"] == "direct") & (on["trained_on"] == split) & (on["mask"] == "none")]
        masked = on[(on["network"] == "pretrained") & (on["mask"] == split)]
        parts += [direct.assign(split=split, condition="direct"), masked.assign(split=split, condition="split_mask")]
    return pd.concat(parts, ignore_index=True) if parts else accuracy.iloc[:0].assign(split="", condition="")


def direct_vs_mask_stats(accuracy: pd.DataFrame) -> pd.DataFrame:
    """Fig. 16's numbers: one row per (arch, split, condition) with mean, std and count over seeds.

    ``condition`` is "direct" (network trained directly on ``split``'s train set, no mask) or "split_mask"
    (IID-pretrained network through the mask trained on ``split``); both tested on ``split``'s test set.
    A missing run gives NaN mean and std and count 0.
    """
    accuracy = _checked_frame(accuracy, "accuracy", ACCURACY_COLUMNS)
    return _grid_stats(_direct_rows(accuracy), ["arch", "split", "condition"],
                       [_archs(accuracy), systematic_splits(accuracy), list(DIRECT_CONDITIONS)], "accuracy")


def token_arch(output_weights: pd.DataFrame) -> str:
    """The arch Fig. 4b shows: the LSTM as in the paper, else the first one present."""
    archs = _archs(output_weights)
    if not archs:
        raise ValueError("SCAN 'output_weights' table is empty")
    return "lstm" if "lstm" in archs else archs[0]


def _token_rows(output_weights: pd.DataFrame, arch: str) -> pd.DataFrame:
    rows = output_weights[output_weights["arch"] == arch]
    return rows[~rows["token"].isin(HIDDEN_TOKENS)]


def removed_by_token(output_weights: pd.DataFrame, arch: str) -> pd.DataFrame:
    """Fig. 4b's numbers for ``arch``: one row per (token, mask) with the removed fraction's mean, std and count.

    <pad>, <sos> and <unk> are left out (<eos> stays). Tokens in vocabulary (``token_index``) order, masks
    in split order (simple, length, add jump, add turn left, then any others); a (token, mask) pair without
    rows has NaN mean and std and count 0.
    """
    output_weights = _checked_frame(output_weights, "output_weights", OUTPUT_WEIGHT_COLUMNS)
    rows = _token_rows(output_weights, arch)
    order = rows.groupby("token", sort=False)["token_index"].min().sort_values(kind="stable")
    present = list(dict.fromkeys(rows["mask"]))
    masks = [m for m in SPLIT_NAMES if m in present] + [m for m in present if m not in SPLIT_NAMES]
    stats = _grid_stats(rows, ["token", "mask"], [list(order.index), masks], "removed_fraction")
    stats.insert(1, "token_index", stats["token"].map(order).astype(int))
    return stats


def _series(stats: pd.DataFrame, arch: str, splits: list[str], conditions: dict[str, str]) -> dict:
    by = stats.set_index(["arch", "split", "condition"])
    return {label: (np.array([by.loc[(arch, s, c), "mean"] for s in splits], dtype=float),
                    np.array([by.loc[(arch, s, c), "std"] for s in splits], dtype=float))
            for c, label in conditions.items()}


def _mark_missing(ax, series: dict):
    """Write "n/a" where a bar of ``grouped_bars`` is missing (NaN), so that it does not read as 0 %."""
    width = 0.8 / max(len(series), 1)
    for i, (mean, _) in enumerate(series.values()):
        for group in np.flatnonzero(np.isnan(mean)):
            ax.text(group - 0.4 + width * (i + 0.5), 1, "n/a", ha="center", va="bottom", fontsize=6, color="#666666")


def split_masks_figure(accuracy: pd.DataFrame):
    """Paper Fig. 4a: one panel per arch, bars for the IID and the split's mask, black line without mask."""
    stats = split_mask_stats(accuracy)
    archs, splits = list(dict.fromkeys(stats["arch"])), list(dict.fromkeys(stats["split"]))
    if not splits:
        raise ValueError("SCAN 'accuracy' table has no test split other than 'simple' to plot")
    fig, axes = panels(len(archs), width=4.2, height=3.2)
    bar_conditions = {c: label for c, label in SPLIT_MASK_CONDITIONS.items() if c != "no_mask"}
    for ax, arch in zip(axes, archs):
        series = _series(stats, arch, splits, bar_conditions)
        grouped_bars(ax, [split_name(s) for s in splits], series, "test accuracy", percent=True)
        _mark_missing(ax, series)
        (mean, std), = _series(stats, arch, splits, {"no_mask": SPLIT_MASK_CONDITIONS["no_mask"]}).values()
        x = np.arange(len(splits))
        ax.hlines(mean * 100, x - 0.42, x + 0.42, colors="black", linewidth=1.6, label=SPLIT_MASK_CONDITIONS["no_mask"],
                  zorder=3)
        spread = error_extent(std)
        if spread is not None:
            ax.errorbar(x, mean * 100, yerr=spread * 100, fmt="none", ecolor="black", elinewidth=0.8, capsize=2,
                        zorder=3)
        ax.set_ylim(0, 105)
        ax.set_xlabel("test split")
        ax.set_title(scan_arch_name(arch))
    finish(fig, axes, FIGURES["split_masks"][1])
    return _legend_last(fig, SPLIT_MASK_CONDITIONS["no_mask"])


def _legend_last(fig, label: str):
    """Move ``label`` to the end of the figure legend that ``finish`` made (lines come before bars there)."""
    if not fig.legends:
        return fig
    old = fig.legends[0]
    entries = list(zip(old.legend_handles, [t.get_text() for t in old.get_texts()]))
    entries = [e for e in entries if e[1] != label] + [e for e in entries if e[1] == label]
    old.remove()
    fig.legend([h for h, _ in entries], [t for _, t in entries], loc="upper center", ncol=min(len(entries), 4),
               fontsize=8, bbox_to_anchor=(0.5, 0.93))
    return fig


def output_weights_figure(output_weights: pd.DataFrame, arch: str | None = None):
    """Paper Fig. 4b: horizontal bars, per token, of the output weights the IID mask keeps and each split's mask removes."""
    output_weights = _checked_frame(output_weights, "output_weights", OUTPUT_WEIGHT_COLUMNS)
    arch = arch or token_arch(output_weights)
    stats = removed_by_token(output_weights, arch)
    masks = {m: label for m, label in TOKEN_MASKS.items() if m in set(stats["mask"])}
    if not masks:
        raise ValueError(f"SCAN 'output_weights' table has no {list(TOKEN_MASKS)} mask rows for arch {arch!r}")
    tokens = list(dict.fromkeys(stats["token"]))
    by = stats.set_index(["token", "mask"])
    fig, axes = panels(1, width=5.0, height=0.8 + 0.32 * len(tokens))
    ax = axes[0]
    y = np.arange(len(tokens))
    height = 0.8 / len(masks)
    for i, (mask, label) in enumerate(masks.items()):
        mean = np.array([by.loc[(t, mask), "mean"] for t in tokens], dtype=float)
        std = np.array([by.loc[(t, mask), "std"] for t in tokens], dtype=float)
        spread = error_extent(std)
        ax.barh(y - 0.4 + height * (i + 0.5), mean * 100, height, xerr=None if spread is None else spread * 100, label=label,
                color=COLORS[i % len(COLORS)], capsize=2, error_kw={"elinewidth": 0.8})
    ax.set_yticks(y)
    ax.set_yticklabels(tokens)
    for tick in ax.get_yticklabels():
        if tick.get_text() == HIGHLIGHTED_TOKEN:
            tick.set_fontweight("bold")
    ax.invert_yaxis()  # first token on top
    ax.set_xlim(0, 105)
    ax.set_xlabel("output weights into the token: kept by the IID mask,\nremoved by the split's mask [%]")
    ax.set_ylabel("output token")
    ax.grid(False, axis="y")
    ax.grid(True, axis="x", alpha=0.3)
    return finish(fig, axes, FIGURES["output_weights"][1].format(arch=scan_arch_name(arch)))


def direct_vs_mask_figure(accuracy: pd.DataFrame):
    """Paper Fig. 16: one panel per arch, a network trained on each split vs. IID pretraining + the split's mask."""
    stats = direct_vs_mask_stats(accuracy)
    archs, splits = list(dict.fromkeys(stats["arch"])), list(dict.fromkeys(stats["split"]))
    if not splits:
        raise ValueError("SCAN 'accuracy' table has no test split other than 'simple' to plot")
    fig, axes = panels(len(archs), width=4.2, height=3.2)
    for ax, arch in zip(axes, archs):
        series = _series(stats, arch, splits, DIRECT_CONDITIONS)
        grouped_bars(ax, [split_name(s) for s in splits], series, "test accuracy", percent=True)
        _mark_missing(ax, series)
        ax.set_ylim(0, 105)
        ax.set_xlabel("test split")
        ax.set_title(scan_arch_name(arch))
    return finish(fig, axes, FIGURES["direct"][1])


def build_all(tables: dict[str, pd.DataFrame], out_dir: str | Path) -> list[Path]:
    accuracy = _checked(tables, "accuracy", ACCURACY_COLUMNS)
    output_weights = _checked(tables, "output_weights", OUTPUT_WEIGHT_COLUMNS)
    arch = token_arch(output_weights)
    paths = []
    paths += save_figure(split_masks_figure(accuracy), out_dir, FIGURES["split_masks"][0],
                         provenance_text(_split_mask_rows(accuracy)))
    paths += save_figure(output_weights_figure(output_weights, arch), out_dir, FIGURES["output_weights"][0],
                         provenance_text(_token_rows(output_weights, arch)))
    paths += save_figure(direct_vs_mask_figure(accuracy), out_dir, FIGURES["direct"][0],
                         provenance_text(_direct_rows(accuracy)))
    return paths


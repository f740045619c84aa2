"""Figures of the CIFAR-10 class-removal experiment (paper Fig. 6a, 6b, 18 and 19-21).

For every class c a mask is trained on the pretrained network with c left out of the training data
("without_c"); the "control" mask is trained on all ten classes. Fig. 6a: the relative drop of the
removed class's accuracy, (control - without_c) / control, per architecture. Fig. 6b: the largest
relative drop of any *other* class under the same mask, divided by the removed class's drop (well below
1: the removal is specific to the class). Fig. 18: the control mask's confusion matrices. Fig. 19-21:
per architecture, how the confusion matrix changes when a class is removed (where its images go).
Everything is computed per seed, then the mean and standard deviation over seeds are shown.

The numbers behind every figure come from small pure functions (``class_drops``, ``removed_class_drop``,
``other_class_drop_ratio``, ``confusion_matrix``, ``confusion_difference``, ``largest_confusions``) that
return tidy frames, so that they can be checked without reading pixels.
"""
from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.patches import Rectangle

from .common import finish, grouped_bars, mean_std, panels, provenance_text, save_figure

# the CIFAR-10 label order (as modmask.data.cifar10.CLASSES; not imported, so that plotting stays light)
CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
ARCH_ORDER = ("simple_cnn", "simple_cnn_nodrop", "resnet")  # Fig. 19, 20, 21 in this order
ARCH_NAMES = {"simple_cnn": "simple CNN", "simple_cnn_nodrop": "simple CNN, no dropout", "resnet": "ResNet-110"}
CONTROL = "control"
WITHOUT = "without_"
ALL_CLASSES = "all classes"
FIRST_DIFF_FIGURE = 19

ACCURACY_COLUMNS = ("arch", "seed", "mask", "class", "accuracy")
CONFUSION_COLUMNS = ("arch", "seed", "mask", "true_class", "predicted_class", "fraction")
_KEY_COLUMNS = ("arch", "mask", "class", "true_class", "predicted_class")
COLUMNS = {"accuracy": ACCURACY_COLUMNS, "confusion": CONFUSION_COLUMNS}  # table -> what the figures read

FIGURES = {  # name -> (file stem, title)
    "removed_drop": ("fig06_a_removed_class_drop",
                     "Fig. 6a: CIFAR-10, relative accuracy drop of the class the mask was trained without"),
    "other_drop": ("fig06_b_other_class_drop",
                   "Fig. 6b: CIFAR-10, largest relative drop of another class / drop of the removed class"),
    "control_confusion": ("fig18_confusion_control",
                          "Fig. 18: CIFAR-10, confusion matrix through the control mask (trained on all classes)"),
    "confusion_diff": ("fig{number:02d}_confusion_diff_{arch}",
                       "Fig. {number}: CIFAR-10, {arch}: confusion through the mask trained without class c "
                       "minus through the control mask"),
}


def arch_label(arch: str, names: dict[str, str] | None = None) -> str:
    """Display name of ``arch``: from ``names`` (e.g. {"resnet": "ResNet-20"}), then ``ARCH_NAMES``, else ``arch``."""
    return {**ARCH_NAMES, **(names or {})}.get(arch, arch)


def short_class(name: str) -> str:
    """A class name cut to 4 letters (airp, auto, bird, cat, ...), for tick labels of small panels."""
    return name[:4]


def _checked(tables: dict[str, pd.DataFrame], name: str, columns: tuple[str, ...]) -> pd.DataFrame:
    """The table ``name`` with its key columns as plain strings; a ValueError naming what is missing."""
    if name not in tables or tables[name] is None:
        raise ValueError(f"CIFAR-10 figures need the {name!r} table, but only got: {sorted(tables)}")
    return _checked_frame(tables[name], name, columns)


def _checked_frame(df: pd.DataFrame, name: str, columns: tuple[str, ...]) -> pd.DataFrame:
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise ValueError(f"CIFAR-10 {name!r} table lacks column(s) {missing}; it has {list(df.columns)}")
    return df.astype({c: str for c in _KEY_COLUMNS if c in df.columns})


def _archs(df: pd.DataFrame) -> list[str]:
    """Archs present: the paper's three in its order, then any others as they appear."""
    present = list(dict.fromkeys(df["arch"]))
    return [a for a in ARCH_ORDER if a in present] + [a for a in present if a not in ARCH_ORDER]


def _ordered_classes(values) -> list[str]:
    present = list(dict.fromkeys(values))
    return [c for c in CLASSES if c in present] + [c for c in present if c not in CLASSES]


def _removed(mask: pd.Series) -> pd.Series:
    return mask.str.slice(len(WITHOUT))


def _stats(rows: pd.DataFrame, keys: list[str], levels: list[list], value: str) -> pd.DataFrame:
    """mean_std of ``value`` (NaN skipped) for every combination of ``levels``: NaN mean/std and n 0 where none."""
    index = pd.MultiIndex.from_product(levels, names=keys)
    if len(rows):
        stats = mean_std(rows, keys, value).set_index(keys)[["mean", "std", "count"]]
    else:
        stats = pd.DataFrame(columns=["mean", "std", "count"], index=index, dtype=float)
    out = stats.reindex(index).reset_index().rename(columns={"count": "n"})
    out["n"] = out["n"].fillna(0).astype(int)
    out.loc[out["n"] == 0, "std"] = np.nan
    return out


# ---- the numbers ----------------------------------------------------------------------------------

def _drop_rows(accuracy: pd.DataFrame) -> pd.DataFrame:
    """The accuracy rows Fig. 6 uses: the control mask and every without_<class> mask."""
    return accuracy[(accuracy["mask"] == CONTROL) | accuracy["mask"].str.startswith(WITHOUT)]


def class_drops(accuracy: pd.DataFrame) -> pd.DataFrame:
    """Relative drop of every class under every without_<c> mask, per seed.

    One row per (arch, seed, removed_class, class) with ``control`` (the class's accuracy through the control
    mask of the same arch and seed), ``accuracy`` (through the mask without ``removed_class``) and
    ``drop`` = (control - accuracy) / control; NaN where the control accuracy is 0. The removed class is taken
    from the mask name. Rows without a control run of the same (arch, seed) are left out.
    """
    accuracy = _checked_frame(accuracy, "accuracy", ACCURACY_COLUMNS)
    keys = ["arch", "seed", "class"]
    control = (accuracy[accuracy["mask"] == CONTROL].groupby(keys, sort=False)["accuracy"].mean()
               .rename("control").reset_index())
    without = accuracy[accuracy["mask"].str.startswith(WITHOUT)]
    without = (without.assign(removed_class=_removed(without["mask"]))
               .groupby(["arch", "seed", "removed_class", "class"], sort=False)["accuracy"].mean().reset_index())
    out = without.merge(control, on=keys, how="inner")
    with np.errstate(divide="ignore", invalid="ignore"):
        drop = (out["control"] - out["accuracy"]) / out["control"]
    out["drop"] = drop.where(out["control"] != 0)
    return out[["arch", "seed", "removed_class", "class", "control", "accuracy", "drop"]]


def removed_class_drop(accuracy: pd.DataFrame, overall: bool = False) -> pd.DataFrame:
    """Fig. 6a's numbers: relative drop of the removed class, mean, std and n over seeds.

    One row per (arch, removed_class): drop(c) = (acc_control(c) - acc_without_c(c)) / acc_control(c) per seed.
    Archs in ``ARCH_ORDER`` then as they appear, classes in CIFAR-10 label order; an (arch, class) pair that
    never ran has NaN mean and std and n 0. With ``overall``, each arch also gets a row with removed_class
    ``ALL_CLASSES``: the mean over removed classes of each seed's drops, then mean and std over seeds.
    """
    drops = class_drops(accuracy)
    own = drops[drops["class"] == drops["removed_class"]]
    archs = _archs(_checked_frame(accuracy, "accuracy", ACCURACY_COLUMNS))
    classes = _ordered_classes(own["removed_class"])
    out = _stats(own, ["arch", "removed_class"], [archs, classes], "drop")
    if overall:
        per_seed = own.groupby(["arch", "seed"], sort=False)["drop"].mean().reset_index()
        out = pd.concat([out, _stats(per_seed.assign(removed_class=ALL_CLASSES), ["arch", "removed_class"],
                                     [archs, [ALL_CLASSES]], "drop")], ignore_index=True)
        out["_order"] = out["arch"].map({a: i for i, a in enumerate(archs)})
        out = out.sort_values("_order", kind="stable").drop(columns="_order").reset_index(drop=True)
    return out


def _ratio_rows(accuracy: pd.DataFrame) -> pd.DataFrame:
    """Per (arch, seed, removed_class): the other class with the largest drop, its drop and the ratio."""
    drops = class_drops(accuracy)
    keys = ["arch", "seed", "removed_class"]
    own = drops[drops["class"] == drops["removed_class"]][keys + ["drop"]].rename(columns={"drop": "removed_drop"})
    others = drops[(drops["class"] != drops["removed_class"]) & drops["drop"].notna()]
    worst = others.loc[others.groupby(keys, sort=False)["drop"].idxmax()]
    worst = worst[keys + ["class", "drop"]].rename(columns={"class": "worst_class", "drop": "other_drop"})
    out = own.merge(worst, on=keys, how="inner")
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = out["other_drop"] / out["removed_drop"]
    out["ratio"] = ratio.where(out["removed_drop"] > 0)  # undefined if removing the class did not hurt it
    return out


def _most_frequent(rows: pd.DataFrame) -> str:
    """The worst class of most seeds; ties go to the class with the larger mean drop."""
    counts = rows.groupby("worst_class").agg(seeds=("seed", "size"), drop=("other_drop", "mean"))
    return counts.sort_values(["seeds", "drop"], ascending=False, kind="stable").index[0]


def other_class_drop_ratio(accuracy: pd.DataFrame) -> pd.DataFrame:
    """Fig. 6b's numbers: largest relative drop of another class / relative drop of the removed class.

    Per (arch, seed, removed class c), among the classes c' != c the largest drop(c') under the mask without c,
    divided by drop(c); then mean, std and n over seeds (NaN where drop(c) <= 0, the ratio being meaningless).
    ``worst_class`` is the class c' with the largest drop in most seeds. Rows as in ``removed_class_drop``.
    """
    rows = _ratio_rows(accuracy)
    archs = _archs(_checked_frame(accuracy, "accuracy", ACCURACY_COLUMNS))
    classes = _ordered_classes(class_drops(accuracy)["removed_class"])
    out = _stats(rows, ["arch", "removed_class"], [archs, classes], "ratio")
    worst = (rows.groupby(["arch", "removed_class"]).apply(_most_frequent, include_groups=False).rename("worst_class")
             if len(rows) else pd.Series(dtype=object, name="worst_class"))
    out.insert(2, "worst_class", [worst.get((a, c)) for a, c in zip(out["arch"], out["removed_class"])])
    return out


def _classes(confusion: pd.DataFrame) -> list[str]:
    return _ordered_classes(list(confusion["true_class"]) + list(confusion["predicted_class"]))


def _mean_matrix(rows: pd.DataFrame, classes: list[str]) -> pd.DataFrame:
    """Mean over seeds of the fraction matrix; a cell missing from a row a seed has counts as 0, a true class
    row a seed lacks altogether is left out of that row's mean (NaN if no seed has it)."""
    position = {c: i for i, c in enumerate(classes)}
    seeds = {s: i for i, s in enumerate(dict.fromkeys(rows["seed"]))}
    seed = rows["seed"].map(seeds).to_numpy()
    true = rows["true_class"].map(position).to_numpy()
    predicted = rows["predicted_class"].map(position).to_numpy()
    total = np.zeros((len(seeds), len(classes), len(classes)))
    np.add.at(total, (seed, true, predicted), rows["fraction"].to_numpy(dtype=float))
    present = np.zeros((len(seeds), len(classes)), dtype=bool)
    present[seed, true] = True
    count = present.sum(axis=0)[:, None]
    with np.errstate(divide="ignore", invalid="ignore"):
        mean = np.where(count > 0, total.sum(axis=0) / count, np.nan)
    return pd.DataFrame(mean, index=pd.Index(classes, name="true_class"),
                        columns=pd.Index(classes, name="predicted_class"))


def _mask_rows(confusion: pd.DataFrame, arch: str, mask: str) -> pd.DataFrame:
    return confusion[(confusion["arch"] == arch) & (confusion["mask"] == mask)]


def confusion_matrix(confusion: pd.DataFrame, arch: str, mask: str) -> pd.DataFrame:
    """Mean over seeds of the confusion fractions of ``arch`` through ``mask``: rows true class, columns predicted."""
    confusion = _checked_frame(confusion, "confusion", CONFUSION_COLUMNS)
    rows = _mask_rows(confusion, arch, mask)
    if rows.empty:
        raise ValueError(f"CIFAR-10 'confusion' table has no rows for arch {arch!r} and mask {mask!r}")
    return _mean_matrix(rows, _classes(confusion))


def confusion_difference(confusion: pd.DataFrame, arch: str, removed_class: str) -> pd.DataFrame:
    """confusion(without_<removed_class>) - confusion(control) of ``arch``, mean over the seeds that ran both."""
    confusion = _checked_frame(confusion, "confusion", CONFUSION_COLUMNS)
    without = _mask_rows(confusion, arch, WITHOUT + removed_class)
    control = _mask_rows(confusion, arch, CONTROL)
    seeds = set(without["seed"]) & set(control["seed"])
    if not seeds:
        raise ValueError(f"CIFAR-10 'confusion' table has no seed of arch {arch!r} with both the "
                         f"{CONTROL!r} and the {WITHOUT + removed_class!r} mask")
    classes = _classes(confusion)
    return (_mean_matrix(without[without["seed"].isin(seeds)], classes)
            - _mean_matrix(control[control["seed"].isin(seeds)], classes))


def removed_classes(confusion: pd.DataFrame, arch: str) -> list[str]:
    """The classes ``arch`` has a without_<class> mask for, in CIFAR-10 label order."""
    masks = confusion.loc[(confusion["arch"] == arch) & confusion["mask"].str.startswith(WITHOUT), "mask"]
    return _ordered_classes(_removed(masks.astype(str)))


def largest_confusions(confusion: pd.DataFrame, arch: str, k: int = 3) -> pd.DataFrame:
    """Where each removed class's images go: per removed class c, the ``k`` largest positive entries of row c
    of ``confusion_difference`` off the diagonal (columns arch, removed_class, predicted_class, increase)."""
    confusion = _checked_frame(confusion, "confusion", CONFUSION_COLUMNS)
    rows = []
    for removed in removed_classes(confusion, arch):
        difference = confusion_difference(confusion, arch, removed)
        if removed not in difference.index:
            continue
        row = difference.loc[removed].drop(removed, errors="ignore")
        row = row[row > 0].sort_values(ascending=False, kind="stable").head(k)
        rows += [{"arch": arch, "removed_class": removed, "predicted_class": p, "increase": v} for p, v in row.items()]
    return pd.DataFrame(rows, columns=["arch", "removed_class", "predicted_class", "increase"])


def diff_figure_numbers(archs: list[str]) -> dict[str, int]:
    """Paper figure number of each arch's confusion-difference figure: simple_cnn 19, simple_cnn_nodrop 20,
    resnet 21 (whether or not the others are present), any other arch 22, 23, ... in the given order."""
    numbers, extra = {}, FIRST_DIFF_FIGURE + len(ARCH_ORDER)
    for arch in archs:
        if arch in ARCH_ORDER:
            numbers[arch] = FIRST_DIFF_FIGURE + ARCH_ORDER.index(arch)
        else:
            numbers[arch], extra = extra, extra + 1
    return numbers


# ---- the figures ----------------------------------------------------------------------------------

def _series(stats: pd.DataFrame, archs: list[str], groups: list[str], names) -> dict:
    by = stats.set_index(["arch", "removed_class"])
    return {arch_label(a, names): (np.array([by.loc[(a, g), "mean"] for g in groups], dtype=float),
                                   np.array([by.loc[(a, g), "std"] for g in groups], dtype=float))
            for a in archs}


def _mark_missing(ax, series: dict, y: float = 0.0):
    """Write "n/a" where a bar of ``grouped_bars`` is missing (NaN), so that it does not read as 0."""
    width = 0.8 / max(len(series), 1)
    for i, (mean, _) in enumerate(series.values()):
        for group in np.flatnonzero(np.isnan(mean)):
            ax.text(group - 0.4 + width * (i + 0.5), y, "n/a", ha="center", va="bottom", fontsize=6, color="#666666",
                    rotation=90)


def _bar_panel(stats: pd.DataFrame, groups: list[str], names, ylabel: str, percent: bool):
    archs = list(dict.fromkeys(stats["arch"]))
    fig, axes = panels(1, width=9.0, height=3.4)
    ax = axes[0]
    series = _series(stats, archs, groups, names)
    for _, std in series.values():
        std[np.isnan(std)] = 0.0  # a single seed: no error bar
    grouped_bars(ax, groups, series, ylabel, percent=percent)
    ax.tick_params(axis="x", labelsize=8)
    ax.axhline(0, color="black", linewidth=0.6)
    return fig, ax, series


def removed_drop_figure(accuracy: pd.DataFrame, arch_names: dict[str, str] | None = None):
    """Paper Fig. 6a: bars per removed class (and all classes), one colour per arch."""
    stats = removed_class_drop(accuracy, overall=True)
    groups = list(dict.fromkeys(stats["removed_class"]))
    if groups == [ALL_CLASSES]:
        raise ValueError("CIFAR-10 'accuracy' table has no without_<class> mask with a matching control run")
    fig, ax, series = _bar_panel(stats, groups, arch_names, "relative drop of the removed class", percent=True)
    _mark_missing(ax, series, 1)
    ax.axvline(len(groups) - 1.5, color="#999999", linewidth=0.8, linestyle=":")
    top = np.nanmax([np.nanmax(m + s) if np.isfinite(m).any() else 0 for m, s in series.values()]) * 100
    bottom = np.nanmin([np.nanmin(m - s) if np.isfinite(m).any() else 0 for m, s in series.values()]) * 100
    ax.set_ylim(min(0, bottom - 5), max(105, top + 5))
    ax.set_xlabel("class removed from the mask's training data")
    return finish(fig, [ax], FIGURES["removed_drop"][1])


def other_drop_figure(accuracy: pd.DataFrame, arch_names: dict[str, str] | None = None):
    """Paper Fig. 6b: per removed class, the worst other class's relative drop / the removed class's drop;
    the worst other class (most frequent over seeds) written above each bar, 4 letters."""
    stats = other_class_drop_ratio(accuracy)
    groups = list(dict.fromkeys(stats["removed_class"]))
    if not groups:
        raise ValueError("CIFAR-10 'accuracy' table has no without_<class> mask with a matching control run")
    fig, ax, series = _bar_panel(stats, groups, arch_names, "largest other-class drop /\nremoved-class drop",
                                 percent=False)
    _mark_missing(ax, series, 0.02)
    ax.axhline(1, color="black", linewidth=0.9, linestyle="--")
    ax.annotate("other class drops as much as the removed one", (1.0, 1.0), xycoords=("axes fraction", "data"),
                xytext=(0, 2), textcoords="offset points", ha="right", va="bottom", fontsize=7)
    width = 0.8 / max(len(series), 1)
    by = stats.set_index(["arch", "removed_class"])
    for i, arch in enumerate(dict.fromkeys(stats["arch"])):
        mean, std = list(series.values())[i]
        for g, group in enumerate(groups):
            worst = by.loc[(arch, group), "worst_class"]
            if worst is not None and np.isfinite(mean[g]):
                ax.text(g - 0.4 + width * (i + 0.5), max(mean[g] + std[g], 0) + 0.02, short_class(worst),
                        ha="center", va="bottom", rotation=90, fontsize=6, color="#444444")
    top = max([np.nanmax(m + s) for m, s in series.values() if np.isfinite(m).any()] + [1.0])
    bottom = min([np.nanmin(m - s) for m, s in series.values() if np.isfinite(m).any()] + [0.0])
    ax.set_ylim(min(0, bottom - 0.05), max(1.1, top * 1.25 + 0.05))
    ax.set_xlabel("class removed from the mask's training data (above each bar: the other class that drops most)")
    return finish(fig, [ax], FIGURES["other_drop"][1])


def _cell_numbers(ax, values: np.ndarray, threshold: float, fontsize: float, fmt: str = "{:.0f}", skip=None):
    for (i, j), v in np.ndenumerate(values):
        if np.isnan(v) or (skip is not None and abs(v) < skip):
            continue
        ax.text(j, i, fmt.format(v), ha="center", va="center", fontsize=fontsize,
                color="white" if abs(v) > threshold else "black")


def control_confusion_figure(confusion: pd.DataFrame, arch_names: dict[str, str] | None = None):
    """Paper Fig. 18: one panel per arch, the control mask's confusion matrix in percent, numbers in the cells."""
    confusion = _checked_frame(confusion, "confusion", CONFUSION_COLUMNS)
    archs = [a for a in _archs(confusion) if not _mask_rows(confusion, a, CONTROL).empty]
    if not archs:
        raise ValueError(f"CIFAR-10 'confusion' table has no {CONTROL!r} mask rows")
    fig, axes = panels(len(archs), width=5.0, height=4.9)
    for ax, arch in zip(axes, archs):
        matrix = confusion_matrix(confusion, arch, CONTROL) * 100
        image = ax.imshow(matrix.to_numpy(), cmap="Blues", vmin=0, vmax=100)
        _cell_numbers(ax, matrix.to_numpy(), 60, 7)
        ticks = np.arange(len(matrix))
        ax.set_xticks(ticks, list(matrix.columns), rotation=45, ha="right", rotation_mode="anchor", fontsize=8)
        ax.set_yticks(ticks, list(matrix.index), fontsize=8)
        ax.set_xlabel("predicted class")
        ax.set_ylabel("true class")
        ax.set_title(arch_label(arch, arch_names))
        ax.grid(False)
        ax.tick_params(length=0)
        colorbar = fig.colorbar(image, cax=ax.inset_axes([1.03, 0.0, 0.04, 1.0]))
        colorbar.set_label("share of the true class's test images [%]", fontsize=8)
        colorbar.ax.tick_params(labelsize=7)
    return finish(fig, axes, FIGURES["control_confusion"][1], legend=False)


def confusion_diff_figure(confusion: pd.DataFrame, arch: str, number: int | None = None,
                          arch_names: dict[str, str] | None = None):
    """Paper Fig. 19-21 for ``arch``: a 2 x 5 grid, per removed class c, confusion(without_c) - confusion(control)
    in percentage points, one symmetric colour scale for all panels, row c outlined, changes of at least
    5 points written in the cells; class names (4 letters) on the left column and bottom row."""
    confusion = _checked_frame(confusion, "confusion", CONFUSION_COLUMNS)
    number = number if number is not None else diff_figure_numbers([arch])[arch]
    classes = _classes(confusion)
    removed = [c for c in classes if c in set(removed_classes(confusion, arch))]
    if not removed:
        raise ValueError(f"CIFAR-10 'confusion' table has no without_<class> mask rows for arch {arch!r}")
    if _mask_rows(confusion, arch, CONTROL).empty:
        raise ValueError(f"CIFAR-10 'confusion' table has no {CONTROL!r} mask rows for arch {arch!r}")
    shown = [c for c in classes if c in CLASSES] or classes  # one panel per class; missing runs say n/a
    differences = {c: confusion_difference(confusion, arch, c) * 100 for c in removed}
    limit = max(float(np.nanmax(np.abs(d.to_numpy()))) for d in differences.values()) or 1.0
    columns = 5
    rows = int(np.ceil(len(shown) / columns))
    fig = plt.figure(figsize=(14.0, 3.0 * rows + 0.7))
    grid = fig.add_gridspec(rows, columns + 1, width_ratios=[1] * columns + [0.05])
    axes = [fig.add_subplot(grid[i // columns, i % columns]) for i in range(len(shown))]
    image = None
    short = [short_class(c) for c in classes]
    ticks = np.arange(len(classes))
    for index, (ax, c) in enumerate(zip(axes, shown)):
        ax.set_title(c, fontsize=10)
        ax.grid(False)
        # class names on the outer panels only: every panel has the same axes (and it is much faster to draw)
        bottom, left = index + columns >= len(shown), index % columns == 0
        ax.set_xticks(ticks, short, rotation=90)
        ax.set_yticks(ticks, short)
        ax.tick_params(length=0, labelsize=7, labelbottom=bottom, labelleft=left)
        if bottom:
            ax.set_xlabel("predicted class", fontsize=8)
        if left:
            ax.set_ylabel("true class", fontsize=8)
        if c not in differences:
            ax.set_xlim(-0.5, len(classes) - 0.5)
            ax.set_ylim(len(classes) - 0.5, -0.5)
            ax.text(0.5, 0.5, "n/a", ha="center", va="center", transform=ax.transAxes, color="#666666")
            continue
        values = differences[c].to_numpy()
        image = ax.imshow(values, cmap="RdBu_r", vmin=-limit, vmax=limit)
        _cell_numbers(ax, values, 0.6 * limit, 6, "{:+.0f}", skip=5)
        row = classes.index(c)
        ax.add_patch(Rectangle((-0.5, row - 0.5), len(classes), 1, fill=False, edgecolor="black", linewidth=1.5,
                               clip_on=False))
    colorbar = fig.colorbar(image, cax=fig.add_subplot(grid[:, columns]))
    colorbar.set_label("change of the share of the true class's images [percentage points]", fontsize=8)
    title = FIGURES["confusion_diff"][1].format(number=number, arch=arch_label(arch, arch_names))
    return finish(fig, axes, title, legend=False)


def build_all(tables: dict[str, pd.DataFrame], out_dir: str | Path,
              arch_names: dict[str, str] | None = None) -> list[Path]:
    """Every CIFAR-10 figure as PDF and PNG in ``out_dir``; ``arch_names`` overrides ``ARCH_NAMES``
    (e.g. {"resnet": "ResNet-20"} for a shallower ResNet)."""
    accuracy = _checked(tables, "accuracy", ACCURACY_COLUMNS)
    confusion = _checked(tables, "confusion", CONFUSION_COLUMNS)
    drop_rows = _drop_rows(accuracy)
    paths = []
    paths += save_figure(removed_drop_figure(accuracy, arch_names), out_dir, FIGURES["removed_drop"][0],
                         provenance_text(drop_rows))
    paths += save_figure(other_drop_figure(accuracy, arch_names), out_dir, FIGURES["other_drop"][0],
                         provenance_text(drop_rows))
    paths += save_figure(control_confusion_figure(confusion, arch_names), out_dir, FIGURES["control_confusion"][0],
                         provenance_text(confusion[confusion["mask"] == CONTROL]))
    archs = _archs(confusion)
    for arch, number in diff_figure_numbers(archs).items():
        rows = confusion[(confusion["arch"] == arch)
                         & ((confusion["mask"] == CONTROL) | confusion["mask"].str.startswith(WITHOUT))]
        stem = FIGURES["confusion_diff"][0].format(number=number, arch=arch)
        paths += save_figure(confusion_diff_figure(confusion, arch, number, arch_names), out_dir, stem,
                             provenance_text(rows))
    return paths

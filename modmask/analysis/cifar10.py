"""The numbers of the CIFAR-10 class-removal experiment (paper Fig. 6a, 6b, 18-21), from its tidy tables.

For every class c a mask is trained on the pretrained network with c left out of the training data
("without_c"); the "control" mask is trained on all ten classes. Fig. 6a: the relative drop of the removed
class's accuracy, (control - without_c) / control. Fig. 6b: the largest relative drop of any *other* class
under the same mask, divided by the removed class's drop. Fig. 18: the control mask's confusion matrices;
Fig. 19-21: how the confusion matrix changes when a class is removed. Everything is computed per seed, then
the mean and standard deviation over seeds. Pure functions returning tidy frames; the figures
(modmask.plotting.cifar10) and the summary read them.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from . import mean_std

# the CIFAR-10 label order (as modmask.data.cifar10.CLASSES; not imported, so that analysis stays light)
CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
ARCH_ORDER = ("simple_cnn", "simple_cnn_nodrop", "resnet")  # the paper's order (Fig. 19, 20, 21)
CONTROL = "control"
WITHOUT = "without_"
ALL_CLASSES = "all classes"
ACCURACY_COLUMNS = ("arch", "seed", "mask", "class", "accuracy")
CONFUSION_COLUMNS = ("arch", "seed", "mask", "true_class", "predicted_class", "fraction")
_KEY_COLUMNS = ("arch", "mask", "class", "true_class", "predicted_class")
COLUMNS = {"accuracy": ACCURACY_COLUMNS, "confusion": CONFUSION_COLUMNS}  # table -> what the figures read


def checked_table(tables: dict[str, pd.DataFrame], name: str, columns: tuple[str, ...]) -> pd.DataFrame:
    """The table ``name`` with its key columns as plain strings; a ValueError naming what is missing."""
    if name not in tables or tables[name] is None:
        raise ValueError(f"CIFAR-10 figures need the {name!r} table, but only got: {sorted(tables)}")
    return checked_frame(tables[name], name, columns)


def checked_frame(df: pd.DataFrame, name: str, columns: tuple[str, ...]) -> pd.DataFrame:
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise ValueError(f"CIFAR-10 {name!r} table lacks column(s) {missing}; it has {list(df.columns)}")
    return df.astype({c: str for c in _KEY_COLUMNS if c in df.columns})


def archs_in(df: pd.DataFrame) -> list[str]:
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


def drop_rows(accuracy: pd.DataFrame) -> pd.DataFrame:
    """The accuracy rows Fig. 6 uses: the control mask and every without_<class> mask."""
    return accuracy[(accuracy["mask"] == CONTROL) | accuracy["mask"].str.startswith(WITHOUT)]


def class_drops(accuracy: pd.DataFrame) -> pd.DataFrame:
    """Relative drop of every class under every without_<c> mask, per seed.

    One row per (arch, seed, removed_class, class) with ``control`` (the class's accuracy through the control
    mask of the same arch and seed), ``accuracy`` (through the mask without ``removed_class``) and
    ``drop`` = (control - accuracy) / control; NaN where the control accuracy is 0. The removed class is taken
    from the mask name. Rows without a control run of the same (arch, seed) are left out.
    """
    accuracy = checked_frame(accuracy, "accuracy", ACCURACY_COLUMNS)
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
    archs = archs_in(checked_frame(accuracy, "accuracy", ACCURACY_COLUMNS))
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
    archs = archs_in(checked_frame(accuracy, "accuracy", ACCURACY_COLUMNS))
    classes = _ordered_classes(class_drops(accuracy)["removed_class"])
    out = _stats(rows, ["arch", "removed_class"], [archs, classes], "ratio")
    worst = (rows.groupby(["arch", "removed_class"]).apply(_most_frequent, include_groups=False).rename("worst_class")
             if len(rows) else pd.Series(dtype=object, name="worst_class"))
    out.insert(2, "worst_class", [worst.get((a, c)) for a, c in zip(out["arch"], out["removed_class"])])
    return out


def classes_in(confusion: pd.DataFrame) -> list[str]:
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


def mask_rows(confusion: pd.DataFrame, arch: str, mask: str) -> pd.DataFrame:
    return confusion[(confusion["arch"] == arch) & (confusion["mask"] == mask)]


def confusion_matrix(confusion: pd.DataFrame, arch: str, mask: str) -> pd.DataFrame:
    """Mean over seeds of the confusion fractions of ``arch`` through ``mask``: rows true class, columns predicted."""
    confusion = checked_frame(confusion, "confusion", CONFUSION_COLUMNS)
    rows = mask_rows(confusion, arch, mask)
    if rows.empty:
        raise ValueError(f"CIFAR-10 'confusion' table has no rows for arch {arch!r} and mask {mask!r}")
    return _mean_matrix(rows, classes_in(confusion))


def confusion_difference(confusion: pd.DataFrame, arch: str, removed_class: str) -> pd.DataFrame:
    """confusion(without_<removed_class>) - confusion(control) of ``arch``, mean over the seeds that ran both."""
    confusion = checked_frame(confusion, "confusion", CONFUSION_COLUMNS)
    without = mask_rows(confusion, arch, WITHOUT + removed_class)
    control = mask_rows(confusion, arch, CONTROL)
    seeds = set(without["seed"]) & set(control["seed"])
    if not seeds:
        raise ValueError(f"CIFAR-10 'confusion' table has no seed of arch {arch!r} with both the "
                         f"{CONTROL!r} and the {WITHOUT + removed_class!r} mask")
    classes = classes_in(confusion)
    return (_mean_matrix(without[without["seed"].isin(seeds)], classes)
            - _mean_matrix(control[control["seed"].isin(seeds)], classes))


def removed_classes(confusion: pd.DataFrame, arch: str) -> list[str]:
    """The classes ``arch`` has a without_<class> mask for, in CIFAR-10 label order."""
    masks = confusion.loc[(confusion["arch"] == arch) & confusion["mask"].str.startswith(WITHOUT), "mask"]
    return _ordered_classes(_removed(masks.astype(str)))


def largest_confusions(confusion: pd.DataFrame, arch: str, k: int = 3) -> pd.DataFrame:
    """Where each removed class's images go: per removed class c, the ``k`` largest positive entries of row c
    of ``confusion_difference`` off the diagonal (columns arch, removed_class, predicted_class, increase)."""
    confusion = checked_frame(confusion, "confusion", CONFUSION_COLUMNS)
    rows = []
    for removed in removed_classes(confusion, arch):
        difference = confusion_difference(confusion, arch, removed)
        if removed not in difference.index:
            continue
        row = difference.loc[removed].drop(removed, errors="ignore")
        row = row[row > 0].sort_values(ascending=False, kind="stable").head(k)
        rows += [{"arch": arch, "removed_class": removed, "predicted_class": p, "increase": v} for p, v in row.items()]
    return pd.DataFrame(rows, columns=["arch", "removed_class", "predicted_class", "increase"])

"""The paper's headline findings beside ours, computed from the Parquet tables alone (Markdown)."""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from .io import read_table
from .metrics import TOTAL

# Tables that may hold no rows (SCAN's output weights when no mask covers the output layer; no stability
# networks): without rows they pass as they are.
MAY_BE_EMPTY = ("scan/output_weights", "cifar10/stability")


def _table(results: Path, name: str, columns) -> pd.DataFrame:
    """``<results>/<name>.parquet`` with the ``columns`` the caller reads, else an error naming the file and
    the missing columns."""
    return read_table(results / f"{name}.parquet", columns, allow_empty=name in MAY_BE_EMPTY)


def _ms_joined(series: list[pd.Series], percent: bool = True, digits: int = 1, sep: str = " / ",
               labels: list[str] | None = None) -> str:
    """Several findings side by side (each after its label, if given): "mean ± std" each, or, where every
    one has a single value, the values and "(one seed)" once."""
    if all(len(values) == 1 for values in series):
        scale, unit = (100.0, "%") if percent else (1.0, "")
        texts, suffix = [f"{values.iloc[0] * scale:.{digits}f}{unit}" for values in series], " (one seed)"
    else:
        texts, suffix = [_ms(values, percent, digits) for values in series], ""
    if labels is not None:
        texts = [f"{label} {text}" for label, text in zip(labels, texts)]
    return sep.join(texts) + suffix


def _ms(values: pd.Series, percent: bool = False, digits: int = 1, of: str = "seed", unit: str | None = None) -> str:
    """"mean ± std" of ``values`` (one per ``of``); a single value has no spread and says so. ``unit``
    follows each number (default "%" with ``percent``, else nothing)."""
    scale = 100.0 if percent else 1.0
    mean = values.mean() * scale
    unit = ("%" if percent else "") if unit is None else unit
    if len(values) == 1:
        return f"{mean:.{digits}f}{unit} (one {of})"
    std = values.std(ddof=1) * scale
    return f"{mean:.{digits}f}{unit} ± {std:.{digits}f}{unit}"


def addmul_rows(results: Path) -> list[tuple[str, str, str]]:
    layers = _table(results, "addmul/layers", ("arch", "seed", "mask", "layer", "kept"))
    sharing = _table(results, "addmul/sharing", ("arch", "seed", "mask", "layer", "layer_index", "shared_fraction"))
    accuracy = _table(results, "addmul/accuracy", ("arch", "seed", "split", "mask", "inverted", "operation", "accuracy"))
    confusion = _table(results, "addmul/confusion",
                       ("arch", "seed", "mask", "inverted", "operation", "outcome", "fraction"))
    rows = []
    for arch in dict.fromkeys(layers["arch"]):
        name = arch.upper()
        totals = layers[(layers["arch"] == arch) & (layers["layer"] == TOTAL)].pivot_table(
            index="seed", columns="mask", values="kept")
        rows.append((f"add/mul {name}: weights kept by the mul mask / by the add mask",
                     "3.8× (FNN)" if arch == "fnn" else "—", _ms(totals["mul"] / totals["add"], digits=2) + "×"))
        share = sharing[sharing["arch"] == arch]
        order = share[share["layer"] != TOTAL].drop_duplicates("layer").sort_values("layer_index")["layer"].tolist()
        first, last, hidden = order[0], order[-1], order[1:-1]
        for mask in ("add", "mul"):
            s = share[share["mask"] == mask]
            per = s.pivot_table(index="seed", columns="layer", values="shared_fraction")
            rows.append((f"add/mul {name}: shared fraction of the {mask} mask, input / hidden (mean) / output layer",
                         "input and output layers share more than hidden layers",
                         f"{_ms(per[first], True, 0)} / {_ms(per[hidden].mean(axis=1), True, 0)} / "
                         f"{_ms(per[last], True, 0)}"))
        acc = accuracy[(accuracy["arch"] == arch) & (accuracy["split"] == "train")]
        pivot = acc.pivot_table(index="seed", columns=["mask", "inverted", "operation"], values="accuracy")
        rows.append((f"add/mul {name}: accuracy without mask, add / mul", "~100%",
                     f"{_ms(pivot[('none', False, 'add')], True)} / {_ms(pivot[('none', False, 'mul')], True)}"))
        rows.append((f"add/mul {name}: add mask, accuracy on add / on mul", "high / low",
                     f"{_ms(pivot[('add', False, 'add')], True)} / {_ms(pivot[('add', False, 'mul')], True)}"))
        rows.append((f"add/mul {name}: mul mask, accuracy on add / on mul", "low / high",
                     f"{_ms(pivot[('mul', False, 'add')], True)} / {_ms(pivot[('mul', False, 'mul')], True)}"))
        conf = confusion[(confusion["arch"] == arch) & (confusion["mask"] == "add") & (~confusion["inverted"])
                         & (confusion["operation"] == "mul")].pivot_table(index="seed", columns="outcome",
                                                                           values="fraction")
        paper = "FNN adds (Fig. 12)" if arch == "fnn" else "LSTM gives invalid answers (Fig. 12)"
        rows.append((f"add/mul {name}: add mask asked to multiply, answer = add result / mul result / neither", paper,
                     f"{_ms(conf['add_result'], True, 0)} / {_ms(conf['mul_result'], True, 0)} / "
                     f"{_ms(conf['neither'], True, 0)}"))
    return rows


LAYER_SIZE_COLUMNS = ("arch", "layer", "layer_index", "size")  # what _inner_layer_sizes reads


def _inner_layer_sizes(layers: pd.DataFrame, arch: str) -> tuple[tuple[str, int], ...]:
    """Names and sizes of an architecture's weight matrices except the first and last: "the same
    size" compares these, since the input and output layers differ between experiments (the names
    tell an FNN's hidden layer from an LSTM's recurrent map of the same size)."""
    own = layers[(layers["arch"] == arch) & (layers["layer"] != TOTAL)]
    own = own.drop_duplicates("layer").sort_values("layer_index")
    return tuple(zip(own["layer"], own["size"]))[1:-1]


def double_add_rows(results: Path) -> list[tuple[str, str, str]]:
    accuracy = _table(results, "double_add/accuracy", ("arch", "seed", "mask", "inverted", "pair", "accuracy"))
    sharing = _table(results, "double_add/sharing", ("arch", "seed", "layer", "shared_fraction"))
    layers = _table(results, "double_add/layers", LAYER_SIZE_COLUMNS)
    addmul_sharing = _table(results, "addmul/sharing", ("arch", "seed", "layer", "shared_fraction"))
    addmul_layers = _table(results, "addmul/layers", LAYER_SIZE_COLUMNS)
    addmul_by_size = {_inner_layer_sizes(addmul_layers, a): a for a in dict.fromkeys(addmul_layers["arch"])}
    rows = []
    for arch in dict.fromkeys(accuracy["arch"]):
        pivot = accuracy[accuracy["arch"] == arch].pivot_table(index="seed", columns=["mask", "inverted", "pair"],
                                                               values="accuracy")
        rows.append((f"double add {arch}: accuracy without mask, pair 1 / pair 2", "~100%",
                     f"{_ms(pivot[('none', False, 1)], True)} / {_ms(pivot[('none', False, 2)], True)}"))
        rows.append((f"double add {arch}: pair-1 mask inverted, accuracy on pair 1 / pair 2",
                     "pair 1 destroyed, pair 2 almost intact",
                     f"{_ms(pivot[('pair1', True, 1)], True)} / {_ms(pivot[('pair1', True, 2)], True)}"))
        rows.append((f"double add {arch}: pair-2 mask inverted, accuracy on pair 1 / pair 2",
                     "pair 2 destroyed, pair 1 almost intact",
                     f"{_ms(pivot[('pair2', True, 1)], True)} / {_ms(pivot[('pair2', True, 2)], True)}"))
        total = sharing[(sharing["arch"] == arch) & (sharing["layer"] == TOTAL)].groupby("seed")["shared_fraction"].mean()
        same_size = addmul_by_size.get(_inner_layer_sizes(layers, arch))
        if same_size is not None:
            other = addmul_sharing[(addmul_sharing["arch"] == same_size) & (addmul_sharing["layer"] == TOTAL)]
            rows.append((f"double add {arch}: total sharing (mean of both masks) vs add/mul {same_size} (same size)",
                         "lower than add/mul",
                         f"{_ms(total, True, 0)} vs {_ms(other.groupby('seed')['shared_fraction'].mean(), True, 0)}"))
        else:
            rows.append((f"double add {arch}: total sharing (mean of both masks); no add/mul network of this size",
                         "low", _ms(total, True, 0)))
    return rows


def sweep_rows(results: Path) -> list[tuple[str, str, str]]:
    path = results / "addmul" / "sweeps" / "sharing.parquet"
    if not path.exists():
        return []
    sharing = _table(results, "addmul/sweeps/sharing", ("arch", "beta", "mask", "layer", "shared_fraction"))
    layers = _table(results, "addmul/sweeps/layers", ("arch", "layer", "size"))
    sizes = layers[layers["layer"] == TOTAL].drop_duplicates("arch").set_index("arch")["size"]
    total = sharing[(sharing["layer"] == TOTAL) & (sharing["mask"] == "add")]
    # how well the mul mask still multiplies: where a β or a size is past the useful range
    accuracy = _table(results, "addmul/sweeps/accuracy", ("arch", "beta", "mask", "inverted", "operation", "accuracy"))
    mul = accuracy[(accuracy["mask"] == "mul") & (accuracy["operation"] == "mul") & ~accuracy["inverted"]]
    rows = []
    for arch, group in total.groupby("arch"):
        by_beta = group.groupby("beta")["shared_fraction"].mean()
        if len(by_beta) > 1:
            text = ", ".join(f"β={b:g}: {v * 100:.0f}%" for b, v in by_beta.items())
            rows.append((f"sweep: total sharing of the add mask vs β, {arch}", "fairly flat over 1e-5..1e-3 (Fig. 8)",
                         text))
            mul_by_beta = mul[mul["arch"] == arch].groupby("beta")["accuracy"].mean()
            rows.append((f"sweep: accuracy of the mul mask on mul vs β, {arch}", "high up to large β (Fig. 8)",
                         ", ".join(f"β={b:g}: {v * 100:.1f}%" for b, v in mul_by_beta.items())))
    common = set.intersection(*(set(g["beta"]) for _, g in total.groupby("arch")))
    if common:
        beta = sorted(common)[len(common) // 2]
        at = total[total["beta"] == beta].groupby("arch")["shared_fraction"].mean()
        order = sorted(at.index, key=lambda a: sizes.get(a, 0))
        rows.append((f"sweep: total sharing of the add mask vs network size (β={beta:g})",
                     "decreases as the network grows (Fig. 9)",
                     ", ".join(f"{a} ({sizes.get(a, 0) / 1e3:.0f}k): {at[a] * 100:.0f}%" for a in order)))
        mul_at = mul[mul["beta"] == beta].groupby("arch")["accuracy"].mean()
        rows.append((f"sweep: accuracy of the mul mask on mul vs network size (β={beta:g})", "high",
                     ", ".join(f"{a}: {mul_at[a] * 100:.1f}%" for a in order if a in mul_at.index)))
    return rows


PM_LAYERS = {"layers.1.weight": "layer 2", "layers.2.weight": "layer 3", "layers.3.weight": "layer 4"}


def permuted_mnist_rows(results: Path) -> list[tuple[str, str, str]]:
    sharing = _table(results, "permuted_mnist/sharing", ("variant", "seed", "task", "layer", "shared_fraction"))
    accuracy = _table(results, "permuted_mnist/accuracy", ("variant", "seed", "mask", "accuracy"))
    tasks = sorted(t for t in sharing["task"].unique() if t > 0 and t % 2 == 0)
    rows = []
    for variant in dict.fromkeys(sharing["variant"]):
        s = sharing[sharing["variant"] == variant]
        parts = []
        for layer, label in PM_LAYERS.items():
            per = s[s["layer"] == layer].pivot_table(index="seed", columns="task", values="shared_fraction")
            parts.append(f"{label}: " + " → ".join(f"{per[t].mean() * 100:.0f}" for t in tasks))
        rows.append((f"permuted MNIST ({variant} init): % of task t's weights used by an earlier task, "
                     f"after task {', '.join(map(str, tasks))}",
                     "low while free capacity remains, rising as a layer fills up (output layer first)",
                     "; ".join(parts)))
        first = s[(s["layer"] == "layers.1.weight") & (s["task"] == 1)].set_index("seed")["shared_fraction"]
        if len(first):
            rows.append((f"permuted MNIST ({variant} init): % of task 1's layer-2 weights that task 0 used",
                         "low (Fig. 3)" if variant == "normal" else "—", _ms(first, True)))
        a = accuracy[(accuracy["variant"] == variant) & (accuracy["mask"] == "own_mask")]
        per_seed = a.groupby("seed")["accuracy"].mean()
        rows.append((f"permuted MNIST ({variant} init): test accuracy with its mask, mean over tasks",
                     "high", _ms(per_seed, True)))
    rows += _permuted_mnist_capacity_rows(results)
    total = sharing[(sharing["layer"] == TOTAL) & (sharing["task"] > 0)]
    if {"normal", "used2_new-1"} <= set(total["variant"]):
        per = total.groupby(["variant", "seed"])["shared_fraction"].mean()
        rows.append((f"permuted MNIST: total sharing (layers 2-4), mean over tasks 1-{int(total['task'].max())}, "
                     "normal vs used 2 / new -1 init",
                     "more sharing with used 2 / new -1 (Fig. 15b)",
                     f"{_ms(per['normal'], True, 0)} vs {_ms(per['used2_new-1'], True, 0)}"))
    return rows


def _permuted_mnist_capacity_rows(results: Path) -> list[tuple[str, str, str]]:
    """Which layer fills first: the share of each layer frozen after the first and after the last task."""
    try:
        layers = _table(results, "permuted_mnist/layers", ("variant", "seed", "task", "layer", "frozen_fraction"))
    except FileNotFoundError:
        return []
    normal = layers[layers["variant"] == "normal"]
    if normal.empty:
        return []
    first, last = int(normal["task"].min()), int(normal["task"].max())
    parts = []
    for layer, label in PM_LAYERS.items():
        per = normal[normal["layer"] == layer].pivot_table(index="seed", columns="task", values="frozen_fraction")
        parts.append(f"{label}: {_ms(per[first], True)} → {_ms(per[last], True)}")
    return [(f"permuted MNIST (normal init): % of each layer frozen after task {first} → after task {last}",
             "the output layer fills first, then the last hidden layer (Fig. 3)", "; ".join(parts))]


SCAN_SPLITS = {"length": "length", "addprim_jump": "add jump", "addprim_turn_left": "add turn left"}


def scan_rows(results: Path) -> list[tuple[str, str, str]]:
    accuracy = _table(results, "scan/accuracy",
                      ("arch", "seed", "network", "trained_on", "mask", "test_split", "accuracy"))
    weights = _table(results, "scan/output_weights", ("arch", "seed", "mask", "token", "removed_fraction"))
    rows = []
    for arch in dict.fromkeys(accuracy["arch"]):
        a = accuracy[accuracy["arch"] == arch]
        pretrained, direct = a[a["network"] == "pretrained"], a[a["network"] == "direct"]
        splits = {"simple": "simple", **SCAN_SPLITS}
        for mask, label in (("none", "without a mask"), ("simple", "through the full-problem (IID) mask")):
            per_split = [pretrained[(pretrained["mask"] == mask) & (pretrained["test_split"] == split)]
                         .set_index("seed")["accuracy"] for split in splits]
            if any(values.empty for values in per_split):
                continue
            rows.append((f"SCAN {arch}: the IID-trained network {label}, on the {' / '.join(splits.values())} "
                         "test sets", "solves every test set", _ms_joined(per_split)))
        for split, label in SCAN_SPLITS.items():
            on_test = pretrained[pretrained["test_split"] == split]
            iid = on_test[on_test["mask"] == "simple"].set_index("seed")["accuracy"]
            own = on_test[on_test["mask"] == split].set_index("seed")["accuracy"]
            rows.append((f"SCAN {arch}, {label} test set: full-problem (IID) mask vs the split's own mask",
                         "IID mask solves it; the split's mask loses clearly on length and add jump",
                         f"{_ms(iid, True)} vs {_ms(own, True)}"))
            alone = direct[(direct["trained_on"] == split) & (direct["test_split"] == split)]["accuracy"]
            rows.append((f"SCAN {arch}, {label} test set: network trained directly on the split (Fig. 16)",
                         "fails on length and add jump", _ms(alone, True)))
        w = weights[(weights["arch"] == arch) & (weights["mask"] == "addprim_jump")]
        if len(w):
            per = w.pivot_table(index="seed", columns="token", values="removed_fraction")
            others = per.drop(columns=["I_JUMP"]).filter(like="I_").mean(axis=1)
            rows.append((f"SCAN {arch}: % of the IID mask's output weights into I_JUMP removed by the add-jump "
                         "mask, vs the mean of the other actions (Fig. 4b)", "about half for I_JUMP, few for the rest",
                         f"{_ms(per['I_JUMP'], True)} vs {_ms(others, True)}"))
    return rows


CIFAR_SEMANTIC = ("cat", "dog", "automobile", "truck", "airplane")


def cifar10_rows(results: Path) -> list[tuple[str, str, str]]:
    from .analysis import cifar10 as cifar_numbers
    from .analysis.cifar10 import CONTROL
    from .experiments.cifar10 import NONE

    accuracy = _table(results, "cifar10/accuracy", cifar_numbers.ACCURACY_COLUMNS)
    confusion = _table(results, "cifar10/confusion", cifar_numbers.CONFUSION_COLUMNS)
    drops = cifar_numbers.class_drops(accuracy)
    rows = []
    for arch in dict.fromkeys(drops["arch"]):
        d = drops[drops["arch"] == arch]
        own = d[d["class"] == d["removed_class"]]
        other = d[d["class"] != d["removed_class"]].groupby(["seed", "removed_class"])["drop"].max()
        ratio = (other / own.set_index(["seed", "removed_class"])["drop"]).groupby("seed").mean()
        removed = own["removed_class"].nunique()
        rows.append((f"CIFAR-10 {arch}: relative accuracy drop of the removed class, mean over the {removed} "
                     f"removed class{'es' if removed != 1 else ''} (Fig. 6a)",
                     "40-60% simple CNN, more with dropout, almost 100% ResNet-110",
                     _ms(own.groupby("seed")["drop"].mean(), True)))
        by_class = {cls: d_cls.set_index("seed")["drop"] for cls, d_cls in own.groupby("removed_class", sort=True)}
        rows.append((f"CIFAR-10 {arch}: relative accuracy drop of each removed class", "40-60% simple CNN",
                     _ms_joined(list(by_class.values()), digits=0, sep="; ", labels=list(by_class))))
        rows.append((f"CIFAR-10 {arch}: largest drop of another class / drop of the removed class, mean over "
                     "classes (Fig. 6b)", "well below 1", _ms(ratio, False, 2)))
        overall = accuracy[accuracy["arch"] == arch].groupby(["mask", "seed"])["accuracy"].mean()
        if NONE in overall.index.get_level_values(0) and CONTROL in overall.index.get_level_values(0):
            change = overall.loc[CONTROL] - overall.loc[NONE]
            rows.append((f"CIFAR-10 {arch}: test accuracy without a mask, and the control mask's change",
                         "control close to the network", f"{_ms(overall.loc[NONE], True)}; control mask "
                         f"{_ms(change * 100, unit=' points')}"))
        top = cifar_numbers.largest_confusions(confusion, arch, k=1).set_index("removed_class")
        parts = [f"{c} → {top.loc[c, 'predicted_class']} (+{top.loc[c, 'increase'] * 100:.0f} pp)"
                 for c in CIFAR_SEMANTIC if c in top.index]
        rows.append((f"CIFAR-10 {arch}: where the removed class's images go (largest confusion increase)",
                     "semantic: cat ↔ dog, automobile ↔ truck, airplane → bird / ship", "; ".join(parts)))
    stability = _table(results, "cifar10/stability", ("arch", "iou"))
    if len(stability):
        rows.append((f"CIFAR-10 mask stability ({stability['arch'].iloc[0]}): IoU of two masks trained with different "
                     f"seeds, {len(stability)} (network, class pair) cases", "93.26 ± 0.96%",
                     _ms(stability["iou"], True, 2, of="pair")
                     + (f"; a mask keeps {stability[['kept_a', 'kept_b']].to_numpy().mean():,.0f} weights on average"
                        if {"kept_a", "kept_b"} <= set(stability.columns) else "")))
    return rows


def cifar10_mask_length_rows(results: Path) -> list[tuple[str, str, str]]:
    """How the CIFAR-10 masks changed with training length and learning rate (benchmarks/cifar10_mask_length.py):
    per network, each probe's last step."""
    from .analysis.cifar10 import CONTROL, WITHOUT

    probes = _table(results, "cifar10/mask_length", ("arch", "scale", "lr", "steps", "beta", "removed_class", "mask",
                                                     "step", "kept", "accuracy", "removed_class_accuracy"))
    rows = []
    for (arch, scale, cls), runs in probes.groupby(["arch", "scale", "removed_class"], sort=False):
        parts = []
        for (lr, steps), run in runs.groupby(["lr", "steps"], sort=False):
            last = run[run["step"] == steps].set_index("mask")
            unmasked = run[run["mask"] == "none"].iloc[0]
            removal = WITHOUT + cls
            if CONTROL not in last.index or removal not in last.index:
                continue
            control = last.loc[CONTROL]
            drop = 1 - last.loc[removal, "removed_class_accuracy"] / control["removed_class_accuracy"]
            change = 100 * (control["accuracy"] - unmasked["accuracy"])
            parts.append(f"{steps:,} steps at lr {lr:g}: control {change:+.1f} points, keeps "
                         f"{100 * control['kept']:.1f}%; {cls} drops {100 * drop:.0f}%")
        if parts:
            rows.append((f"CIFAR-10 {arch} ({scale} network) mask length at beta {runs['beta'].iloc[0]:g}: control "
                         f"accuracy change, weights kept, relative drop of {cls} without it",
                         "20k steps at lr 1e-3", "; ".join(parts)))
    return rows


def mathematics_rows(results: Path) -> list[tuple[str, str, str]]:
    from .analysis.mathematics import task_label

    accuracy = _table(results, "mathematics/accuracy", ("task", "seed", "mask", "test_level", "accuracy"))
    hard = accuracy[accuracy["test_level"] == "hard"]
    rows = []
    for task in dict.fromkeys(hard["task"]):
        per_mask = {m: hard[(hard["task"] == task) & (hard["mask"] == m)].set_index("seed")["accuracy"]
                    for m in ("none", "control", "easy")}
        rows.append((f"Mathematics {task_label(task)}: hard test accuracy, no mask / control mask / easy-only mask "
                     "(Fig. 5)", "the easy mask loses accuracy on hard",
                     _ms_joined([per_mask[m] for m in ("none", "control", "easy")])))
    return rows


PARTS = (addmul_rows, double_add_rows, sweep_rows, permuted_mnist_rows, scan_rows, cifar10_rows,
         cifar10_mask_length_rows, mathematics_rows)


def rows_of(parts, results: str | Path) -> list[tuple[str, str, str]]:
    """The findings of ``parts`` whose tables exist under ``results`` (a part without them is left out)."""
    rows = []
    for part in parts:
        try:
            rows += part(Path(results))
        except FileNotFoundError:
            continue
    return rows


def markdown(results: str | Path) -> str:
    rows = rows_of(PARTS, results)
    lines = ["| finding | paper | ours (mean ± std over seeds) |", "|---|---|---|"]
    lines += [f"| {a} | {b} | {c} |" for a, b, c in rows]
    return "\n".join(lines) + "\n"

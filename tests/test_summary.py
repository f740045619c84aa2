"""The findings table is computed from Parquet tables: check it on small hand-made tables."""
from __future__ import annotations

import pandas as pd

from modmask.summary import double_add_rows


def _layers(arch: str, sizes: list[int]) -> list[dict]:
    rows = [{"arch": arch, "seed": 0, "mask": "pair1", "layer": f"l{i}", "layer_index": i, "size": size}
            for i, size in enumerate(sizes)]
    return rows + [{"arch": arch, "seed": 0, "mask": "pair1", "layer": "total", "layer_index": len(sizes),
                    "size": sum(sizes)}]


def _sharing(arch: str, values: dict[int, float], masks=("a", "b")) -> list[dict]:
    return [{"arch": arch, "seed": seed, "mask": mask, "layer": "total", "shared_fraction": value}
            for seed, value in values.items() for mask in masks]


def test_double_add_sharing_is_compared_with_the_add_mul_network_of_the_same_inner_size(tmp_path):
    (tmp_path / "double_add").mkdir()
    (tmp_path / "addmul").mkdir()
    accuracy = [{"arch": arch, "seed": seed, "mask": mask, "inverted": inverted, "pair": pair, "accuracy": 0.5}
                for arch in ("wide", "odd") for seed in (0, 1)
                for mask, inverted in (("none", False), ("pair1", True), ("pair2", True)) for pair in (1, 2)]
    pd.DataFrame(accuracy).to_parquet(tmp_path / "double_add" / "accuracy.parquet")
    # Input/output layers differ from add/mul's (80 vs 42 inputs), the inner 800 x 800 matrix is the same.
    pd.DataFrame(_layers("wide", [80 * 800, 800 * 800, 800 * 40]) + _layers("odd", [80 * 7, 7 * 7, 7 * 40])
                 ).to_parquet(tmp_path / "double_add" / "layers.parquet")
    pd.DataFrame(_sharing("wide", {0: 0.10, 1: 0.30}, ("pair1", "pair2")) + _sharing("odd", {0: 0.2, 1: 0.2})
                 ).to_parquet(tmp_path / "double_add" / "sharing.parquet")
    # "lstm" has an inner matrix of the same size as "wide"'s, but under another name: not the same network
    lstm = [dict(row, layer=row["layer"].replace("l1", "recurrent")) for row in _layers("lstm", [42 * 3, 800 * 800, 5])]
    pd.DataFrame(_layers("fnn", [42 * 800, 800 * 800, 800 * 20]) + lstm + _layers("big", [42 * 900, 900 * 900, 900 * 20])
                 ).to_parquet(tmp_path / "addmul" / "layers.parquet")
    pd.DataFrame(_sharing("fnn", {0: 0.40, 1: 0.60}, ("add", "mul")) + _sharing("big", {0: 0.9})
                 ).to_parquet(tmp_path / "addmul" / "sharing.parquet")

    rows = {finding: ours for finding, _, ours in double_add_rows(tmp_path)}
    # mean over seeds of 10% and 30% is 20%, std 14%; add/mul fnn: 40%, 60% -> 50% +- 14%
    assert rows["double add wide: total sharing (mean of both masks) vs add/mul fnn (same size)"] == \
        "20% ± 14% vs 50% ± 14%"
    assert rows["double add odd: total sharing (mean of both masks); no add/mul network of this size"] == "20% ± 0%"
    assert rows["double add wide: pair-1 mask inverted, accuracy on pair 1 / pair 2"] == "50.0% ± 0.0% / 50.0% ± 0.0%"


def scan_rows_of_seed_0(tmp_path, accuracy: pd.DataFrame, weights: pd.DataFrame) -> dict[str, str]:
    from modmask.summary import scan_rows

    folder = tmp_path / "seed0"
    (folder / "scan").mkdir(parents=True)
    accuracy[accuracy["seed"] == 0].to_parquet(folder / "scan" / "accuracy.parquet")
    weights[weights["seed"] == 0].to_parquet(folder / "scan" / "output_weights.parquet")
    return {finding: ours for finding, _, ours in scan_rows(folder)}


def test_scan_rows_compare_the_iid_mask_with_the_split_mask_and_single_out_i_jump(tmp_path):
    from modmask.summary import scan_rows

    (tmp_path / "scan").mkdir()
    accuracy = []
    for seed, (iid, own) in enumerate([(0.9, 0.1), (0.7, 0.3)]):
        for split in ("length", "addprim_jump", "addprim_turn_left"):
            accuracy += [
                {"arch": "lstm", "seed": seed, "network": "pretrained", "trained_on": "simple", "mask": "simple",
                 "test_split": split, "accuracy": iid},
                {"arch": "lstm", "seed": seed, "network": "pretrained", "trained_on": "simple", "mask": split,
                 "test_split": split, "accuracy": own},
                {"arch": "lstm", "seed": seed, "network": "direct", "trained_on": split, "mask": "none",
                 "test_split": split, "accuracy": 0.05},
            ]
        for split, no_mask in (("simple", 0.99), ("length", 0.9 - 0.1 * seed), ("addprim_jump", 0.98),
                               ("addprim_turn_left", 0.97)):
            accuracy.append({"arch": "lstm", "seed": seed, "network": "pretrained", "trained_on": "simple",
                             "mask": "none", "test_split": split, "accuracy": no_mask})
        accuracy.append({"arch": "lstm", "seed": seed, "network": "pretrained", "trained_on": "simple",
                         "mask": "simple", "test_split": "simple", "accuracy": 1.0})
    weights = [{"arch": "lstm", "seed": seed, "mask": "addprim_jump", "token": token, "removed_fraction": value}
               for seed in (0, 1) for token, value in
               [("<eos>", 0.9), ("I_JUMP", 0.5 + 0.1 * seed), ("I_WALK", 0.1), ("I_RUN", 0.3)]]
    pd.DataFrame(accuracy).to_parquet(tmp_path / "scan" / "accuracy.parquet")
    pd.DataFrame(weights).to_parquet(tmp_path / "scan" / "output_weights.parquet")
    rows = {finding: ours for finding, _, ours in scan_rows(tmp_path)}
    # mean ± sample std over the two seeds: (0.9, 0.7) and (0.1, 0.3)
    assert rows["SCAN lstm, add jump test set: full-problem (IID) mask vs the split's own mask"] == \
        "80.0% ± 14.1% vs 20.0% ± 14.1%"
    assert rows["SCAN lstm, length test set: network trained directly on the split (Fig. 16)"] == "5.0% ± 0.0%"
    # length without a mask: seeds 90% and 80% -> 85.0% ± 7.1%; the IID mask: 100% on simple, then (0.9, 0.7)
    assert rows["SCAN lstm: the IID-trained network without a mask, on the simple / length / add jump / add turn "
                "left test sets"] == "99.0% ± 0.0% / 85.0% ± 7.1% / 98.0% ± 0.0% / 97.0% ± 0.0%"
    assert rows["SCAN lstm: the IID-trained network through the full-problem (IID) mask, on the simple / length / "
                "add jump / add turn left test sets"] == "100.0% ± 0.0% / 80.0% ± 14.1% / 80.0% ± 14.1% / 80.0% ± 14.1%"
    # one seed: the numbers, then "(one seed)" once
    one = scan_rows_of_seed_0(tmp_path, pd.DataFrame(accuracy), pd.DataFrame(weights))
    assert one["SCAN lstm: the IID-trained network without a mask, on the simple / length / add jump / add turn "
               "left test sets"] == "99.0% / 90.0% / 98.0% / 97.0% (one seed)"
    jump = [ours for finding, ours in rows.items() if "I_JUMP" in finding]
    # I_JUMP 55% ± 7.1%; the other actions 20% (mean of I_WALK, I_RUN; <eos> is not an action)
    assert jump == ["55.0% ± 7.1% vs 20.0% ± 0.0%"]


def test_cifar10_rows_report_the_removed_class_drop_the_worst_other_class_and_the_iou(tmp_path):
    from modmask.summary import cifar10_rows

    classes = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
    (tmp_path / "cifar10").mkdir()
    accuracy, confusion = [], []
    for mask, removed in [("none", None), ("control", None), *[(f"without_{c}", c) for c in classes]]:
        for c in classes:
            # no mask 0.81 everywhere, control 0.8; the removed class falls to 0.2 (drop 0.75), its neighbour
            # to 0.7 (drop 0.125); cat falls to 0.32 (drop 0.6)
            value = 0.81 if mask == "none" else 0.8 if removed is None else \
                (0.32 if c == "cat" else 0.2) if c == removed else \
                0.7 if classes.index(c) == (classes.index(removed) + 1) % 10 else 0.8
            accuracy.append({"arch": "cnn", "seed": 0, "mask": mask, "removed_class": removed, "class": c,
                             "accuracy": value})
            for p in classes:
                fraction = value if p == c else (1 - value) / 9
                if removed == "cat" and c == "cat":
                    fraction = {"cat": 0.2, "dog": 0.5}.get(p, 0.3 / 8)
                confusion.append({"arch": "cnn", "seed": 0, "mask": mask, "removed_class": removed, "true_class": c,
                                  "predicted_class": p, "fraction": fraction})
    pd.DataFrame(accuracy).to_parquet(tmp_path / "cifar10" / "accuracy.parquet")
    pd.DataFrame(confusion).to_parquet(tmp_path / "cifar10" / "confusion.parquet")
    pd.DataFrame({"arch": ["cnn"] * 2, "pair": ["cat+dog", "bird+ship"], "iou": [0.9, 0.8], "kept_a": [1000, 2000],
                  "kept_b": [1500, 1501]}).to_parquet(
        tmp_path / "cifar10" / "stability.parquet")
    rows = {finding: ours for finding, _, ours in cifar10_rows(tmp_path)}
    # one seed: no spread to show
    assert rows["CIFAR-10 cnn: relative accuracy drop of the removed class, mean over the 10 removed classes (Fig. 6a)"] == \
        f"{(9 * 75 + 60) / 10:.1f}% (one seed)"
    per_class = rows["CIFAR-10 cnn: relative accuracy drop of each removed class"]
    assert per_class.endswith(" (one seed)") and per_class.count("(one seed)") == 1  # said once, not per class
    per_class = per_class.removesuffix(" (one seed)").split("; ")
    assert len(per_class) == 10 and "cat 60%" in per_class and "dog 75%" in per_class
    # cat's neighbour drops 0.125 against cat's 0.6; the other nine 0.125 against 0.75
    assert rows["CIFAR-10 cnn: largest drop of another class / drop of the removed class, mean over classes (Fig. 6b)"] \
        == f"{(9 * 0.125 / 0.75 + 0.125 / 0.6) / 10:.2f} (one seed)"
    assert rows["CIFAR-10 cnn: test accuracy without a mask, and the control mask's change"] == \
        "81.0% (one seed); control mask -1.0 points (one seed)"
    # cat's row: dog rises from 0.2/9 to 0.5
    assert f"cat → dog (+{(0.5 - 0.2 / 9) * 100:.0f} pp)" in rows[
        "CIFAR-10 cnn: where the removed class's images go (largest confusion increase)"]
    iou = [ours for finding, ours in rows.items() if "stability" in finding]
    assert iou == ["85.00% ± 7.07%; a mask keeps 1,500 weights on average"]   # (1000 + 2000 + 1500 + 1501) / 4


def test_mathematics_rows_give_hard_accuracy_per_mask(tmp_path):
    from modmask.summary import mathematics_rows

    (tmp_path / "mathematics").mkdir()
    rows = [{"task": "comparison__sort", "seed": seed, "mask": mask, "test_level": level, "accuracy": value}
            for seed, offset in ((0, 0.0), (1, 0.2))
            for mask, value in (("none", 0.6), ("control", 0.5), ("easy", 0.1))
            for level, value in (("hard", value + offset), ("easy", 0.99))]
    pd.DataFrame(rows).to_parquet(tmp_path / "mathematics" / "accuracy.parquet")
    found = {finding: ours for finding, _, ours in mathematics_rows(tmp_path)}
    # hard only; mean ± sample std over the seeds: (0.6, 0.8), (0.5, 0.7), (0.1, 0.3)
    assert found == {"Mathematics sort: hard test accuracy, no mask / control mask / easy-only mask (Fig. 5)":
                     "70.0% ± 14.1% / 60.0% ± 14.1% / 20.0% ± 14.1%"}
    # one seed: the three values, then "(one seed)" once
    pd.DataFrame([r for r in rows if r["seed"] == 0]).to_parquet(tmp_path / "mathematics" / "accuracy.parquet")
    found = {finding: ours for finding, _, ours in mathematics_rows(tmp_path)}
    assert list(found.values()) == ["60.0% / 50.0% / 10.0% (one seed)"]


def test_cifar10_mask_length_rows_compare_the_probes_last_steps(tmp_path):
    from modmask.summary import cifar10_mask_length_rows

    (tmp_path / "cifar10").mkdir()
    rows = []
    for lr, steps, kept, cat in ((1e-3, 8000, 0.8, 0.3), (1e-2, 800, 0.75, 0.15)):
        common = {"arch": "cnn", "scale": "quick", "lr": lr, "steps": steps, "beta": 1e-4, "removed_class": "cat"}
        rows += [{**common, "mask": "none", "step": 0, "kept": 1.0, "accuracy": 0.65, "removed_class_accuracy": 0.6},
                 {**common, "mask": "control", "step": steps // 2, "kept": 0.9, "accuracy": 0.1,
                  "removed_class_accuracy": 0.1},  # not the last step: ignored
                 {**common, "mask": "control", "step": steps, "kept": kept, "accuracy": 0.64,
                  "removed_class_accuracy": 0.6},
                 {**common, "mask": "without_cat", "step": steps, "kept": kept - 0.01, "accuracy": 0.6,
                  "removed_class_accuracy": cat}]
    pd.DataFrame(rows).to_parquet(tmp_path / "cifar10" / "mask_length.parquet")
    [(finding, paper, ours)] = cifar10_mask_length_rows(tmp_path)
    assert "cnn (quick network)" in finding and "beta 0.0001" in finding and paper == "20k steps at lr 1e-3"
    # drops: 1 - 0.3 / 0.6 = 50%, 1 - 0.15 / 0.6 = 75%; the control lost 1 point of the unmasked 65%
    assert ours == ("8,000 steps at lr 0.001: control -1.0 points, keeps 80.0%; cat drops 50%; "
                    "800 steps at lr 0.01: control -1.0 points, keeps 75.0%; cat drops 75%")


def test_sweep_rows_give_sharing_and_the_mul_masks_accuracy_per_beta_and_size(tmp_path):
    from modmask.summary import sweep_rows
    from modmask.metrics import TOTAL

    folder = tmp_path / "addmul" / "sweeps"
    folder.mkdir(parents=True)
    sharing, accuracy = [], []
    for arch, betas in (("small", [1e-4]), ("big", [1e-5, 1e-4, 1e-3])):
        for beta in betas:
            share = {"small": 0.6, "big": 0.5 - beta * 100}[arch]  # big: 0.4990, 0.49, 0.4
            sharing.append({"arch": arch, "beta": beta, "mask": "add", "layer": TOTAL, "shared_fraction": share})
            for inverted, value in ((False, 0.9 if arch == "small" else 1.0 - beta * 300), (True, 0.01)):
                accuracy.append({"arch": arch, "beta": beta, "mask": "mul", "inverted": inverted, "operation": "mul",
                                 "accuracy": value})
    pd.DataFrame(sharing).to_parquet(folder / "sharing.parquet")
    pd.DataFrame(accuracy).to_parquet(folder / "accuracy.parquet")
    pd.DataFrame({"arch": ["small", "big"], "layer": [TOTAL] * 2, "size": [70_000, 700_000]}).to_parquet(
        folder / "layers.parquet")
    rows = {finding: ours for finding, _, ours in sweep_rows(tmp_path)}
    assert rows["sweep: total sharing of the add mask vs β, big"] == "β=1e-05: 50%, β=0.0001: 49%, β=0.001: 40%"
    # not inverted only: 1 - 300 beta = 99.7%, 97.0%, 70.0%
    assert rows["sweep: accuracy of the mul mask on mul vs β, big"] == "β=1e-05: 99.7%, β=0.0001: 97.0%, β=0.001: 70.0%"
    assert rows["sweep: total sharing of the add mask vs network size (β=0.0001)"] == "small (70k): 60%, big (700k): 49%"
    assert rows["sweep: accuracy of the mul mask on mul vs network size (β=0.0001)"] == "small: 90.0%, big: 97.0%"

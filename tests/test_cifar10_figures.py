"""CIFAR-10 class-removal figures (paper Fig. 6a, 6b, 18, 19-21): the numbers behind each figure against
hand-computed values over two seeds, the pairing of masks by seed, where a removed class's images go,
figure numbering, the files written and the errors for missing tables or columns."""
import math

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest

from frames import cell
from modmask.analysis import cifar10 as cifar10_numbers
from modmask.plotting import cifar10

CLASSES = list(cifar10_numbers.CLASSES)
ARCHS = ["resnet", "simple_cnn", "simple_cnn_nodrop"]  # resnet rows first: figures must still use the paper order
SEEDS = [3, 7]
PROVENANCE = {"experiment": "cifar10", "scale": "smoke", "config_hash": "abc123", "code_version": "v0"}
# the other class a removed class's images go to (and whose accuracy suffers most)
PARTNER = {"airplane": "ship", "automobile": "truck", "bird": "airplane", "cat": "dog", "deer": "horse",
           "dog": "cat", "frog": "bird", "horse": "deer", "ship": "airplane", "truck": "automobile"}
CONTROL_ACCURACY = 0.8
# accuracy under the mask without c, per seed: (removed class c, partner), every other class unchanged
WITHOUT_ACCURACY = {"simple_cnn": [(0.2, 0.7), (0.4, 0.6)], "simple_cnn_nodrop": [(0.2, 0.7), (0.4, 0.6)],
                    "resnet": [(0.0, 0.7), (0.0, 0.7)]}
BIRD_WORST_SEED7 = "frog"  # simple_cnn, mask without bird, seed 7: frog (not airplane) drops most


def _accuracy_row(arch, seed, mask, removed, cls, accuracy):
    total = 1000
    correct = int(round(accuracy * total))
    return {**PROVENANCE, "arch": arch, "seed": seed, "mask": mask, "removed_class": removed, "class": cls,
            "correct": correct, "total": total, "accuracy": correct / total}


def make_accuracy() -> pd.DataFrame:
    rows = []
    for arch in ARCHS:
        for i, seed in enumerate(SEEDS):
            for cls in CLASSES:
                rows.append(_accuracy_row(arch, seed, "none", None, cls, 0.9))
                rows.append(_accuracy_row(arch, seed, "control", None, cls, CONTROL_ACCURACY))
            for removed in CLASSES:
                own, partner = WITHOUT_ACCURACY[arch][i]
                worst = BIRD_WORST_SEED7 if (arch, removed, seed) == ("simple_cnn", "bird", 7) else PARTNER[removed]
                for cls in CLASSES:
                    value = own if cls == removed else partner if cls == worst else CONTROL_ACCURACY
                    rows.append(_accuracy_row(arch, seed, f"without_{removed}", removed, cls, value))
    return pd.DataFrame(rows).sample(frac=1.0, random_state=0).reset_index(drop=True)  # row order must not matter


def _control_matrix(arch, i):
    """Seed 3: 80 % right, 20 % to the next class; seed 7: 90 / 10; resnet always right."""
    diagonal = 1.0 if arch == "resnet" else [0.8, 0.9][i]
    matrix = np.eye(10) * diagonal
    for t in range(10):
        matrix[t, (t + 1) % 10] += 1 - diagonal
    return matrix


def _without_matrix(arch, i, removed):
    """The control matrix with row ``removed`` moving 0.6 (seed 3) or 0.3 + 0.2 (seed 7) off the diagonal to its
    partner (and, in seed 7, to the class five labels on)."""
    matrix = _control_matrix(arch, i)
    c, p, third = CLASSES.index(removed), CLASSES.index(PARTNER[removed]), (CLASSES.index(removed) + 5) % 10
    moves = [{p: 0.6}, {p: 0.3, third: 0.2}][i]
    for j, amount in moves.items():
        matrix[c, c] -= amount
        matrix[c, j] += amount
    return matrix


def make_confusion() -> pd.DataFrame:
    rows = []
    for arch in ARCHS:
        for i, seed in enumerate(SEEDS):
            masks = {"none": (None, np.eye(10)), "control": (None, _control_matrix(arch, i))}
            masks.update({f"without_{c}": (c, _without_matrix(arch, i, c)) for c in CLASSES})
            for mask, (removed, matrix) in masks.items():
                for t, p in np.ndindex(10, 10):
                    rows.append({**PROVENANCE, "arch": arch, "seed": seed, "mask": mask, "removed_class": removed,
                                 "true_class": CLASSES[t], "predicted_class": CLASSES[p],
                                 "count": int(round(matrix[t, p] * 100)), "fraction": matrix[t, p]})
    return pd.DataFrame(rows).sample(frac=1.0, random_state=1).reset_index(drop=True)


@pytest.fixture(scope="module")
def base_tables():
    return {"accuracy": make_accuracy(), "confusion": make_confusion()}


@pytest.fixture
def tables(base_tables):
    return dict(base_tables)


# ---- Fig. 6 numbers -------------------------------------------------------------------------------

def test_removed_class_drop_is_the_relative_drop_per_seed_then_mean_and_std(tables):
    stats = cifar10_numbers.removed_class_drop(tables["accuracy"])
    assert list(stats.columns) == ["arch", "removed_class", "mean", "std", "n"]
    assert list(dict.fromkeys(stats["arch"])) == ["simple_cnn", "simple_cnn_nodrop", "resnet"]  # paper order
    assert list(dict.fromkeys(stats["removed_class"])) == CLASSES  # label order
    assert len(stats) == 3 * 10
    # simple CNN, without cat: cat 0.8 -> 0.2 (drop 0.75) and 0.8 -> 0.4 (drop 0.5)
    row = cell(stats, arch="simple_cnn", removed_class="cat")
    assert (row["mean"], row["std"], row["n"]) == pytest.approx((0.625, 0.25 / math.sqrt(2), 2))
    # ResNet: the removed class goes to 0 in both seeds
    row = cell(stats, arch="resnet", removed_class="truck")
    assert (row["mean"], row["std"], row["n"]) == pytest.approx((1.0, 0.0, 2))


def test_removed_class_drop_overall_is_the_mean_over_classes_then_over_seeds(tables):
    stats = cifar10_numbers.removed_class_drop(tables["accuracy"], overall=True)
    assert len(stats) == 3 * 11
    assert list(stats.loc[stats["arch"] == "simple_cnn", "removed_class"]) == CLASSES + [cifar10_numbers.ALL_CLASSES]
    row = cell(stats, arch="simple_cnn", removed_class=cifar10_numbers.ALL_CLASSES)
    assert (row["mean"], row["std"], row["n"]) == pytest.approx((0.625, 0.25 / math.sqrt(2), 2))


def test_removed_class_drop_pairs_each_mask_with_the_control_of_its_own_seed(tables):
    accuracy = tables["accuracy"]
    # seed 7's control of simple_cnn gone: only seed 3's drop (0.75) is left
    gone = (accuracy["arch"] == "simple_cnn") & (accuracy["seed"] == 7) & (accuracy["mask"] == "control")
    row = cell(cifar10_numbers.removed_class_drop(accuracy[~gone]), arch="simple_cnn", removed_class="cat")
    assert (row["mean"], row["std"], row["n"]) == pytest.approx((0.75, 0.0, 1))
    # no run at all of a class: NaN and n 0, not an exception
    gone = (accuracy["arch"] == "resnet") & (accuracy["mask"] == "without_dog")
    row = cell(cifar10_numbers.removed_class_drop(accuracy[~gone]), arch="resnet", removed_class="dog")
    assert math.isnan(row["mean"]) and math.isnan(row["std"]) and row["n"] == 0


def test_other_class_drop_ratio_is_hand_computed(tables):
    stats = cifar10_numbers.other_class_drop_ratio(tables["accuracy"])
    assert list(stats.columns) == ["arch", "removed_class", "worst_class", "mean", "std", "n"]
    assert len(stats) == 3 * 10
    # without cat: dog drops by 0.1 / 0.8 and 0.2 / 0.8; cat by 0.75 and 0.5 -> ratios 1/6 and 1/2
    row = cell(stats, arch="simple_cnn", removed_class="cat")
    assert row["worst_class"] == "dog"
    assert (row["mean"], row["std"], row["n"]) == pytest.approx((1 / 3, (1 / 3) / math.sqrt(2), 2))
    # ResNet: partner 0.1 / 0.8 against a drop of 1 in both seeds
    row = cell(stats, arch="resnet", removed_class="automobile")
    assert row["worst_class"] == "truck"
    assert (row["mean"], row["std"]) == pytest.approx((0.125, 0.0))
    # without bird the worst class is airplane in seed 3 (drop 0.125), frog in seed 7 (drop 0.25):
    # a tie in seeds, won by the larger drop; the ratio does not care which class it was
    row = cell(stats, arch="simple_cnn", removed_class="bird")
    assert row["worst_class"] == "frog"
    assert row["mean"] == pytest.approx(1 / 3)
    assert cell(stats, arch="simple_cnn_nodrop", removed_class="bird")["worst_class"] == "airplane"


def test_other_class_drop_ratio_is_nan_where_removal_did_not_hurt(tables):
    accuracy = tables["accuracy"].copy()
    # the mask without frog leaves frog at its control accuracy in every seed of simple_cnn
    pick = (accuracy["arch"] == "simple_cnn") & (accuracy["mask"] == "without_frog") & (accuracy["class"] == "frog")
    accuracy.loc[pick, "accuracy"] = CONTROL_ACCURACY
    row = cell(cifar10_numbers.other_class_drop_ratio(accuracy), arch="simple_cnn", removed_class="frog")
    assert math.isnan(row["mean"]) and row["n"] == 0


# ---- confusion numbers ----------------------------------------------------------------------------

def test_confusion_matrix_is_the_mean_over_seeds_with_true_class_rows(tables):
    matrix = cifar10_numbers.confusion_matrix(tables["confusion"], "simple_cnn", "control")
    assert matrix.shape == (10, 10)
    assert list(matrix.index) == CLASSES and list(matrix.columns) == CLASSES
    expected = np.eye(10) * 0.85 + np.roll(np.eye(10), 1, axis=1) * 0.15  # (0.8, 0.9) right, (0.2, 0.1) to the next
    np.testing.assert_allclose(matrix.to_numpy(), expected)
    resnet = cifar10_numbers.confusion_matrix(tables["confusion"], "resnet", "control")
    np.testing.assert_allclose(resnet.to_numpy(), np.eye(10))
    with pytest.raises(ValueError, match="no rows for arch 'vgg'"):
        cifar10_numbers.confusion_matrix(tables["confusion"], "vgg", "control")


def test_confusion_difference_moves_the_removed_row_only(tables):
    diff = cifar10_numbers.confusion_difference(tables["confusion"], "simple_cnn", "cat")
    assert diff.shape == (10, 10) and list(diff.index) == CLASSES
    expected = np.zeros((10, 10))
    cat, dog, ship = CLASSES.index("cat"), CLASSES.index("dog"), CLASSES.index("ship")
    # off the diagonal (0.6, 0.5); to dog (0.6, 0.3); to ship, five labels on (0, 0.2)
    expected[cat, cat], expected[cat, dog], expected[cat, ship] = -0.55, 0.45, 0.10
    np.testing.assert_allclose(diff.to_numpy(), expected, atol=1e-12)


def test_confusion_difference_pairs_seeds(tables):
    confusion = tables["confusion"]
    gone = (confusion["arch"] == "simple_cnn") & (confusion["mask"] == "without_cat") & (confusion["seed"] == 7)
    diff = cifar10_numbers.confusion_difference(confusion[~gone], "simple_cnn", "cat")  # seed 3 only, also for the control
    assert diff.loc["cat", "cat"] == pytest.approx(-0.6) and diff.loc["cat", "dog"] == pytest.approx(0.6)
    assert diff.loc["cat", "deer"] == pytest.approx(0.0)  # seed 3's control sends 0.2 to deer, so does the mask
    all_gone = (confusion["arch"] == "simple_cnn") & (confusion["mask"] == "without_cat")
    with pytest.raises(ValueError, match="without_cat"):
        cifar10_numbers.confusion_difference(confusion[~all_gone], "simple_cnn", "cat")


def test_largest_confusions_says_where_the_removed_class_goes(tables):
    top = cifar10_numbers.largest_confusions(tables["confusion"], "simple_cnn", k=3)
    assert list(top.columns) == ["arch", "removed_class", "predicted_class", "increase"]
    assert list(dict.fromkeys(top["removed_class"])) == CLASSES
    cat = top[top["removed_class"] == "cat"]
    assert list(cat["predicted_class"]) == ["dog", "ship"]  # only two positive entries, the diagonal excluded
    np.testing.assert_allclose(cat["increase"], [0.45, 0.10])
    first = cifar10_numbers.largest_confusions(tables["confusion"], "resnet", k=1)
    assert len(first) == 10 and dict(zip(first["removed_class"], first["predicted_class"])) == PARTNER


# ---- names, numbers, drawing ----------------------------------------------------------------------

def test_arch_labels_and_figure_numbers():
    assert cifar10.arch_label("simple_cnn_nodrop") == "simple CNN, no dropout"
    assert cifar10.arch_label("resnet") == "ResNet-110"
    assert cifar10.arch_label("resnet", {"resnet": "ResNet-20"}) == "ResNet-20"
    assert cifar10.arch_label("vgg") == "vgg"
    assert cifar10.diff_figure_numbers(["simple_cnn", "simple_cnn_nodrop", "resnet"]) == {
        "simple_cnn": 19, "simple_cnn_nodrop": 20, "resnet": 21}
    assert cifar10.diff_figure_numbers(["resnet", "vgg", "mlp"]) == {"resnet": 21, "vgg": 22, "mlp": 23}


def test_fig6a_bars_are_the_means_in_percent(tables):
    fig = cifar10.removed_drop_figure(tables["accuracy"], {"resnet": "ResNet-20"})
    ax = fig.axes[0]
    assert fig._suptitle.get_text().startswith("Fig. 6a: CIFAR-10")
    assert [t.get_text() for t in ax.get_xticklabels()] == CLASSES + ["all classes"]
    assert [t.get_text() for t in fig.legends[0].get_texts()] == ["simple CNN", "simple CNN, no dropout", "ResNet-20"]
    heights = [p.get_height() for p in ax.patches]
    np.testing.assert_allclose(heights, [62.5] * 22 + [100] * 11)
    plt.close(fig)


# ---- files and errors -----------------------------------------------------------------------------

def test_build_all_writes_png_and_pdf_of_every_figure(tables, tmp_path):
    # without the no-dropout CNN: its Fig. 20 is skipped, the ResNet keeps Fig. 21
    tables = {name: table[table["arch"] != "simple_cnn_nodrop"] for name, table in tables.items()}
    paths = cifar10.build_all(tables, tmp_path)
    stems = ["fig06_a_removed_class_drop", "fig06_b_other_class_drop", "fig18_confusion_control",
             "fig19_confusion_diff_simple_cnn", "fig21_confusion_diff_resnet"]
    expected = {tmp_path / f"{stem}.{ext}" for stem in stems for ext in ("pdf", "png")}
    assert len(paths) == 10 and set(paths) == expected
    assert set(tmp_path.iterdir()) == expected  # nothing else (no temporary files) left behind
    for path in paths:
        assert path.read_bytes()[:8].startswith(b"%PDF" if path.suffix == ".pdf" else b"\x89PNG")
        assert path.stat().st_size > 10000


@pytest.mark.parametrize("name", ["accuracy", "confusion"])
def test_missing_table_is_named(tables, tmp_path, name):
    del tables[name]
    with pytest.raises(ValueError, match=name):
        cifar10.build_all(tables, tmp_path)
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize("name, column", [("accuracy", "class"), ("accuracy", "mask"),
                                          ("confusion", "predicted_class"), ("confusion", "fraction")])
def test_missing_column_is_named(tables, tmp_path, name, column):
    tables[name] = tables[name].drop(columns=column)
    with pytest.raises(ValueError, match=rf"CIFAR-10 '{name}' table lacks column\(s\) \['{column}'\]"):
        cifar10.build_all(tables, tmp_path)
    assert not list(tmp_path.iterdir())


def test_mask_length_figure_draws_steps_at_the_papers_lr_and_accuracy_against_the_control(tmp_path):
    rows = []
    for lr, steps in ((1e-3, 400), (1e-2, 40)):
        common = {"arch": "simple_cnn", "lr": lr, "steps": steps, "removed_class": "cat", **PROVENANCE, "seed": 0}
        rows.append({**common, "mask": "none", "step": 0, "kept": 1.0, "removed_class_accuracy": 0.5})
        for step, kept, cat in ((steps // 2, 0.9, 0.45), (steps, 0.8, 0.4)):
            rows.append({**common, "mask": "control", "step": step, "kept": kept, "removed_class_accuracy": cat + 0.1})
            rows.append({**common, "mask": "without_cat", "step": step, "kept": kept - 0.05,
                         "removed_class_accuracy": cat / 2})
    fig = cifar10.mask_length_figure(pd.DataFrame(rows))
    kept_ax, removed_ax = fig.axes[:2]
    kept_lines = {line.get_label(): line for line in kept_ax.get_lines()}
    removed_lines = {line.get_label(): line for line in removed_ax.get_lines()}
    assert sorted(kept_lines) == ["simple CNN, lr 0.001", "simple CNN, lr 0.01"]
    # both runs on one axis: 400 steps at 1e-3 and 40 steps at 1e-2 both end at 400 paper steps
    for label in kept_lines:
        assert list(kept_lines[label].get_xdata()) == pytest.approx([200, 400])
        assert list(kept_lines[label].get_ydata()) == pytest.approx([90, 80])
        # the removal mask's cat accuracy over the control's at the probe's end (0.5): 0.225, 0.2 -> 45%, 40%
        assert list(removed_lines[label].get_ydata()) == pytest.approx([45, 40])
    assert kept_lines["simple CNN, lr 0.01"].get_linestyle() != kept_lines["simple CNN, lr 0.001"].get_linestyle()
    plt.close(fig)
    paths = cifar10.save_mask_length_figure(pd.DataFrame(rows), tmp_path)
    assert sorted(p.name for p in paths) == ["mask_length.pdf", "mask_length.png"]
    with pytest.raises(ValueError, match="mask_length.*kept"):
        cifar10.mask_length_figure(pd.DataFrame(rows).drop(columns="kept"))


def test_confusion_difference_figure_has_a_panel_per_removed_class_only(tables):
    confusion = tables["confusion"]
    kept = confusion["mask"].isin(["control", "without_cat", "without_truck"])
    fig = cifar10.confusion_diff_figure(confusion[kept], "simple_cnn", 19)
    panels = [ax for ax in fig.axes if ax.get_title()]
    assert [ax.get_title() for ax in panels] == ["cat", "truck"]
    assert len(fig.axes) == 3   # two panels and the colour bar
    # cat's panel outlines row "cat" and its image is the difference in points
    expected = cifar10_numbers.confusion_difference(confusion, "simple_cnn", "cat").to_numpy() * 100
    np.testing.assert_allclose(panels[0].images[0].get_array(), expected)
    plt.close(fig)

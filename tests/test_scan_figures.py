"""SCAN figures (paper Fig. 4a, 4b, 16): the numbers behind each bar against hand-computed means and
standard deviations over seeds, the bars actually drawn, token order and filtering, missing runs, the
files written and the errors for missing tables or columns."""
import math

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest

from frames import cell
from modmask.plotting import scan

SPLITS = ["simple", "length", "addprim_jump", "addprim_turn_left"]
SEEDS = [3, 7]  # seed 3 adds 0.0, seed 7 adds 0.1 to every accuracy below
ARCH_OFFSET = {"transformer": 0.5, "lstm": 0.0}  # transformer rows come first: lstm must still be Fig. 4b's arch
MASK_OFFSET = {"none": 0.30, "simple": 0.10, "length": 0.20, "addprim_jump": 0.25, "addprim_turn_left": 0.35}
SPLIT_OFFSET = {"simple": 0.40, "length": 0.00, "addprim_jump": 0.02, "addprim_turn_left": 0.04}
DIRECT_OFFSET = 0.05
STD_OF_TWO_SEEDS = 0.1 / math.sqrt(2)  # sample std of {x, x + 0.1}
PROVENANCE = {"experiment": "scan", "scale": "smoke", "config_hash": "abc123", "code_version": "v0"}
# vocabulary order on purpose neither alphabetical nor the order rows appear in
VOCAB = ["<pad>", "<sos>", "<eos>", "I_WALK", "I_JUMP", "<unk>", "I_TURN_LEFT", "I_LOOK", "I_RUN", "I_TURN_RIGHT"]


def _acc_row(arch, seed, network, trained_on, mask, test_split, accuracy):
    total = 1000
    correct = int(round(accuracy * total))
    return {**PROVENANCE, "arch": arch, "seed": seed, "network": network, "trained_on": trained_on, "mask": mask,
            "test_split": test_split, "correct": correct, "total": total, "accuracy": correct / total}


def make_accuracy() -> pd.DataFrame:
    rows = []
    for arch, a in ARCH_OFFSET.items():
        for i, seed in enumerate(SEEDS):
            for mask, m in MASK_OFFSET.items():
                for split in SPLITS:
                    rows.append(_acc_row(arch, seed, "pretrained", "simple", mask, split,
                                         min(a + m + SPLIT_OFFSET[split] + 0.1 * i, 1.0)))
            for split in SPLITS[1:]:
                for test_split in SPLITS:  # a direct network is tested on every split; only its own is used
                    value = a + DIRECT_OFFSET + SPLIT_OFFSET[split] + 0.1 * i + (0 if test_split == split else 0.03)
                    rows.append(_acc_row(arch, seed, "direct", split, "none", test_split, min(value, 1.0)))
    return pd.DataFrame(rows)


def _kept(arch, mask, token, seed_index):
    """Weights kept out of 64 into ``token``: the add-jump mask drops I_JUMP entirely."""
    if mask == "addprim_jump" and token == "I_JUMP":
        return 0
    base = {"simple": 48, "length": 40, "addprim_jump": 56, "addprim_turn_left": 44}[mask]
    return base - 16 * seed_index - (8 if arch == "transformer" else 0)


def make_output_weights() -> pd.DataFrame:
    rows = []
    for arch in ARCH_OFFSET:
        for i, seed in enumerate(SEEDS):
            for mask in SPLITS[1:]:  # the split masks, each against the IID mask
                for index, token in enumerate(VOCAB):
                    kept = _kept(arch, mask, token, i)
                    rows.append({**PROVENANCE, "arch": arch, "seed": seed, "mask": mask, "token": token,
                                 "token_index": index, "iid_kept": 64, "removed": 64 - kept, "split_kept": kept,
                                 "removed_fraction": 1 - kept / 64})
    return pd.DataFrame(rows).sample(frac=1.0, random_state=0).reset_index(drop=True)  # row order must not matter


@pytest.fixture
def tables():
    return {"accuracy": make_accuracy(), "output_weights": make_output_weights()}


# ---- the numbers ----------------------------------------------------------------------------------

def test_split_mask_stats_are_hand_computed_means_over_seeds(tables):
    stats = scan.split_mask_stats(tables["accuracy"])
    assert list(dict.fromkeys(stats["arch"])) == ["transformer", "lstm"]  # order of appearance
    assert list(dict.fromkeys(stats["split"])) == ["length", "addprim_jump", "addprim_turn_left"]  # no "simple"
    assert len(stats) == 2 * 3 * 3
    # lstm on length: IID mask 0.10 / 0.20, length mask 0.20 / 0.30, no mask 0.30 / 0.40
    for condition, mean in (("iid_mask", 0.15), ("split_mask", 0.25), ("no_mask", 0.35)):
        row = cell(stats, arch="lstm", split="length", condition=condition)
        assert row["mean"] == pytest.approx(mean)
        assert row["std"] == pytest.approx(STD_OF_TWO_SEEDS)
        assert row["count"] == 2
    # transformer on add jump with the add-jump mask: 0.5 + 0.25 + 0.02 = 0.77 / 0.87
    assert cell(stats, arch="transformer", split="addprim_jump", condition="split_mask")["mean"] == pytest.approx(0.82)
    # transformer on add turn left with the IID mask: 0.5 + 0.10 + 0.04 = 0.64 / 0.74
    assert cell(stats, arch="transformer", split="addprim_turn_left", condition="iid_mask")["mean"] == pytest.approx(
        0.69)


def test_direct_vs_mask_stats_are_hand_computed_means_over_seeds(tables):
    stats = scan.direct_vs_mask_stats(tables["accuracy"])
    assert len(stats) == 2 * 3 * 2
    # direct lstm on its own split length: 0.05 / 0.15 (not the +0.03 of other test splits)
    row = cell(stats, arch="lstm", split="length", condition="direct")
    assert (row["mean"], row["std"], row["count"]) == pytest.approx((0.10, STD_OF_TWO_SEEDS, 2))
    # direct transformer on add turn left: 0.5 + 0.05 + 0.04 = 0.59 / 0.69
    row = cell(stats, arch="transformer", split="addprim_turn_left", condition="direct")
    assert row["mean"] == pytest.approx(0.64)
    # the pretrained network through the split's mask, same numbers as Fig. 4a's
    assert cell(stats, arch="lstm", split="addprim_jump", condition="split_mask")["mean"] == pytest.approx(0.32)


def test_missing_direct_run_gives_nan_not_an_exception(tables):
    accuracy = tables["accuracy"]
    gone = (accuracy["network"] == "direct") & (accuracy["arch"] == "transformer") & (
        accuracy["trained_on"] == "addprim_turn_left")
    stats = scan.direct_vs_mask_stats(accuracy[~gone])
    row = cell(stats, arch="transformer", split="addprim_turn_left", condition="direct")
    assert math.isnan(row["mean"]) and math.isnan(row["std"]) and row["count"] == 0
    assert cell(stats, arch="transformer", split="addprim_turn_left", condition="split_mask")["count"] == 2
    fig = scan.direct_vs_mask_figure(accuracy[~gone])
    heights = [p.get_height() for p in fig.axes[0].patches]
    marks = [t for t in fig.axes[0].texts if t.get_text() == "n/a"]
    plt.close(fig)
    assert np.isnan(heights[2]) and not np.isnan(heights[0])  # direct series' third group (add turn left)
    assert len(marks) == 1 and marks[0].get_position()[0] == pytest.approx(2 - 0.2)  # where the bar would be


def test_removed_by_token_drops_special_tokens_and_follows_token_index(tables):
    stats = scan.removed_by_token(tables["output_weights"], "lstm")
    tokens = list(dict.fromkeys(stats["token"]))
    assert tokens == ["<eos>", "I_WALK", "I_JUMP", "I_TURN_LEFT", "I_LOOK", "I_RUN", "I_TURN_RIGHT"]
    assert not set(stats["token"]) & {"<pad>", "<sos>", "<unk>"}
    assert list(dict.fromkeys(stats["mask"])) == SPLITS[1:]
    # the length mask keeps 40 / 24 of 64: removes 37.5 % / 62.5 %
    row = cell(stats, token="I_WALK", mask="length")
    assert (row["mean"], row["std"], row["count"]) == pytest.approx((0.5, 0.25 / math.sqrt(2), 2))
    # the add-jump mask removes every weight into I_JUMP, and 1/8 / 3/8 of the others
    assert (cell(stats, token="I_JUMP", mask="addprim_jump")[["mean", "std"]] == [1.0, 0.0]).all()
    assert cell(stats, token="<eos>", mask="addprim_jump")["mean"] == pytest.approx(0.25)
    # the transformer's numbers are different
    other = scan.removed_by_token(tables["output_weights"], "transformer")
    assert cell(other, token="I_WALK", mask="length")["mean"] == pytest.approx(0.625)


def test_removed_by_token_with_a_missing_mask_keeps_what_is_there(tables):
    weights = tables["output_weights"]
    stats = scan.removed_by_token(weights[weights["mask"] != "addprim_jump"], "lstm")
    assert "addprim_jump" not in set(stats["mask"])
    fig = scan.output_weights_figure(weights[weights["mask"] != "addprim_jump"])
    assert len(fig.axes[0].patches) == 14  # two series (length, add turn left)
    plt.close(fig)


# ---- the bars drawn -------------------------------------------------------------------------------

def test_fig4a_bars_are_the_means_in_percent(tables):
    fig = scan.split_masks_figure(tables["accuracy"])
    assert fig._suptitle.get_text().startswith("Fig. 4a: SCAN")
    transformer, lstm = fig.axes[:2]
    assert [transformer.get_title(), lstm.get_title()] == ["Transformer", "LSTM"]
    assert [t.get_text() for t in lstm.get_xticklabels()] == ["length", "add jump", "add turn left"]
    # IID-mask series then split-mask series
    np.testing.assert_allclose([p.get_height() for p in lstm.patches], [15, 17, 19, 25, 32, 44])
    np.testing.assert_allclose([p.get_height() for p in transformer.patches], [65, 67, 69, 75, 82, 94])
    # the unmasked network as one short black line per group: 0.35, 0.37, 0.39 in lstm
    (lines,) = [c for c in lstm.collections if c.get_label() == "no mask"]
    np.testing.assert_allclose([seg[0][1] for seg in lines.get_segments()], [35, 37, 39])
    assert lstm.get_ylim() == (0, 105)
    legend = [t.get_text() for t in fig.legends[0].get_texts()]
    assert legend == ["mask trained on the full problem (IID)", "mask trained on the split", "no mask"]
    plt.close(fig)


def test_fig4b_shows_lstm_tokens_top_to_bottom_with_i_jump_bold(tables):
    fig = scan.output_weights_figure(tables["output_weights"])
    fig.canvas.draw()  # the emphasis must survive drawing
    ax = fig.axes[0]
    assert "LSTM" in fig._suptitle.get_text() and fig._suptitle.get_text().startswith("Fig. 4b: SCAN")
    labels = ax.get_yticklabels()
    positions = {t.get_text(): t.get_position()[1] for t in labels}
    assert ax.yaxis_inverted()  # smallest position on top
    top_to_bottom = sorted(positions, key=positions.get)
    assert top_to_bottom == ["<eos>", "I_WALK", "I_JUMP", "I_TURN_LEFT", "I_LOOK", "I_RUN", "I_TURN_RIGHT"]
    assert {t.get_text(): t.get_fontweight() for t in labels}["I_JUMP"] == "bold"
    assert {t.get_text(): t.get_fontweight() for t in labels}["I_WALK"] == "normal"
    widths = [p.get_width() for p in ax.patches]
    np.testing.assert_allclose(widths[:7], [25, 25, 100, 25, 25, 25, 25])  # add-jump mask
    np.testing.assert_allclose(widths[7:14], [50] * 7)  # length mask
    np.testing.assert_allclose(widths[14:], [43.75] * 7)  # add-turn-left mask
    assert [t.get_text() for t in fig.legends[0].get_texts()] == ["add jump mask", "length mask",
                                                                  "add turn left mask"]
    plt.close(fig)


def test_fig16_bars_are_the_means_in_percent(tables):
    fig = scan.direct_vs_mask_figure(tables["accuracy"])
    assert fig._suptitle.get_text().startswith("Fig. 16: SCAN")
    np.testing.assert_allclose([p.get_height() for p in fig.axes[1].patches], [10, 12, 14, 25, 32, 44])  # lstm
    assert [t.get_text() for t in fig.legends[0].get_texts()] == ["trained directly on the split",
                                                                  "IID pretraining + split mask"]
    plt.close(fig)


# ---- files and errors -----------------------------------------------------------------------------

def test_build_all_writes_the_six_files(tables, tmp_path):
    paths = scan.build_all(tables, tmp_path)
    stems = ["fig04_a_split_masks", "fig04_b_output_weights_removed", "fig16_direct_vs_mask"]
    expected = {tmp_path / f"{stem}.{ext}" for stem in stems for ext in ("pdf", "png")}
    assert len(paths) == 6 and set(paths) == expected
    assert set(tmp_path.iterdir()) == expected  # nothing else (no temporary files) left behind
    for path in paths:
        head = path.read_bytes()[:8]
        assert head.startswith(b"%PDF" if path.suffix == ".pdf" else b"\x89PNG")
        assert path.stat().st_size > 1000


@pytest.mark.parametrize("name", ["accuracy", "output_weights"])
def test_missing_table_is_named(tables, tmp_path, name):
    del tables[name]
    with pytest.raises(ValueError, match=name):
        scan.build_all(tables, tmp_path)
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize("name, column", [("accuracy", "test_split"), ("accuracy", "trained_on"),
                                          ("output_weights", "removed_fraction"), ("output_weights", "token_index")])
def test_missing_column_is_named(tables, tmp_path, name, column):
    tables[name] = tables[name].drop(columns=column)
    with pytest.raises(ValueError, match=f"{name}.*{column}"):
        scan.build_all(tables, tmp_path)

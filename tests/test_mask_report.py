"""modmask.mask_report: per-parameter logit statistics of a saved mask, checked against hand-computed values."""
import math

import pytest
import torch
from torch import nn

from modmask import mask_report
from modmask.masks import WeightMask


def _mask_with(logits: dict[str, list[float]]) -> WeightMask:
    mask = WeightMask({name: torch.Size([len(values)]) for name, values in logits.items()})
    with torch.no_grad():
        for name, values in logits.items():
            mask.logit(name).copy_(torch.tensor(values))
    return mask


def _sigmoid(x):
    return 1 / (1 + math.exp(-x))


def test_summary_matches_hand_computed_fractions():
    mask = _mask_with({"a.weight": [3.0, 0.5, -0.5, -4.0], "b.weight": [0.2, 2.0]})
    table = mask_report.logit_summary(mask).set_index("parameter")
    assert table.loc["a.weight", "weights"] == 4
    assert table.loc["a.weight", "kept_fraction"] == pytest.approx(2 / 4)
    assert table.loc["a.weight", "undecided_fraction"] == pytest.approx(2 / 4)  # 0.5 and -0.5
    assert table.loc["a.weight", "expected_kept_fraction"] == pytest.approx(
        sum(_sigmoid(x) for x in [3.0, 0.5, -0.5, -4.0]) / 4)
    assert table.loc["b.weight", "undecided_fraction"] == pytest.approx(1 / 2)
    total = table.loc[mask_report.TOTAL]
    assert total["weights"] == 6
    assert total["kept_fraction"] == pytest.approx(4 / 6)
    assert total["undecided_fraction"] == pytest.approx(3 / 6)
    # a wider band counts 2.0 as undecided too (strictly below the band only)
    wide = mask_report.logit_summary(mask, band=2.5).set_index("parameter")
    assert wide.loc[mask_report.TOTAL, "undecided_fraction"] == pytest.approx(4 / 6)


def test_expected_kept_equals_mean_probability_of_a_real_mask():
    torch.manual_seed(0)
    mask = WeightMask.for_module(nn.Sequential(nn.Linear(5, 7), nn.Linear(7, 3)))
    with torch.no_grad():
        for _, logits in mask.items():
            logits.normal_(0, 2)
    table = mask_report.logit_summary(mask).set_index("parameter")
    probabilities = torch.cat([p.flatten() for p in mask.probabilities().values()])
    assert table.loc[mask_report.TOTAL, "expected_kept_fraction"] == pytest.approx(float(probabilities.mean()))
    assert table.loc[mask_report.TOTAL, "kept_fraction"] == pytest.approx(
        float(torch.cat([b.flatten() for b in mask.binary().bits.values()]).float().mean()))


def test_warning_only_above_the_limit():
    settled = mask_report.logit_summary(_mask_with({"w": [5.0, -5.0, 3.0, -3.0]}))
    assert mask_report.settled_warning(settled) is None
    undecided = mask_report.logit_summary(_mask_with({"w": [0.1, -5.0, 3.0, -3.0]}))
    assert mask_report.settled_warning(undecided, limit=0.3) is None
    message = mask_report.settled_warning(undecided, limit=0.2)
    assert message is not None and "25.0% of the logits" in message


def test_band_must_be_positive():
    with pytest.raises(ValueError, match="band"):
        mask_report.logit_summary(_mask_with({"w": [1.0]}), band=0)


def test_command_line(tmp_path, capsys):
    path = tmp_path / "mask.pt"
    torch.save(_mask_with({"w": [0.1, -0.2, 4.0, -4.0]}).to_file_dict(), path)
    assert mask_report.main([str(path)]) == 0
    out, err = capsys.readouterr()
    assert "(all)" in out and "0.5000" in out  # 2 of 4 undecided, 2 of 4 kept
    assert "50.0% of the logits" in err
    assert mask_report.main([str(tmp_path / "missing.pt")]) == 2
    assert "missing.pt" in capsys.readouterr().err
    torch.save({"format": "something else"}, tmp_path / "other.pt")
    assert mask_report.main([str(tmp_path / "other.pt")]) == 2
    assert "not a saved WeightMask" in capsys.readouterr().err

"""The add/mul data set and its evaluation on a network whose answers are known."""
import pandas as pd
import torch
from torch import nn

from modmask.data import addmul as data
from modmask.data.digits import decode_number, digit_loss
from modmask.experiments import addmul


def test_every_problem_once_with_correct_results():
    df = data.generate()
    assert len(df) == 20000 and len(df.drop_duplicates(["a", "b", "op"])) == 20000
    row = df[(df.a == 37) & (df.b == 85)].set_index("op")["result"]
    assert row["add"] == (37 + 85) % 100 == 22 and row["mul"] == (37 * 85) % 100 == 45
    assert set(df["split"]) == {"train"}


def test_heldout_fraction_and_seed():
    df = data.generate(0.1, seed=3)
    share = (df["split"] == "heldout").mean()
    assert 0.09 < share < 0.11
    assert df["split"].equals(data.generate(0.1, seed=3)["split"])


def test_encoding_layout():
    df = pd.DataFrame({"a": [37], "b": [5], "op": ["mul"], "result": [85], "split": ["train"]})
    x, y = data.encode(df)
    assert x.shape == (1, 42) and x.sum() == 5
    hot = torch.nonzero(x[0]).flatten().tolist()
    assert hot == [3, 10 + 7, 20 + 0, 30 + 5, 41]  # a tens, a ones, b tens, b ones, op=mul
    assert y.tolist() == [[8, 5]]


class Oracle(nn.Module):
    """Answers a+b for every input (reads operands from the one-hot digits)."""

    def __init__(self):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(1))

    def forward(self, x):
        digits = x[:, :40].view(-1, 4, 10).argmax(-1)
        a = digits[:, 0] * 10 + digits[:, 1]
        b = digits[:, 2] * 10 + digits[:, 3]
        result = (a + b) % 100
        out = torch.full((len(x), 20), -10.0)
        out[torch.arange(len(x)), result // 10] = 10.0
        out[torch.arange(len(x)), 10 + result % 10] = 10.0
        return out * self.weight


def test_evaluation_of_a_network_that_always_adds():
    df = data.generate()
    tables = addmul.evaluate_masks(Oracle(), {}, df, "cpu")
    acc = tables["accuracy"].set_index("operation")["accuracy"]
    assert acc["add"] == 1.0
    # mul is right exactly when (a*b) % 100 == (a+b) % 100
    coincide = ((df.a * df.b) % 100 == (df.a + df.b) % 100)[df.op == "mul"].mean()
    assert abs(acc["mul"] - coincide) < 1e-12
    conf = tables["confusion"].set_index(["operation", "outcome"])["fraction"]
    assert conf[("mul", "add_result")] == 1.0 and conf[("mul", "mul_result")] == 0.0


def test_digit_loss_and_decoding():
    out = torch.full((2, 20), -5.0)
    out[0, 3], out[0, 17] = 5.0, 5.0
    out[1, 9], out[1, 10] = 5.0, 5.0
    assert decode_number(out).tolist() == [37, 90]
    low = digit_loss(out, torch.tensor([[3, 7], [9, 0]]))
    high = digit_loss(out, torch.tensor([[0, 0], [0, 0]]))
    assert low < 0.01 < high

"""The README's examples for using masks on your own model run and do what they say."""
import re
from pathlib import Path

README = Path(__file__).resolve().parent.parent / "README.md"


def example_code(heading: str = "## Using masks on your own model") -> str:
    """The first python block after ``heading``."""
    text = README.read_text()
    section = text[text.index(heading):]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def test_readme_example_finds_the_relevant_input(capsys):
    namespace: dict = {}
    exec(compile(example_code(), str(README), "exec"), namespace)
    kept, mask = namespace["kept"], namespace["mask"]
    assert namespace["accuracy"] > 0.95
    assert 0.0 <= namespace["inverted"] <= 1.0  # printed; this toy network has redundant paths
    assert kept.count() < 0.8 * mask.numel()    # and the mask is a real subnetwork
    first = namespace["first_layer"].float()
    assert first[:, 0].sum() >= 1 and first[:, 1:].sum() == 0  # only weights from input 0 survive
    assert "kept" in capsys.readouterr().out


def test_readme_lstm_example_keeps_only_the_input_that_matters(capsys):
    namespace: dict = {}
    exec(compile(example_code("### Your own model with an `nn.LSTM`"), str(README), "exec"), namespace)
    kept, mask = namespace["kept"], namespace["mask"]
    assert namespace["accuracy"] > 0.85
    assert kept.count() < 0.2 * mask.numel()
    from_inputs = namespace["from_inputs"]
    assert from_inputs[:, 0].sum() >= 1 and from_inputs[:, 1:].sum() == 0   # only feature 0 feeds the LSTM
    out = capsys.readouterr().out
    assert out.startswith("fused-loop\n") and "kept" in out

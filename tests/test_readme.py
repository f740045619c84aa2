"""The README's example for using masks on your own model runs and does what it says."""
import re
from pathlib import Path

README = Path(__file__).resolve().parent.parent / "README.md"


def example_code() -> str:
    text = README.read_text()
    section = text[text.index("## Using masks on your own model"):]
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

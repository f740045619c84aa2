"""The README's "Supported modules" table says the path the engine really takes for each family.

The table is written by ``benchmarks/supported_modules.py`` (which also times each family); this test
builds every family the table lists with that script's builders, runs one masked forward and compares
``MaskedModel.path`` with the table's path column. It never checks timings.
"""
import importlib.util
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "benchmarks" / "supported_modules.py"


def _script():
    spec = importlib.util.spec_from_file_location("supported_modules", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module   # its dataclasses look themselves up there
    spec.loader.exec_module(module)
    return module


script = _script()
ROWS = script.readme_rows((ROOT / "README.md").read_text())
FAMILIES = {f.name: f for f in script.FAMILIES}


def test_the_readme_table_lists_every_family_once():
    assert [row["family"] for row in ROWS] == list(FAMILIES)
    for row in ROWS:
        assert row["modules"] == FAMILIES[row["family"]].modules
        assert row["path"] in ("vectorised", "fused-loop", "per-sample")
        assert row["mask"].endswith("×") and row["passes"].endswith("×")   # measured, not left empty
    assert {row["path"] for row in ROWS} == {"vectorised", "fused-loop", "per-sample"}


@pytest.mark.parametrize("row", ROWS, ids=[row["family"] for row in ROWS])
def test_the_readme_path_is_the_engines(row):
    family = FAMILIES[row["family"]]
    if not script.available(family):
        pytest.skip(f"{family.needs} is not installed")
    assert script.engine_path(family) == row["path"]

"""Code versions from the import closure of a rule's script (modmask.code_versions)."""
from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from modmask.code_versions import PACKAGE_ROOT, code_version, import_closure, imported_names, module_name

REPO = Path(__file__).resolve().parent.parent
SCRIPTS = REPO / "scripts"


def relative(paths) -> set[str]:
    return {str(p.relative_to(PACKAGE_ROOT)) if p.is_relative_to(PACKAGE_ROOT) else f"script:{p.name}" for p in paths}


def test_closure_of_the_data_rule_is_what_its_imports_reach_and_no_more():
    # Read by hand from the sources: the script imports modmask.data and modmask.runtime; runtime imports
    # devices; data/__init__ imports io; data.addmul imports data.digits. Nothing reaches the mask engine.
    closure = relative(import_closure(SCRIPTS / "generate_data.py", "data.addmul"))
    assert closure == {"script:generate_data.py", "__init__.py", "data/__init__.py", "data/addmul.py",
                       "data/digits.py", "devices.py", "io.py", "runtime.py"}


def test_relative_imports_resolve_against_the_files_place_in_the_package():
    names = imported_names(PACKAGE_ROOT / "experiments" / "addmul.py")
    assert {"modmask.data.addmul", "modmask.data.digits", "modmask.masked_model", "modmask.masks"} <= names
    assert "gumbel.py" in relative(import_closure("experiments.addmul"))  # masks -> gumbel, followed


def test_lazy_exports_and_imports_inside_functions_are_followed(tmp_path):
    script = tmp_path / "script.py"
    script.write_text("from modmask import train_mask\n\n\ndef later():\n    from modmask.data import scan\n")
    closure = relative(import_closure(script))
    assert {"training.py", "data/scan.py", "data/__init__.py"} <= closure
    assert "cnn.py" not in closure and "plotting/scan.py" not in closure


def test_version_changes_with_the_script_and_names_the_missing(tmp_path):
    script = tmp_path / "a.py"
    script.write_text("import modmask.io\n")
    before = code_version(script)
    assert before == code_version(script) and len(before) == 12
    script.write_text("import modmask.io\n# an edit\n")
    assert code_version(script) != before
    with pytest.raises(FileNotFoundError, match="nonexistent"):
        code_version("experiments.nonexistent")


def test_c_code_a_module_compiles_belongs_to_the_closure_of_what_imports_it(tmp_path):
    script = tmp_path / "a.py"
    script.write_text("from modmask import masked_model\n")
    assert {"fused_linear.py", "csrc/masked_linear.c"} <= relative(import_closure(script))
    assert "csrc/masked_linear.c" not in relative(import_closure("modmask.io"))


def test_static_closure_holds_every_module_python_really_imports():
    """Ground truth from the interpreter: what importing each library module puts into sys.modules.
    The static closure may hold more (imports inside functions), never less."""
    modules = sorted(name for p in PACKAGE_ROOT.rglob("*.py") if (name := module_name(p)) is not None)
    probe = ("import importlib, json, sys\nout = {}\n"
             "for name in json.loads(sys.argv[1]):\n"
             "    before = set(sys.modules)\n"
             "    importlib.import_module(name)\n"
             "    out[name] = sorted(m for m in sys.modules if m == 'modmask' or m.startswith('modmask.'))\n"
             "    for m in [m for m in sys.modules if m.startswith('modmask')]:\n"
             "        del sys.modules[m]\n"
             "print(json.dumps(out))\n")
    result = subprocess.run([sys.executable, "-c", probe, json.dumps(modules)], cwd=REPO, capture_output=True,
                            text=True, timeout=600, check=True)
    loaded = json.loads(result.stdout.splitlines()[-1])
    assert len(loaded) == len(modules) > 40
    for name, really in loaded.items():
        static = {module_name(p) for p in import_closure(name)}
        assert set(really) <= static, (name, sorted(set(really) - static))


def test_every_scripted_rule_has_the_code_version_of_its_own_script():
    """A rule's ``code`` param (and its provenance's code version) must name the script it runs;
    only downloads and the generator's environment build are exempt (their outputs do not depend on
    our code)."""
    exempt = {"download_cifar10", "download_mnist", "mathematics_env"}
    checked = 0
    for rule_file in sorted((REPO / "rules").glob("*.smk")):
        text = rule_file.read_text()
        for match in re.finditer(r"(?ms)^(\s*)rule (\w+):\n(.*?)(?=^\s*rule \w+:|\Z)", text):
            name, body = match.group(2), match.group(3)
            script = re.search(r"script:\s*\"\.\./scripts/(\w+\.py)\"", body)
            if script is None or name in exempt:
                continue
            assert re.search(rf'code=(rule|step)_code\("{re.escape(script.group(1))}"', body), (rule_file.name, name)
            for used in re.findall(r'provenance\([^)]*?"(\w+\.py)"', body):
                assert used == script.group(1), (rule_file.name, name, used)
            checked += 1
    assert checked >= 30


def test_mask_api_imports_without_snakemake_and_light_modules_without_torch():
    """The library is usable on its own: with Snakemake unimportable, a mask trains on a model; and
    importing a data module does not load the mask engine (the lazy package exports)."""
    probe = ("import sys\n"
             "class Block:\n"
             "    def find_spec(self, name, path=None, target=None):\n"
             "        if name.split('.')[0] in ('snakemake', 'snakemake_interface_executor_plugins'):\n"
             "            raise ImportError('snakemake is blocked in this test')\n"
             "sys.meta_path.insert(0, Block())\n"
             "import modmask.data.scan\n"
             "assert 'modmask.gumbel' not in sys.modules and 'modmask.training' not in sys.modules\n"
             "import torch\n"
             "from modmask import BatchSampler, TrainSettings, train_mask, run_with_mask\n"
             "torch.manual_seed(0)\n"
             "model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2))\n"
             "x = torch.randn(64, 4); y = (x[:, 0] > 0).long()\n"
             "mask, history = train_mask(model, BatchSampler([x, y], 16, seed=0), torch.nn.functional.cross_entropy,\n"
             "                           TrainSettings(steps=5, lr=1e-2, beta=1e-4, mask_samples=2))\n"
             "print(tuple(run_with_mask(model, mask.binary(), x).shape), 'snakemake' in sys.modules)\n")
    result = subprocess.run([sys.executable, "-c", probe], cwd=REPO, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.split()[-3:] == ["(64,", "2)", "False"]


def test_a_second_version_of_unchanged_files_reads_no_source_again(monkeypatch):
    """Snakemake asks for a code version for every job of a DAG (1,600 at paper scale): unchanged files are
    parsed and hashed once per process, not once per job."""
    import modmask.code_versions as versions

    first = code_version(SCRIPTS / "mask.py", "experiments.addmul")

    def no_reading(*args, **kwargs):
        raise AssertionError("a source was read again")

    monkeypatch.setattr(versions.ast, "parse", no_reading)
    monkeypatch.setattr(versions.Path, "read_bytes", no_reading)
    assert code_version(SCRIPTS / "mask.py", "experiments.addmul") == first

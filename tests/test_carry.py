"""Carrying an unfinished permuted-MNIST run between machines (modmask.carry): the carried progress is
small, resumes bit for bit, never replaces more progress with less, and bad input is named."""
import gzip
import logging

import pandas as pd
import pytest
import torch

from modmask import carry, steps
from modmask.experiments import permuted_mnist as pm
from modmask.io import load_torch, save_torch

from test_permuted_mnist import tiny_block, tiny_data

LOG = logging.getLogger("test")
PROVENANCE = {"experiment": "permuted_mnist", "scale": "long", "variant": "used2_new0", "seed": 1,
              "config_hash": "abc", "code_version": "v1"}
IDENTITY = steps.progress_identity(PROVENANCE)


class Killed(Exception):
    pass


def progress_after(tasks: int, block, data) -> dict:
    """The progress a run saves after ``tasks`` finished tasks (the run is killed there)."""
    saved = {}

    def save_and_die(state):
        saved["state"] = {"identity": IDENTITY, **state}
        if len(state["tasks"]) == tasks:
            raise Killed

    with pytest.raises(Killed):
        pm.run(block, "used2_new0", data, seed=1, device="cpu", log=LOG, save_progress=save_and_die)
    return saved["state"]


@pytest.fixture(scope="module")
def tiny():
    block, data = tiny_block(steps=8), tiny_data()
    reference = pm.run(block, "used2_new0", data, seed=1, device="cpu", log=LOG)
    return block, data, reference


def same_tasks(a: list, b: list) -> None:
    assert len(a) == len(b)
    for x, y in zip(a, b):
        assert x["accuracy"] == y["accuracy"] and repr(x["sharing"]) == repr(y["sharing"])  # nan-safe
        assert all(torch.equal(x["mask"]["bits"][n], y["mask"]["bits"][n]) for n in x["mask"]["bits"])
        assert x["history"] == y["history"]


def test_carried_progress_resumes_bit_for_bit_on_a_fresh_machine(tmp_path, tiny):
    block, data, reference = tiny
    old_machine, new_machine, repo = tmp_path / "old", tmp_path / "new", tmp_path / "reference"
    state = progress_after(2, block, data)
    save_torch(state, old_machine / "permuted_mnist/used2_new0/seed1/run.pt.ckpt")
    lines = carry.carry_out("permuted_mnist", old_machine, repo)
    carried = repo / "permuted_mnist/progress/used2_new0/seed1.pt.gz"
    assert carried.exists() and "2 tasks" in lines[0]

    # only the frozen entries' values travel: the first layer and every free entry are re-initialised
    portable = carry.read_carried(carried)
    used = state["used"]["bits"]
    assert set(portable["frozen_values"]) == {n for n in used if not n.startswith("layers.0.")}
    for name, values in portable["frozen_values"].items():
        assert values.numel() == int(used[name].sum())
        assert torch.equal(values, state["model"][name][used[name]])

    carry.carry_in("permuted_mnist", new_machine, repo)
    restored = load_torch(new_machine / "permuted_mnist/used2_new0/seed1/run.pt.ckpt")
    assert restored["identity"] == IDENTITY and len(restored["tasks"]) == 2
    for name, value in restored["model"].items():
        frozen = used[name] if not name.startswith("layers.0.") else torch.zeros_like(used[name])
        assert torch.equal(value[frozen], state["model"][name][frozen])
        assert (value[~frozen] == 0).all()
    resumed = pm.run(block, "used2_new0", data, seed=1, device="cpu", log=LOG, load_progress=lambda: restored)
    same_tasks(resumed["tasks"], reference["tasks"])


def test_a_finished_run_is_carried_and_rewritten_without_training(tmp_path, tiny, monkeypatch):
    block, data, reference = tiny
    save_torch({**reference, "provenance": PROVENANCE}, tmp_path / "old/permuted_mnist/used2_new0/seed1/run.pt")
    assert "3 tasks (finished)" in carry.carry_out("permuted_mnist", tmp_path / "old", tmp_path / "ref")[0]
    carry.carry_in("permuted_mnist", tmp_path / "new", tmp_path / "ref")
    restored = load_torch(tmp_path / "new/permuted_mnist/used2_new0/seed1/run.pt.ckpt")
    assert restored["identity"] == IDENTITY
    monkeypatch.setattr(pm, "train_jointly", lambda *a, **k: pytest.fail("a finished run trained again"))
    rerun = pm.run(block, "used2_new0", data, seed=1, device="cpu", log=LOG, load_progress=lambda: restored)
    same_tasks(rerun["tasks"], reference["tasks"])


def test_less_progress_never_replaces_more(tmp_path, tiny):
    block, data, _ = tiny
    one, two = progress_after(1, block, data), progress_after(2, block, data)
    machine = tmp_path / "results/permuted_mnist/used2_new0/seed1/run.pt.ckpt"
    save_torch(two, machine)
    carry.carry_out("permuted_mnist", tmp_path / "results", tmp_path / "ref")
    carried = tmp_path / "ref/permuted_mnist/progress/used2_new0/seed1.pt.gz"
    before = carried.read_bytes()
    save_torch(one, machine)  # a machine that got less far
    assert "kept" in carry.carry_out("permuted_mnist", tmp_path / "results", tmp_path / "ref")[0]
    assert carried.read_bytes() == before
    # and back in: a machine that already got further keeps its own progress
    save_torch({**two, "tasks": two["tasks"] + [two["tasks"][-1]]}, machine)
    assert "left alone" in carry.carry_in("permuted_mnist", tmp_path / "results", tmp_path / "ref")[0]
    assert len(load_torch(machine)["tasks"]) == 3
    # the same progress carried twice gives the same bytes (no spurious git change)
    save_torch(two, machine)
    carried.unlink()
    carry.carry_out("permuted_mnist", tmp_path / "results", tmp_path / "ref")
    assert carried.read_bytes() == before


def test_bad_input_is_named(tmp_path, capsys):
    assert carry.main(["out", "scan", "--results", str(tmp_path)]) == 2
    assert "no sequential long run" in capsys.readouterr().err
    assert carry.main(["out", "nonsense", "--results", str(tmp_path)]) == 2
    assert "unknown experiment" in capsys.readouterr().err
    assert carry.main(["out", "permuted_mnist", "--results", str(tmp_path)]) == 2
    assert "no runs of permuted_mnist" in capsys.readouterr().err
    broken = tmp_path / "ref/permuted_mnist/progress/normal/seed0.pt.gz"
    broken.parent.mkdir(parents=True)
    broken.write_bytes(gzip.compress(b"not a torch file"))
    assert carry.main(["in", "permuted_mnist", "--results", str(tmp_path / "r"), "--reference",
                       str(tmp_path / "ref")]) == 2
    err = capsys.readouterr().err
    assert str(broken) in err and "git checkout" in err


def test_readme_block_reports_a_carried_run_and_export_drops_its_progress(tmp_path, tiny):
    from modmask import reference as ref
    from test_reference import write_pm_results

    block, data, reference = tiny
    results, repo = tmp_path / "results", tmp_path / "reference"
    save_torch(progress_after(2, block, data), results / "permuted_mnist/used2_new0/seed1/run.pt.ckpt")
    save_torch({**reference, "provenance": {**PROVENANCE, "variant": "normal", "seed": 0}},
               results / "permuted_mnist/normal/seed0/run.pt")
    carry.carry_out("permuted_mnist", results, repo)
    text = ref.readme_block("permuted_mnist", repo)
    assert "normal seed0 3 tasks, finished, used2_new0 seed1 2 tasks." in text
    assert "reference/permuted_mnist/progress/" in text
    # once the run is finished and exported, the reference replaces the carried progress
    write_pm_results(results)
    ref.export("permuted_mnist", results, repo, results / "figures")
    assert not (repo / "permuted_mnist/progress").exists()
    assert "Reference run (long scale)" in ref.readme_block("permuted_mnist", repo)


def test_progress_of_a_run_with_other_settings_is_not_overwritten(tmp_path, tiny):
    block, data, _ = tiny
    two = progress_after(2, block, data)
    machine = tmp_path / "results/permuted_mnist/used2_new0/seed1/run.pt.ckpt"
    save_torch(two, machine)
    carry.carry_out("permuted_mnist", tmp_path / "results", tmp_path / "ref")
    carried = tmp_path / "ref/permuted_mnist/progress/used2_new0/seed1.pt.gz"
    before = carried.read_bytes()
    # the same variant and seed at other settings (a 30k-step run beside a 10k one), further along
    other = {**two, "identity": steps.progress_identity({**PROVENANCE, "config_hash": "def"}),
             "tasks": two["tasks"] + [two["tasks"][-1]]}
    save_torch(other, machine)
    with pytest.raises(carry.CarryError, match="other settings") as error:
        carry.carry_out("permuted_mnist", tmp_path / "results", tmp_path / "ref")
    assert str(carried) in str(error.value) and "--reference" in str(error.value)
    assert carried.read_bytes() == before
    # into a folder of its own it goes
    assert "3 tasks" in carry.carry_out("permuted_mnist", tmp_path / "results", tmp_path / "ref30k")[0]


def test_readme_block_shows_what_the_carried_tasks_found(tmp_path, tiny):
    from modmask import reference as ref

    block, data, _ = tiny
    two = progress_after(2, block, data)
    save_torch(two, tmp_path / "results/permuted_mnist/used2_new0/seed1/run.pt.ckpt")
    carry.carry_out("permuted_mnist", tmp_path / "results", tmp_path / "ref30k")
    text = ref.readme_block("permuted_mnist", tmp_path / "ref30k", "reference/ref30k")
    task1 = two["tasks"][1]
    shown = [r for r in task1["sharing"] if not r["reinitialised"] and not r["layer"].endswith("bias")]
    assert shown and shown[-1]["layer"] == pm.TOTAL
    # one row for task 1 (task 0 shares nothing), each shown layer's share as the hand-computed shared / used
    (row,) = [line for line in text.splitlines() if line.startswith("| used2_new0 seed1 |")]
    cells = [cell.strip() for cell in row.strip("|").split("|")]
    assert cells[1] == "1"
    for r, part in zip(shown, cells[2].split("; ")):
        expected = 100 * r["shared"] / r["used"] if r["used"] else float("nan")
        assert part == f"{r['layer_label']} {expected:.1f}%"
    assert len(cells[2].split("; ")) == len(shown)
    assert cells[3] == f"{100 * task1['accuracy']['own_mask']:.1f}%"
    assert "reference/ref30k/permuted_mnist/progress/" in text


def test_a_carried_run_beside_a_kept_run_is_compared_with_it_task_by_task(tmp_path, tiny):
    # the 30k-step run under way in reference/long30k/ against the kept 10k run in reference/permuted_mnist/
    from modmask import reference as ref
    from modmask.io import write_parquet
    from test_reference import write_pm_results

    block, data, _ = tiny
    two = progress_after(2, block, data)
    save_torch(two, tmp_path / "results/permuted_mnist/used2_new0/seed1/run.pt.ckpt")
    repo = tmp_path / "reference"
    carry.carry_out("permuted_mnist", tmp_path / "results", repo / "long30k")
    kept = write_pm_results(tmp_path / "kept")
    rows = [{**PROVENANCE, "variant": "used2_new0", "seed": 1, "task": 1, "layer": layer, "layer_label": label,
             "reinitialised": layer.startswith("layers.0."), "shared_fraction": value}
            for layer, label, value in (("layers.0.weight", "layer 1", 0.5), ("layers.1.weight", "layer 2", 0.125),
                                        ("layers.1.bias", "layer 2 (bias)", 0.9), (pm.TOTAL, "total", 0.25))]
    write_parquet(pd.DataFrame(rows), kept / "permuted_mnist/sharing.parquet")
    ref.export("permuted_mnist", kept, repo, kept / "figures", label="10k steps per task")
    name = "long30k/permuted_mnist"
    text = ref.render_readme(f"<!-- reference:{name} -->\n<!-- /reference:{name} -->", repo)
    (header,) = [line for line in text.splitlines() if line.startswith("| run |")]
    assert header.endswith("| the same in the kept run of `reference/permuted_mnist/` (long scale, 10k steps per "
                           "task) |")
    (row,) = [line for line in text.splitlines() if line.startswith("| used2_new0 seed1 |")]
    cells = [cell.strip() for cell in row.strip("|").split("|")]
    assert len(cells) == 5 and cells[1] == "1"
    # the kept run's weight layers that are not re-initialised, biases left out, as in the carried column
    assert cells[4] == "layer 2 12.5%; total 25.0%"
    # without a kept run the table has its four columns
    solo = ref.readme_block("permuted_mnist", repo / "long30k", "reference/long30k")
    assert "the same in the kept" not in solo and "| used2_new0 seed1 | 1 |" in solo

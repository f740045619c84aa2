"""Reference results: export into reference/, README blocks generated from them, comparison with a run."""
from __future__ import annotations

import base64
import json
from pathlib import Path

import pandas as pd
import pytest

from modmask import reference as ref
from modmask.io import read_parquet, write_parquet
from modmask.metrics import TOTAL

REPO = Path(__file__).resolve().parents[1]
PROVENANCE = {"experiment": "permuted_mnist", "scale": "long", "config_hash": "cfg1", "code_version": "code1"}
# layer-2 sharing of task 2 per (variant, seed); the other layers get fixed values
LAYER2_TASK2 = {("normal", 0): 0.02, ("normal", 1): 0.04, ("used2_new-1", 0): 0.90, ("used2_new-1", 1): 0.94}


def write_pm_results(root: Path, own_mask_accuracy=(0.90, 0.80), png=True, scale="long") -> Path:
    """A permuted-MNIST results tree with hand-chosen numbers (2 variants x 2 seeds x tasks 0-2)."""
    # another scale is another config: its rows carry another config hash
    provenance = {**PROVENANCE, "scale": scale, **({} if scale == "long" else {"config_hash": f"cfg-{scale}"})}
    sharing, accuracy = [], []
    for (variant, seed), layer2 in LAYER2_TASK2.items():
        for task in range(3):
            for layer, value in (("layers.1.weight", layer2 if task == 2 else 0.01), ("layers.2.weight", 0.3),
                                 ("layers.3.weight", 0.6), (TOTAL, 0.5 if variant == "normal" else 0.9)):
                sharing.append({**provenance, "variant": variant, "seed": seed, "task": task, "layer": layer,
                                "shared_fraction": value if task else float("nan")})
            accuracy.append({**provenance, "variant": variant, "seed": seed, "task": task, "mask": "own_mask",
                             "accuracy": own_mask_accuracy[seed]})
    # frozen share of layers 2 / 3 / 4 after tasks 0, 1, 2: the output layer fills first
    frozen = {0: (0.004, 0.07, 0.5), 1: (0.01, 0.2, 0.8), 2: (0.05, 0.4, 0.98)}
    layers = [{**provenance, "variant": variant, "seed": seed, "task": task, "layer": f"layers.{i + 1}.weight",
               "frozen_fraction": frozen[task][i]}
              for variant, seed in LAYER2_TASK2 for task in range(3) for i in range(3)]
    write_parquet(pd.DataFrame(layers), root / "permuted_mnist" / "layers.parquet")
    write_parquet(pd.DataFrame(sharing), root / "permuted_mnist" / "sharing.parquet")
    write_parquet(pd.DataFrame(accuracy), root / "permuted_mnist" / "accuracy.parquet")
    if png:
        (root / "figures" / "permuted_mnist").mkdir(parents=True)
        (root / "figures" / "permuted_mnist" / "fig3.png").write_bytes(b"\x89PNG not really")
    return root


def test_export_copies_tables_and_figures_and_records_where_the_run_came_from(tmp_path):
    results = write_pm_results(tmp_path / "results")
    manifest = ref.export("permuted_mnist", results, tmp_path / "reference", results / "figures",
                          wall_time="5.1 h", command="snakemake x", date="2026-12-05")
    kept = tmp_path / "reference" / "permuted_mnist"
    assert sorted(p.name for p in kept.glob("*.parquet")) == ["accuracy.parquet", "layers.parquet", "sharing.parquet"]
    pd.testing.assert_frame_equal(read_parquet(kept / "sharing.parquet"),
                                  read_parquet(results / "permuted_mnist" / "sharing.parquet"))
    assert (kept / "figures" / "permuted_mnist" / "fig3.png").read_bytes() == b"\x89PNG not really"
    on_disk = json.loads((kept / "manifest.json").read_text())
    assert on_disk == manifest
    assert manifest["scale"] == ["long"] and manifest["code_version"] == ["code1"]
    assert manifest["tables"] == {"permuted_mnist/accuracy.parquet": 12, "permuted_mnist/layers.parquet": 36,
                                  "permuted_mnist/sharing.parquet": 48}
    assert manifest["wall_time"] == "5.1 h" and "cores" in manifest["machine"]
    # a second export replaces the folder as a whole: nothing of the first one is left over
    (results / "figures" / "permuted_mnist" / "fig3.png").unlink()
    ref.export("permuted_mnist", results, tmp_path / "reference", results / "figures")
    assert not (kept / "figures").exists()
    assert sorted(p.name for p in (tmp_path / "reference").iterdir()) == ["permuted_mnist"]


def test_export_refuses_tables_without_provenance_and_missing_runs(tmp_path):
    with pytest.raises(ref.ReferenceError, match="no tables of permuted_mnist.*run the workflow"):
        ref.export("permuted_mnist", tmp_path / "empty", tmp_path / "reference")
    write_parquet(pd.DataFrame({"variant": ["normal"], "seed": [0]}), tmp_path / "r" / "permuted_mnist" / "a.parquet")
    with pytest.raises(ref.ReferenceError, match=r"a\.parquet lacks the provenance column\(s\) \['scale'"):
        ref.export("permuted_mnist", tmp_path / "r", tmp_path / "reference")
    with pytest.raises(ref.ReferenceError, match="unknown experiment 'mnist'"):
        ref.export("mnist", tmp_path / "r", tmp_path / "reference")
    assert not (tmp_path / "reference" / "permuted_mnist").exists()


def test_readme_block_holds_the_findings_computed_from_the_tables(tmp_path):
    results = write_pm_results(tmp_path / "results")
    ref.export("permuted_mnist", results, tmp_path / "reference", results / "figures", wall_time="5.1 h",
               date="2026-12-05")
    readme = ("# title\n\n<!-- reference:permuted_mnist -->\nstale text\n<!-- /reference:permuted_mnist -->\n"
              "hand-written text stays\n")
    text = ref.render_readme(readme, tmp_path / "reference")
    assert "stale text" not in text and text.endswith("<!-- /reference:permuted_mnist -->\nhand-written text stays\n")
    assert "Reference run (long scale), 2026-12-05" in text and "wall time 5.1 h" in text
    # own-mask accuracy: seeds 90% and 80% -> 85.0% ± 7.1% (sample std of 0.9, 0.8 = 0.0707)
    assert "| permuted MNIST (normal init): test accuracy with its mask, mean over tasks | high | 85.0% ± 7.1% |" in text
    # layer 2 at task 2 (the only even task > 0): normal (2% + 4%) / 2 = 3%; used 2 / new -1 (90 + 94) / 2 = 92%
    assert "layer 2: 3;" in text and "layer 2: 92;" in text
    assert "| permuted MNIST (normal init): % of task 1's layer-2 weights that task 0 used | low (Fig. 3) | 1.0% ± 0.0% |" in text
    assert ("% of each layer frozen after task 0 → after task 2 | the output layer fills first, then the last hidden "
            "layer (Fig. 3) | layer 2: 0.4% ± 0.0% → 5.0% ± 0.0%; layer 3: 7.0% ± 0.0% → 40.0% ± 0.0%; "
            "layer 4: 50.0% ± 0.0% → 98.0% ± 0.0% |") in text
    assert "![fig3](reference/permuted_mnist/figures/permuted_mnist/fig3.png)" in text
    assert ref.render_readme(text, tmp_path / "reference") == text  # stable: a second run changes nothing


def test_readme_check_fails_when_readme_and_reference_disagree(tmp_path, capsys):
    results = write_pm_results(tmp_path / "results")
    ref.export("permuted_mnist", results, tmp_path / "reference", results / "figures")
    readme = tmp_path / "README.md"
    readme.write_text("<!-- reference:permuted_mnist -->\n<!-- /reference:permuted_mnist -->\n")
    assert ref.main(["readme", "--readme", str(readme), "--check"]) == 1
    assert "run python -m modmask.reference readme" in capsys.readouterr().err
    assert ref.main(["readme", "--readme", str(readme)]) == 0
    assert ref.main(["readme", "--readme", str(readme), "--check"]) == 0
    # a table changes (a new reference run): the README is out of date again
    write_pm_results(tmp_path / "results2", own_mask_accuracy=(0.95, 0.85), png=False)
    ref.export("permuted_mnist", tmp_path / "results2", tmp_path / "reference", tmp_path / "results2" / "figures")
    assert ref.main(["readme", "--readme", str(readme), "--check"]) == 1


def test_the_repositorys_readme_agrees_with_its_reference_folder():
    assert ref.main(["readme", "--readme", str(REPO / "README.md"), "--check"]) == 0, \
        "README.md's generated blocks are out of date: run python -m modmask.reference readme"


@pytest.mark.parametrize("ours, theirs, expected", [
    ("85.0% ± 7.1%", "80.0% ± 5.0%", "agrees"),        # 5 apart, within 2 x 7.1
    ("85.0% ± 1.0%", "80.0% ± 2.0%", "differs"),       # 5 apart, beyond 2 x 2.0
    ("2.95 ± 0.01× / 1 ± 0", "2.95 ± 0.01× / 4 ± 0", "differs"),  # "± 0" counts as ± 1: 3 apart, beyond 2 x 1
    ("2.95 ± 0.01× / 1 ± 0", "2.95 ± 0.01× / 3 ± 0", "agrees"),   # 2 apart: within 2 x 1
    # "± 0.0%" says the spread is below 0.05, so it counts as 0.1: 0.1 apart agrees, 0.3 apart differs
    ("100.0% ± 0.0% / 99.9% ± 0.0%", "100.0% ± 0.0% / 100.0% ± 0.0%", "agrees"),
    ("99.7% ± 0.0%", "100.0% ± 0.0%", "differs"),
    ("82% / 63%", "82% / 63%", "agrees"),
    ("82% / 63%", "82% / 60%", "no spread"),
    ("85% ± 1%", "n/a", "not comparable"),
])
def test_verdict_against_the_seed_spread(ours, theirs, expected):
    assert ref.verdict(ours, theirs) == expected


def test_compare_flags_findings_beyond_the_seed_spread(tmp_path, capsys):
    reference = tmp_path / "reference"
    results = write_pm_results(tmp_path / "results")
    ref.export("permuted_mnist", results, reference, results / "figures")
    same = ref.compare(results, reference)
    assert len(same) == 8 and set(same["experiment"]) == {"permuted_mnist"}
    assert (same["verdict"] == "agrees").all()
    accuracy = same[same["finding"].str.contains("normal init.*accuracy", regex=True)]
    assert accuracy["verdict"].tolist() == ["agrees"]
    other = write_pm_results(tmp_path / "other", own_mask_accuracy=(0.50, 0.51), png=False)
    df = ref.compare(other, reference)
    assert df.loc[df["finding"].str.contains("normal init.*accuracy", regex=True), "verdict"].tolist() == ["differs"]
    assert ref.main(["compare", str(other), "--reference", str(reference), "--out", str(tmp_path / "c.md")]) == 0
    assert "**differs**" in capsys.readouterr().out and "**differs**" in (tmp_path / "c.md").read_text()


def test_a_quick_run_kept_beside_a_long_one_has_its_own_block_and_is_what_a_quick_run_is_compared_with(tmp_path):
    reference = tmp_path / "reference"
    long_run = write_pm_results(tmp_path / "long")
    ref.export("permuted_mnist", long_run, reference, long_run / "figures", date="2026-12-05")
    # the same tables at quick scale, with a lower accuracy
    quick_run = write_pm_results(tmp_path / "quick", own_mask_accuracy=(0.50, 0.52), scale="quick")
    ref.export("permuted_mnist", quick_run, reference / "quick", quick_run / "figures", date="2026-12-07")
    text = ("<!-- reference:permuted_mnist -->\n<!-- /reference:permuted_mnist -->\n"
            "<!-- reference:quick/permuted_mnist -->\n<!-- /reference:quick/permuted_mnist -->\n")
    text = ref.render_readme(text, reference)
    main, quick = text.split("<!-- reference:quick/permuted_mnist -->")
    assert "Reference run (long scale), 2026-12-05" in main and "test accuracy with its mask, mean over tasks | high | 85.0% ± 7.1% |" in main
    # (50% + 52%) / 2 = 51.0%, sample std of 0.50, 0.52 = 0.01414 -> 1.4%
    assert "Reference run (quick scale), 2026-12-07" in quick and "| high | 51.0% ± 1.4% | 85.0% ± 7.1% |" in quick
    assert "![fig3](reference/quick/permuted_mnist/figures/permuted_mnist/fig3.png)" in quick
    assert ref.render_readme(text, reference) == text
    # each run is compared with the kept run of its own scale, and the table says which
    for run, kept in ((quick_run, "reference/quick/permuted_mnist"), (long_run, "reference/permuted_mnist")):
        df = ref.compare(run, reference)
        assert set(df["kept_run"]) == {kept} and (df["verdict"] == "agrees").all()
    with pytest.raises(ref.ReferenceError, match="<!-- reference:quick/mnist --> names no experiment"):
        ref.render_readme("<!-- reference:quick/mnist -->\n<!-- /reference:quick/mnist -->\n", reference)


def test_a_finished_run_kept_beside_the_main_one_shows_each_finding_next_to_the_main_runs(tmp_path):
    # the 30k-step run exported to reference/long30k/ beside the 10k run: same scale, told apart by label
    reference = tmp_path / "reference"
    main_run = write_pm_results(tmp_path / "long")
    ref.export("permuted_mnist", main_run, reference, main_run / "figures", date="2026-12-06",
               label="10k steps per task")
    second = write_pm_results(tmp_path / "long30k", own_mask_accuracy=(0.96, 0.98))
    for name in ("sharing", "accuracy", "layers"):  # another config: its rows carry another hash
        table = second / "permuted_mnist" / f"{name}.parquet"
        write_parquet(read_parquet(table).assign(config_hash="cfg30k"), table)
    manifest = ref.export("permuted_mnist", second, reference / "long30k", second / "figures", date="2026-12-08",
                          label="30k steps per task")
    assert manifest["label"] == "30k steps per task"
    text = ref.render_readme("<!-- reference:long30k/permuted_mnist -->\n<!-- /reference:long30k/permuted_mnist -->\n",
                             reference)
    assert "Reference run (long scale, 30k steps per task), 2026-12-08" in text
    assert ("| finding | paper | this run (mean ± std over seeds) | the kept run of `reference/permuted_mnist/` "
            "(long scale, 10k steps per task) |") in text
    # own-mask accuracy: this run (96% + 98%) / 2 = 97.0%, std 1.4%; the main run 85.0% ± 7.1%
    assert ("| permuted MNIST (normal init): test accuracy with its mask, mean over tasks | high | 97.0% ± 1.4% "
            "| 85.0% ± 7.1% |") in text
    # both runs kept at the same scale: a run is compared with the kept run of its own config
    for run, kept in ((second, "reference/long30k/permuted_mnist"), (main_run, "reference/permuted_mnist")):
        assert set(ref.compare(run, reference)["kept_run"]) == {kept}
    # a config no kept run was made with: the main run of its scale
    for table in (second / "permuted_mnist").glob("*.parquet"):
        write_parquet(read_parquet(table).assign(config_hash="cfg-yours"), table)
    assert set(ref.compare(second, reference)["kept_run"]) == {"reference/permuted_mnist"}


def _record(workdir: Path, output: str, rule: str, start: float, end: float) -> None:
    name = base64.urlsafe_b64encode(output.encode()).decode()
    path = workdir / ".snakemake" / "metadata" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"rule": rule, "starttime": start, "endtime": end, "incomplete": False}))


def test_export_records_the_jobs_times_from_the_runs_snakemake_records(tmp_path):
    results = write_pm_results(tmp_path / "results" / "long")
    t0 = 1_796_000_000.0  # 2026-11-30 00:53:20 UTC
    # two runs of 100 s and 300 s side by side, then (another session) the tables job; a two-output job
    # counts once; a job of another experiment does not count
    _record(tmp_path, "results/long/permuted_mnist/normal/seed0/run.pt", "permuted_mnist_run", t0, t0 + 100)
    _record(tmp_path, "results/long/permuted_mnist/normal/seed1/run.pt", "permuted_mnist_run", t0 + 50, t0 + 300)
    for table in ("sharing", "layers"):
        _record(tmp_path, f"results/long/permuted_mnist/{table}.parquet", "permuted_mnist_tables", t0 + 3600,
                t0 + 3600 + 36 + (table == "layers"))
    _record(tmp_path, "results/long/addmul/fnn/seed0/network.pt", "pretrain", t0, t0 + 9999)
    manifest = ref.export("permuted_mnist", results, tmp_path / "reference", results / "figures")
    assert manifest["timing"] == {"jobs": 3, "job_hours": round((100 + 250 + 37) / 3600, 3),
                                  "active_hours": round((300 + 37) / 3600, 3),
                                  "first_start": "2026-11-30 00:53 UTC", "last_end": "2026-11-30 01:53 UTC"}
    assert "measured from its Snakemake records: 3 jobs, 0.11 job-hours, jobs running during 0.09 h" in \
        ref.readme_block("permuted_mnist", tmp_path / "reference")
    manifest = ref.export("permuted_mnist", results, tmp_path / "reference", results / "figures", timing=False)
    assert manifest["timing"] is None


def test_export_all_exports_every_experiment_with_tables(tmp_path, capsys):
    results = write_pm_results(tmp_path / "results")
    assert ref.main(["export", "all", "--results", str(results), "--figures", str(results / "figures"),
                     "--reference", str(tmp_path / "reference")]) == 0
    assert sorted(p.name for p in (tmp_path / "reference").iterdir()) == ["permuted_mnist"]
    assert "reference/permuted_mnist: 3 tables, 1 figures" in capsys.readouterr().out
    assert ref.main(["export", "all", "--results", str(tmp_path / "nothing"), "--reference",
                     str(tmp_path / "reference")]) == 2
    assert "no experiment's tables under" in capsys.readouterr().err


def test_the_gallery_shows_the_main_figures_kept_and_names_the_others(tmp_path):
    write_pm_results(tmp_path / "results", png=False)
    figure = tmp_path / "results" / "figures" / "permuted_mnist" / "fig03_sharing_normal_init.png"
    figure.parent.mkdir(parents=True)
    figure.write_bytes(b"\x89PNG not really")
    ref.export("permuted_mnist", tmp_path / "results", tmp_path / "reference", tmp_path / "results" / "figures")
    block = ref.gallery_block(tmp_path / "reference")
    assert "![Fig. 3](reference/permuted_mnist/figures/permuted_mnist/fig03_sharing_normal_init.png)" in block
    assert "Not kept in `reference/` yet: Fig. 1 (addmul), Fig. 2 (double_add), Fig. 4a (scan), Fig. 5 " \
           "(mathematics), Fig. 6a (cifar10)" in block
    text = "intro\n<!-- reference:gallery -->\nold\n<!-- /reference:gallery -->\nrest\n"
    assert ref.render_readme(text, tmp_path / "reference") == \
        f"intro\n<!-- reference:gallery -->\n{block}<!-- /reference:gallery -->\nrest\n"


def test_the_gallery_names_figures_the_workflow_draws():
    from test_workflow import FIGURES

    drawn = {f"{folder}/{stem}.png" for folder, stems in FIGURES.items() for stem in stems}
    for label, experiment, figure, _ in ref.MAIN_FIGURES:
        assert figure in drawn, (label, figure)
        assert figure.split("/")[0] in ref.EXPERIMENTS[experiment][2], (label, experiment)

"""The real workflow through Snakemake at smoke scale, in a temporary copy of the repository."""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from local_data import copy_workflow, shared_data
from modmask.io import load_torch
from modmask.progress import parse_job_stats

REPO = Path(__file__).resolve().parent.parent
WORKFLOW_FILES = ["Snakefile", "rules", "scripts", "config", "envs", "modmask"]


# The local MNIST copy (tests never download); the workflow runs in a temporary copy of the
# repository, so the relative path of config/smoke.yaml is replaced by an absolute one.
MNIST_DIR = shared_data("mnist")
CIFAR_ARCHIVE = shared_data("cifar10") / "cifar10-jpeg.tar.gz"
LOCAL_DATA = "local_data.yaml"
# Config lines pointing the experiments that read files at the local copies.
LOCAL_DATA_SETTINGS = (f"permuted_mnist:\n  data:\n    mnist_dir: {MNIST_DIR}\n"
                       f"cifar10:\n  data:\n    jpeg_archive: {CIFAR_ARCHIVE}\n")


def snakemake(workdir: Path, *args: str, extra_config: Path | None = None, check: bool = True):
    """Run Snakemake at smoke scale; ``extra_config`` overrides on top of config/smoke.yaml."""
    local = [LOCAL_DATA] if (workdir / LOCAL_DATA).exists() else []
    configs = ["config/smoke.yaml", *local] + ([str(extra_config)] if extra_config else [])
    # --configfile takes several files, so it goes last, after the targets.
    cmd = [sys.executable, "-m", "snakemake", "--cores", "2", *args, "--configfile", *configs]
    result = subprocess.run(cmd, cwd=workdir, capture_output=True, text=True, timeout=2700)
    if check and result.returncode != 0:
        raise AssertionError(f"snakemake {' '.join(args)} failed:\n{result.stdout[-4000:]}\n{result.stderr[-4000:]}")
    return result


def planned_jobs(result: subprocess.CompletedProcess) -> dict[str, int]:
    """Rule -> job count from the job-stats table of a dry run."""
    return parse_job_stats(result.stdout + result.stderr)


@pytest.fixture(scope="module")
def workflow(tmp_path_factory, cifar10_batches) -> Path:
    workdir = copy_workflow(tmp_path_factory.mktemp("workflow"), WORKFLOW_FILES)
    # MNIST copied into the workflow (11 MB) so that a test may give it fresh modification times
    shutil.copytree(MNIST_DIR, workdir / "mnist")
    settings = LOCAL_DATA_SETTINGS.replace(str(MNIST_DIR), str(workdir / "mnist"))
    if cifar10_batches is not None:  # the session's converted copy: the archive is converted once per session
        settings += f"    cifar_dir: {cifar10_batches}\n"
    (workdir / LOCAL_DATA).write_text(settings)
    first = snakemake(workdir, "figures/all")
    (workdir / "first_run.txt").write_text(first.stdout + first.stderr)
    return workdir


FIGURES = {
    "addmul": ["fig01_sharing_per_layer", "fig10_accuracy_masks_inverted", "fig11_weights_per_layer",
               "fig12_operation_confusion"],
    "double_add": ["fig02_accuracy_masks_inverted", "fig13_sharing_per_layer", "fig14_lstm_one_pair_at_a_time"],
    "sweeps": ["fig08_beta_sensitivity", "fig09_network_size"],
    "histogram": ["fig07_mask_probability_histogram"],
    "permuted_mnist": ["fig03_sharing_normal_init", "fig15_a_sharing_used2_new0", "fig15_b_sharing_used2_new-1"],
    "scan": ["fig04_a_split_masks", "fig04_b_output_weights_removed", "fig16_direct_vs_mask"],
    "cifar10": ["fig06_a_removed_class_drop", "fig06_b_other_class_drop", "fig18_confusion_control",
                "fig19_confusion_diff_simple_cnn", "fig20_confusion_diff_simple_cnn_nodrop",
                "fig21_confusion_diff_resnet"],
    "mathematics": ["fig05_mathematics"],
}


@pytest.mark.parametrize("folder", sorted(FIGURES))
def test_smoke_run_builds_every_figure(workflow, folder):
    figures = sorted(p.name for p in (workflow / "figures" / folder).iterdir() if not p.name.startswith("."))
    assert figures == sorted(f"{s}.{ext}" for s in FIGURES[folder] for ext in ("pdf", "png"))


def test_figure_index_lists_every_figure(workflow):
    listed = (workflow / "figures" / "all").read_text().split()
    assert len(listed) == 2 * sum(len(v) for v in FIGURES.values()) + 1  # + results/smoke/summary.md
    assert all((workflow / p).stat().st_size > 1000 for p in listed)


def test_tables_are_tidy_with_provenance(workflow):
    results = workflow / "results" / "smoke" / "addmul"
    accuracy = pd.read_parquet(results / "accuracy.parquet")
    # 2 architectures x 1 seed x (no mask + 3 masks x 2 inversions) x 2 operations x 1 split
    assert len(accuracy) == 2 * 1 * 7 * 2
    assert set(accuracy["arch"]) == {"fnn", "lstm"} and set(accuracy["seed"]) == {0}
    for column in ("experiment", "scale", "config_hash", "code_version"):
        assert accuracy[column].notna().all()
    assert accuracy["accuracy"].between(0, 1).all()
    confusion = pd.read_parquet(results / "confusion.parquet")
    sums = confusion.groupby(["arch", "seed", "mask", "inverted", "operation"])["fraction"].sum()
    assert sums.sub(1.0).abs().max() < 1e-9
    layers = pd.read_parquet(results / "layers.parquet")
    fnn_total = layers[(layers.arch == "fnn") & (layers.layer == "total") & (layers.seed == 0)]
    # smoke FNN 42-32-32-20: 42*32 + 32*32 + 32*20 masked weights (biases not masked)
    assert set(fnn_total["size"]) == {42 * 32 + 32 * 32 + 32 * 20}
    sharing = pd.read_parquet(results / "sharing.parquet")
    assert set(sharing["mask"]) == {"add", "mul"} and sharing["shared_fraction"].between(0, 1).all()


def test_every_job_wrote_a_log(workflow):
    logs = list((workflow / "results" / "smoke" / "logs").rglob("*.log"))
    # the Mathematics generator's environment is shared by every scale: its log lies beside it
    logs += list((workflow / ".snakemake" / "venvs").glob("*.log"))
    jobs = int(re.findall(r"(\d+) of \1 steps \(100%\) done", (workflow / "first_run.txt").read_text())[-1])
    assert len(logs) == jobs
    mask_log = (workflow / "results/smoke/logs/addmul/fnn/seed0/main/mask_add.log").read_text()
    assert "mask step 20/20" in mask_log


def test_second_run_does_nothing(workflow):
    result = snakemake(workflow, "figures/all", "--dry-run")
    assert "Nothing to be done" in result.stdout + result.stderr


def test_a_fresh_copy_of_the_raw_data_reruns_nothing(workflow):
    # A re-downloaded or re-copied data set is newer than every result made from it; its files are
    # checksummed, so only their content counts (ancient inputs), not their modification time.
    for path in (workflow / "mnist").iterdir():
        path.chmod(0o644)
        os.utime(path)
    result = snakemake(workflow, "figures/all", "--dry-run")
    assert "Nothing to be done" in result.stdout + result.stderr


def test_changing_mask_setting_reruns_only_masks_and_downstream(workflow, tmp_path):
    override = tmp_path / "beta.yaml"
    override.write_text("experiments:\n  addmul:\n    mask:\n      beta: 2.0e-4\n")
    result = snakemake(workflow, "figures/all", "--dry-run", extra_config=override)
    jobs = planned_jobs(result)
    # main runs: 2 archs x 1 seed x 3 tasks; the size sweep follows the main beta: small and fnn
    # x 1 seed x 2 tasks at the new beta. The beta-sweep points keep their own beta.
    assert jobs.get("train_mask") == 6 + 4 and jobs.get("evaluate") == 2 + 2
    assert "pretrain" not in jobs and "generate_data" not in jobs


def test_changing_plotting_code_reruns_only_figures(workflow):
    plotting = workflow / "modmask" / "plotting" / "addmul.py"
    original = plotting.read_text()
    try:
        plotting.write_text(original + "\n# an edit\n")
        jobs = planned_jobs(snakemake(workflow, "figures/all", "--dry-run"))
        assert jobs == {"figures_experiment": 1, "figures_all": 1}, jobs
    finally:
        plotting.write_text(original)


def provenance_triggered(result: subprocess.CompletedProcess) -> set[str]:
    """Rules whose jobs a dry run plans because their params (code version) changed, not their inputs."""
    found = re.search(r"Rules with provenance triggered jobs: (.*)", result.stdout + result.stderr)
    return set(found.group(1).strip().split(", ")) if found else set()


CIFAR_TRAINING = ["cifar10_network", "cifar10_mask", "cifar10_stability_mask", "cifar10_stability", "cifar10_evaluate",
                  "cifar10_tables", "cifar10_stability_table", "figures_cifar10"]
SCAN_ALL = ["scan_split", "scan_network", "scan_mask", "scan_evaluate", "scan_tables", "figures_scan"]


@pytest.mark.parametrize("module, triggered, planned", [
    # the CNNs: every CIFAR-10 job that builds or loads a network, not the data conversion (whose code does not
    # import them), and then everything downstream of those jobs
    ("cnn.py", {"cifar10_network"}, CIFAR_TRAINING + ["summary", "figures_all"]),
    # SCAN's data module: the splits and everything built from them, not the Mathematics jobs (which share the
    # sequence models but not SCAN's data or experiment modules)
    ("data/scan.py", {"scan_split"}, SCAN_ALL + ["summary", "figures_all"]),
    ("plotting/scan.py", {"figures_scan"}, ["figures_scan", "figures_all"]),
])
def test_editing_a_module_reruns_exactly_the_rules_whose_code_imports_it(workflow, module, triggered, planned):
    path = workflow / "modmask" / module
    original = path.read_text()
    try:
        path.write_text(original + "\n# an edit\n")
        result = snakemake(workflow, "figures/all", "--dry-run")
    finally:
        path.write_text(original)
    first = parse_job_stats((workflow / "first_run.txt").read_text())
    assert provenance_triggered(result) == triggered
    assert planned_jobs(result) == {rule: first[rule] for rule in planned}


def test_bad_config_stops_with_the_key_named(workflow, tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("experiments:\n  addmul:\n    mask:\n      lr: -0.5\n")
    result = snakemake(workflow, "figures/all", "--dry-run", extra_config=bad, check=False)
    assert result.returncode != 0
    assert "experiments.addmul.mask.lr" in result.stdout + result.stderr


def test_lint_is_clean():
    result = subprocess.run([sys.executable, "-m", "snakemake", "--lint"], cwd=REPO, capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr


def test_rule_files_are_formatted_as_snakefmt_writes_them():
    """snakefmt --check (line length 120, pyproject.toml) on the Snakefile and every rule file."""
    result = subprocess.run([sys.executable, "-m", "snakefmt", "--check", "Snakefile", "rules"], cwd=REPO,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, f"run snakefmt Snakefile rules:\n{result.stdout}{result.stderr}"


def test_beta_sweep_reuses_networks_and_double_add_tables(workflow):
    results = workflow / "results" / "smoke"
    sweep = pd.read_parquet(results / "addmul" / "sweeps" / "sharing.parquet")
    assert set(sweep["beta"]) == {1e-3, 1e-4}  # the sweep point + the main beta (size sweep and beta lines)
    assert set(sweep.loc[sweep["beta"] == 1e-4, "arch"]) == {"small", "fnn"}
    # one network per (arch, seed): the beta points have no network of their own
    assert not list(results.glob("addmul/*/seed*/beta*/network.pt"))
    assert sorted(p.name for p in (results / "addmul/fnn/seed0/beta0.001").glob("mask_*.pt")) == \
        ["mask_add.pt", "mask_mul.pt"]
    accuracy = pd.read_parquet(results / "double_add" / "accuracy.parquet")
    assert set(accuracy["arch"]) == {"fnn", "lstm", "lstm_seq"} and set(accuracy["pair"]) == {1, 2}
    histogram = pd.read_parquet(results / "addmul" / "histogram.parquet")
    per_mask = histogram.groupby(["arch", "seed", "mask"])["count"].sum()
    fnn_weights = 42 * 32 + 32 * 32 + 32 * 20
    assert set(per_mask.xs("fnn", level="arch")) == {fnn_weights}


@pytest.fixture(scope="module")
def report(workflow, tmp_path_factory) -> Path:
    """`snakemake --report` after the smoke run."""
    if not (workflow / "report").exists():  # the captions, beside the copied Snakefile
        shutil.copytree(REPO / "report", workflow / "report")
    path = tmp_path_factory.mktemp("report") / "report.html"
    snakemake(workflow, "figures/all", "--report", str(path))
    return path


def test_report_is_one_html_file_with_every_figure_captioned(workflow, report):
    """`snakemake --report` after the smoke run: one self-contained HTML file, every figure embedded
    byte for byte, each captioned with the paper figure it reproduces."""
    import base64
    import json

    html = report.read_text()
    # self-contained: nothing loaded from elsewhere
    assert not re.findall(r"<(?:script|link|img)\b[^>]*\b(?:src|href)=\"(?!data:)[^\"]*\"", html)
    entries = json.loads(re.search(r"var results = (\{.*?\});?\s*</script>", html, re.S).group(1))
    expected = {f"figures/{folder}/{stem}.png" for folder, stems in FIGURES.items() for stem in stems}
    assert expected <= set(entries), sorted(expected - set(entries))
    for path in expected:
        entry = entries[path]
        data = base64.b64decode(entry["data_uri"].split("base64,", 1)[1])
        assert data == (workflow / path).read_bytes(), path
        number = int(re.match(r"fig(\d+)_", Path(path).name).group(1))
        assert re.search(rf"Reproduces paper Fig\. {number}[a-z]?\b", entry["caption"]), (path, entry["caption"])
    assert "results/smoke/summary.md" in entries
    assert "smoke" in html  # the workflow description names the scale


def test_report_shows_every_figure_and_caption_in_headless_chromium(report, tmp_path):
    """A reader's view: in headless Chromium, clicking through the report shows every figure decoded,
    on the screen and not blank, with its caption (tests/report_browser.py does the clicking)."""
    import report_browser

    binary = report_browser.find_chromium()
    if binary is None:
        pytest.skip("headless Chromium not found (Debian: apt-get install chromium; .ci/run installs it)")
    entries, records, screenshot = report_browser.check_report(report, tmp_path, binary)
    expected = {f"figures/{folder}/{stem}.png" for folder, stems in FIGURES.items() for stem in stems}
    assert expected <= {e["path"] for e in entries}
    assert [r["path"] for r in records] == [e["path"] for e in entries], "Chromium did not visit every figure"
    results, _ = report_browser.report_data(report.read_text())
    for record in records:
        assert "error" not in record, record
        width, height = _png_size(results[record["path"]]["data_uri"])
        assert (record["width"], record["height"]) == (width, height), record   # decoded: the PNG's own size
        assert record["shown"], f"{record['path']} is not on the screen"
        assert record["ink"] > 0.005, f"{record['path']} looks blank ({record['ink']:.4f} of pixels drawn)"
        assert record["caption"], f"the caption of {record['path']} is not shown"
    # the screenshot of the first figure, as the report shows it: not a blank page
    import matplotlib.image

    pixels = matplotlib.image.imread(screenshot)[..., :3]
    assert pixels.shape[0] > 500 and (pixels.sum(axis=2) < 2.4).mean() > 0.05


def _png_size(data_uri: str) -> tuple[int, int]:
    """Width and height of an embedded PNG, from its header."""
    import base64
    import struct

    data = base64.b64decode(data_uri.split("base64,", 1)[1][:64])
    return struct.unpack(">II", data[16:24])


def test_permuted_mnist_tables_are_tidy_with_provenance(workflow):
    results = workflow / "results" / "smoke" / "permuted_mnist"
    sharing = pd.read_parquet(results / "sharing.parquet")
    variants = {"normal", "used2_new0", "used2_new-1"}
    # (normal x 2 seeds + the other two variants x 1 seed) x 5 tasks x (4 weights + 4 biases + the total row)
    assert len(sharing) == 4 * 5 * 9 and set(sharing["variant"]) == variants
    assert sharing.groupby("variant")["seed"].nunique().to_dict() == {"normal": 2, "used2_new0": 1, "used2_new-1": 1}
    for column in ("experiment", "scale", "variant", "seed", "config_hash", "code_version"):
        assert sharing[column].notna().all(), column
    assert (sharing.loc[sharing["task"] == 0, "shared"] == 0).all()  # nothing to share with yet
    assert sharing["shared_fraction"].dropna().between(0, 1).all()
    accuracy = pd.read_parquet(results / "accuracy.parquet")
    assert len(accuracy) == 4 * 5 * 2 and accuracy["accuracy"].between(0, 1).all()
    layers = pd.read_parquet(results / "layers.parquet")
    assert (layers.loc[layers["layer"].str.startswith("layers.0."), "frozen"] == 0).all()
    assert set(layers.loc[layers["layer"] == "layers.0.weight", "size"]) == {784 * 24}
    # the config hash differs between variants (their mask init), not between seeds
    assert sharing.groupby("variant")["config_hash"].nunique().eq(1).all()
    assert sharing["config_hash"].nunique() == 3


def test_missing_mnist_stops_with_the_file_and_path_named(workflow, tmp_path):
    override = tmp_path / "nomnist.yaml"
    override.write_text(f"permuted_mnist:\n  data:\n    mnist_dir: {tmp_path / 'nowhere'}\n")
    result = snakemake(workflow, "results/smoke/permuted_mnist/normal/seed0/run.pt", "--dry-run",
                       extra_config=override, check=False)
    assert result.returncode != 0
    assert f"{tmp_path / 'nowhere'}/train-images-idx3-ubyte.gz" in result.stdout + result.stderr


def test_summary_compares_double_add_with_the_same_size_add_mul_network(workflow):
    text = (workflow / "results" / "smoke" / "summary.md").read_text()
    for arch, other in (("fnn", "fnn"), ("lstm", "lstm"), ("lstm_seq", "lstm")):
        assert f"double add {arch}: total sharing (mean of both masks) vs add/mul {other} (same size)" in text


SCAN_SIZES = {"simple": (16728, 4182), "length": (16990, 3920), "addprim_jump": (14670, 7706),
              "addprim_turn_left": (21890, 1208)}


def test_scan_data_rule_writes_every_split_with_the_released_sizes(workflow):
    snakemake(workflow, "scan_data")
    for split, sizes in SCAN_SIZES.items():
        tables = [pd.read_parquet(workflow / "results" / "smoke" / "data" / "scan" / split / f"{part}.parquet")
                  for part in ("train", "test")]
        assert tuple(len(t) for t in tables) == sizes, split
        assert all(list(t.columns) == ["command", "actions"] for t in tables)
    jump = pd.read_parquet(workflow / "results" / "smoke" / "data" / "scan" / "addprim_jump" / "train.parquet")
    assert (jump["command"] == "jump").sum() == 1467 and (jump.loc[jump["command"] == "jump", "actions"] == "I_JUMP").all()


def test_scan_data_rule_reads_official_files_when_configured(workflow, tmp_path):
    from modmask.data import scan

    official = tmp_path / "scan_release"
    official.mkdir()
    train = pd.DataFrame({"command": ["jump twice", "walk left"], "actions": ["I_JUMP I_JUMP", "I_TURN_LEFT I_WALK"]})
    test = pd.DataFrame({"command": ["run after look"], "actions": ["I_LOOK I_RUN"]})
    train_file, test_file = (Path(name).name for name in scan.OFFICIAL_FILES["length"])
    (official / train_file).write_text(scan.to_official_text(train))
    (official / test_file).write_text(scan.to_official_text(test))
    override = tmp_path / "official.yaml"
    override.write_text(f"results: {tmp_path / 'results'}\nscan:\n  data:\n    official_dir: {official}\n")
    snakemake(workflow, f"{tmp_path}/results/data/scan/length/train.parquet",
              f"{tmp_path}/results/data/scan/length/test.parquet", extra_config=override)
    read = {part: pd.read_parquet(tmp_path / "results" / "data" / "scan" / "length" / f"{part}.parquet")
            for part in ("train", "test")}
    assert read["train"].astype(str).values.tolist() == train.values.tolist()
    assert read["test"].astype(str).values.tolist() == test.values.tolist()


def test_scan_tables_score_every_network_and_mask_on_every_test_set(workflow):
    results = workflow / "results" / "smoke" / "scan"
    accuracy = pd.read_parquet(results / "accuracy.parquet")
    splits = set(SCAN_SIZES)
    # per architecture (1 seed): the pretrained network with no mask and 4 split masks, and 3 directly
    # trained networks, each on the 4 test sets
    assert len(accuracy) == (5 + 3) * 4 and set(accuracy["arch"]) == {"lstm"}  # smoke: the LSTM only
    assert set(accuracy["test_split"]) == splits
    assert accuracy["total"].tolist() == [SCAN_SIZES[s][1] for s in accuracy["test_split"]]
    assert (accuracy["accuracy"] == accuracy["correct"] / accuracy["total"]).all()
    pretrained = accuracy[accuracy["network"] == "pretrained"]
    assert set(pretrained["trained_on"]) == {"simple"} and set(pretrained["mask"]) == {"none"} | splits
    direct = accuracy[accuracy["network"] == "direct"]
    assert set(direct["trained_on"]) == splits - {"simple"} and set(direct["mask"]) == {"none"}
    for column in ("experiment", "scale", "seed", "config_hash", "code_version"):
        assert accuracy[column].notna().all(), column
    weights = pd.read_parquet(results / "output_weights.parquet")
    # per architecture: 3 split masks x 10 output tokens (4 specials + 6 actions)
    assert len(weights) == 3 * 10 and set(weights["mask"]) == splits - {"simple"}
    kept = weights.dropna(subset=["removed_fraction"])
    assert (kept["removed"] <= kept["iid_kept"]).all()
    assert (kept["removed_fraction"] == kept["removed"] / kept["iid_kept"]).all()


def test_mathematics_tables_score_the_network_and_both_masks_on_every_level(workflow):
    results = workflow / "results" / "smoke" / "mathematics"
    accuracy = pd.read_parquet(results / "accuracy.parquet")
    tasks = {"comparison__sort"}  # smoke's mathematics.tasks
    # per task (1 seed): no mask, the control mask and the easy mask, each on the 3 levels' test sets
    assert len(accuracy) == 1 * 3 * 3 and set(accuracy["task"]) == tasks
    assert set(accuracy["mask"]) == {"none", "control", "easy"}
    assert set(accuracy["test_level"]) == {"easy", "medium", "hard"}
    assert (accuracy["total"] == 50).all()  # smoke: test_per_level
    assert (accuracy["accuracy"] == accuracy["correct"] / accuracy["total"]).all()
    for column in ("experiment", "scale", "seed", "config_hash", "code_version"):
        assert accuracy[column].notna().all(), column
    run = results / "comparison__sort" / "seed0"
    control, easy = (load_torch(run / f"mask_{name}.pt") for name in ("control", "easy"))
    assert control["subset"] == "control" and easy["subset"] == "easy"
    # the tied embeddings (the read-out) are never masked
    names = set(control["names"])
    assert names and not any("embedding" in n or n.startswith("decoder.output") for n in names), names
    train = pd.read_parquet(workflow / "results/smoke/data/mathematics/comparison__sort/train.parquet")
    easy_rows = int((train["level"] == "easy").sum())
    assert f"training a mask on {easy_rows} examples" in (
        workflow / "results/smoke/logs/mathematics/comparison__sort/seed0/mask_easy.log").read_text()


# smoke's cifar10.removed_classes: a pair whose confusions the findings name
CIFAR_MASKS = {"none", "control"} | {f"without_{c}" for c in ("cat", "dog")}


def test_cifar10_tables_cover_every_mask_class_and_pair(workflow):
    results = workflow / "results" / "smoke" / "cifar10"
    accuracy = pd.read_parquet(results / "accuracy.parquet")
    # 3 architectures x 1 seed x (no mask, control, 2 removal masks: smoke's removed_classes) x 10 classes
    assert len(accuracy) == 3 * 4 * 10 and set(accuracy["mask"]) == CIFAR_MASKS
    assert set(accuracy["arch"]) == {"simple_cnn", "simple_cnn_nodrop", "resnet"}
    # the smoke test set: 300 images, each counted once per mask
    assert (accuracy.groupby(["arch", "mask"])["total"].sum() == 300).all()
    removal = accuracy[accuracy["mask"].str.startswith("without_")]
    assert (removal["mask"] == "without_" + removal["removed_class"]).all()
    for column in ("experiment", "scale", "seed", "config_hash", "code_version"):
        assert accuracy[column].notna().all(), column
    confusion = pd.read_parquet(results / "confusion.parquet")
    assert len(confusion) == 3 * 4 * 100
    assert confusion.groupby(["arch", "mask"])["count"].sum().eq(300).all()
    # each removal mask kept the control's output layer (fixed, never trained)
    run = workflow / "results" / "smoke" / "cifar10" / "resnet" / "seed0"
    control, removal_mask = (load_torch(run / f"mask_{m}.pt") for m in ("control", "without_cat"))
    assert removal_mask["fixed"] == ["output.weight"] and removal_mask["removed"] == ["cat"]
    assert removal_mask["logits"]["output.weight"].equal(control["logits"]["output.weight"])
    stability = pd.read_parquet(results / "stability.parquet")
    # smoke: 1 network x 1 pair; two masks per pair, each trained on its own
    assert len(stability) == 1 and set(stability["arch"]) == {"simple_cnn_nodrop"}
    assert (stability["iou"] == stability["intersection"] / stability["union"]).all()
    assert stability["pair"].str.fullmatch(r"[a-z]+\+[a-z]+").all()
    masks = [load_torch(run.parent.parent / "simple_cnn_nodrop" / "seed0" / "stability" / f"{stability['pair'][0]}_mask{s}.pt")
             for s in (0, 1)]
    assert masks[0]["fixed"] == masks[1]["fixed"] == []
    assert not masks[0]["logits"]["output.weight"].equal(masks[1]["logits"]["output.weight"])


def test_missing_cifar_copy_stops_with_the_file_and_path_named(workflow, tmp_path):
    override = tmp_path / "nocifar.yaml"
    override.write_text(f"cifar10:\n  data:\n    cifar_dir: {tmp_path / 'nowhere'}\n")
    result = snakemake(workflow, "results/smoke/data/cifar10/cifar10.pt", "--dry-run", extra_config=override,
                       check=False)
    assert result.returncode != 0
    assert f"{tmp_path / 'nowhere'}/data_batch_1" in result.stdout + result.stderr


def test_download_setting_plans_the_checked_download(workflow, tmp_path):
    override = tmp_path / "download.yaml"
    # cifar_dir (the session's converted copy) would take precedence over the download: unset it
    override.write_text(f"cifar10:\n  data:\n    cifar_dir: null\n    download: true\n"
                        f"    download_dir: {tmp_path / 'cifar'}\n")
    result = snakemake(workflow, "results/smoke/data/cifar10/cifar10.pt", "--dry-run", "--forceall",
                       extra_config=override)
    assert planned_jobs(result) == {"download_cifar10": 1, "cifar10_data": 1}
    assert f"{tmp_path / 'cifar'}/cifar-10-batches-py" in result.stdout + result.stderr

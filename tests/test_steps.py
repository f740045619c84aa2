"""What every experiment's workflow steps share (modmask.steps): one network file format, mask files,
provenance columns and table writing."""
from __future__ import annotations

import logging

import pandas as pd
import pytest
import torch

from modmask import steps
from modmask.experiments import addmul, scan
from modmask.io import read_parquet, read_parquet_metadata, stable_hash
from modmask.masks import MaskSelection, WeightMask
from modmask.models import build_model
from modmask.training import History
from step_jobs import run_step, snakemake_job

LOG = logging.getLogger("test_steps")


def test_a_saved_network_loads_with_the_same_outputs_and_in_eval_mode(tmp_path):
    torch.manual_seed(0)
    spec = {"model": "fnn", "hidden": [32, 32]}
    model = build_model(spec, addmul.INPUT_SIZE, addmul.OUTPUT_SIZE)
    history = History()
    history.add(step=1, loss=0.5)
    steps.save_network(tmp_path / "network.pt", "addmul", spec, model, history, {"seed": 3})
    loaded, data = steps.load_network(tmp_path / "network.pt", "addmul")
    x = torch.randn(5, addmul.INPUT_SIZE)
    assert torch.equal(loaded(x), model.eval()(x)) and not loaded.training
    assert data["history"] == [{"step": 1, "loss": 0.5}] and data["provenance"] == {"seed": 3}
    assert data["format"] == steps.NETWORK_FORMAT and data["experiment"] == "addmul"


def test_one_experiments_network_is_refused_as_anothers_with_what_to_do(tmp_path):
    spec = {"model": "lstm_seq2seq", "hidden": 8, "layers": 1}
    model = scan.build_network(spec, seed=0)
    steps.save_network(tmp_path / "network.pt", "scan", spec, model, History(), {})
    with pytest.raises(ValueError) as error:
        steps.load_network(tmp_path / "network.pt", "cifar10")
    message = str(error.value)
    assert "network.pt" in message and "'scan'" in message and "'cifar10'" in message and "delete it" in message


def test_masks_round_trip_with_their_extra_fields(tmp_path):
    torch.manual_seed(1)
    model = build_model({"model": "fnn", "hidden": [8]}, 4, 2)
    mask = WeightMask.for_module(model, MaskSelection(), 0.9)
    with torch.no_grad():
        for logit in mask.trainable_parameters():
            logit.normal_()
    steps.save_mask(tmp_path / "mask.pt", mask, History(), {"seed": 0}, removed=["cat"])
    loaded = steps.load_mask(tmp_path / "mask.pt")
    assert loaded.names == mask.names
    assert all(torch.equal(loaded.logit(n), mask.logit(n)) for n in mask.names)
    assert torch.load(tmp_path / "mask.pt", weights_only=True)["removed"] == ["cat"]


def test_provenance_columns_come_in_one_order_and_hash_exactly_the_given_settings():
    hashed = {"data": {"size": 3}, "mask": {"beta": 1e-4}}
    columns = steps.provenance("scan", "smoke", {"arch": "lstm"}, "2", hashed, "abc123", mask="length")
    assert list(columns) == ["experiment", "scale", "arch", "seed", "mask", "config_hash", "code_version"]
    assert columns["seed"] == 2 and columns["config_hash"] == stable_hash(hashed)
    assert steps.provenance("scan", "smoke", {"arch": "lstm"}, 2, {**hashed, "x": 1}, "a")["config_hash"] \
        != columns["config_hash"]


def test_the_kernels_choice_is_left_out_of_the_config_hash_at_any_depth():
    # a run may switch kernels midway (e.g. to kernels: fused) and resume from its checkpoints: its
    # progress identity (the provenance without the code version) must not change
    hashed = {"train": {"steps": 30000, "lr": 1e-2}, "mask": [{"beta": 1e-4}]}
    with_kernels = {"train": {"steps": 30000, "lr": 1e-2, "kernels": "fused"},
                    "mask": [{"beta": 1e-4, "kernels": "eager"}]}
    plain = steps.provenance("permuted_mnist", "long", {"variant": "normal"}, 0, hashed, "a")
    for kernels in ("fused", "eager"):
        switched = {**with_kernels, "train": {**with_kernels["train"], "kernels": kernels}}
        assert steps.provenance("permuted_mnist", "long", {"variant": "normal"}, 0, switched, "b")["config_hash"] \
            == plain["config_hash"] == stable_hash(hashed)
    assert steps.progress_identity(plain) == steps.progress_identity(
        steps.provenance("permuted_mnist", "long", {"variant": "normal"}, 0, with_kernels, "b"))
    # every other setting still counts
    other_lr = {**hashed, "train": {"steps": 30000, "lr": 2e-2}}
    assert steps.provenance("permuted_mnist", "long", {"variant": "normal"}, 0, other_lr, "a")["config_hash"] \
        != plain["config_hash"]


def test_tables_are_written_with_provenance_first_and_a_missing_one_is_named(tmp_path):
    prov = {"experiment": "addmul", "seed": 0}
    steps.write_tables({"accuracy": pd.DataFrame({"accuracy": [0.5]})}, {"accuracy": tmp_path / "a.parquet"}, prov,
                       LOG)
    table = read_parquet(tmp_path / "a.parquet")
    assert list(table.columns) == ["experiment", "seed", "accuracy"]
    assert read_parquet_metadata(tmp_path / "a.parquet")["seed"] == 0
    with pytest.raises(KeyError, match="sharing"):
        steps.write_tables({}, {"sharing": tmp_path / "s.parquet"}, prov, LOG)


def test_list_inputs_are_named_by_file_name_or_by_folder():
    assert steps.files_by_name(["r/mask_easy.pt", "r/mask_control.pt"]) == {"easy": "r/mask_easy.pt",
                                                                            "control": "r/mask_control.pt"}
    assert steps.files_by_name(["r/network_length.pt"]) == {"length": "r/network_length.pt"}
    assert steps.files_by_name(["d/length/test.parquet", "d/simple/test.parquet"]) == {
        "length": "d/length/test.parquet", "simple": "d/simple/test.parquet"}
    assert steps.files_by_name(["s/cat+dog_mask0.pt", "s/cat+dog_mask1.pt"]) == {
        "cat+dog_mask0": "s/cat+dog_mask0.pt", "cat+dog_mask1": "s/cat+dog_mask1.pt"}


def _snakemake_job(**params):
    return snakemake_job(wildcards={"seed": "3"}, input={"data": "d.parquet", "masks": ["mask_a.pt", "mask_b.pt"]},
                         output={"network": "n.pt"}, config={"checkpoint_every": 50}, log="job.log", **params)


def test_a_job_is_read_into_plain_data():
    job = steps.Job.from_snakemake(_snakemake_job(experiment="scan", settings={"lr": 0.1}, provenance={"seed": 3}))
    assert (job.experiment, job.seed, job.threads, job.checkpoint_every) == ("scan", 3, 1, 50)
    assert job.input == {"data": "d.parquet", "masks": ["mask_a.pt", "mask_b.pt"]} and job.output == {"network": "n.pt"}
    assert job.json("settings") == {"lr": 0.1} and job.provenance == {"seed": 3} and job.log_file == "job.log"
    assert steps.mask_seed(3, "ab") == 3000 + ord("a") + ord("b")


def test_running_a_step_an_experiment_lacks_names_the_experiment_and_the_step():
    with pytest.raises(ValueError, match="set params.experiment or use an {experiment} wildcard"):
        steps.run(_snakemake_job(), "mask")
    with pytest.raises(ValueError, match="unknown experiment 'nonexistent'"):
        steps.run(_snakemake_job(experiment="nonexistent"), "mask")
    with pytest.raises(ValueError, match=r"experiment 'scan' has no 'stability' step \(modmask.experiments.scan.stab"):
        steps.run(_snakemake_job(experiment="scan", step="stability"), "evaluate")
    with pytest.raises(ValueError, match="names the mask it trains: set params.mask"):
        steps.run(_snakemake_job(experiment="scan"), "mask")


def test_every_experiment_but_permuted_mnist_has_the_three_steps():
    from modmask import experiments

    for name in experiments.EXPERIMENTS:
        exp = experiments.get(name)
        if name == "permuted_mnist":
            assert callable(exp.run) and callable(exp.tables) and callable(exp.run_data)
            continue
        for step in experiments.STEPS:
            assert callable(experiments.step_function(exp, step)), (name, step)


def test_add_mul_steps_through_run_write_a_network_a_mask_per_task_and_the_tables(tmp_path):
    """The per-task steps end to end, as the workflow calls them: the files, their names and the tables."""
    from modmask.experiments import addmul as exp
    from modmask.io import write_parquet

    write_parquet(exp.generate({}, 0), tmp_path / "d.parquet")
    spec = {"model": "fnn", "hidden": [16]}
    prov = {"experiment": "addmul", "seed": 0}
    run_step("network", experiment="addmul", input={"data": tmp_path / "d.parquet"},
             output={"network": tmp_path / "network.pt"}, arch=spec, provenance=prov,
             settings={"steps": 20, "lr": 1e-2, "batch_size": 16, "log_every": 10})
    network, contents = steps.load_network(tmp_path / "network.pt", "addmul")
    assert contents["spec"] == spec and contents["provenance"] == prov and len(contents["history"]) == 2
    for task in exp.MASK_TASKS:
        run_step("mask", experiment="addmul",
                 input={"data": tmp_path / "d.parquet", "network": tmp_path / "network.pt"},
                 output={"mask": tmp_path / f"mask_{task}.pt"}, provenance=prov, mask=task,
                 settings={"steps": 4, "lr": 0.1, "batch_size": 8, "mask_samples": 2, "beta": 1e-4, "log_every": 2})
        assert not (tmp_path / f"mask_{task}.pt.ckpt").exists()
    tables = {t: tmp_path / f"{t}.parquet" for t in ("accuracy", "confusion", "layers", "sharing", "histogram")}
    run_step("evaluate", experiment="addmul", provenance=prov, output=tables,
             input={"data": tmp_path / "d.parquet", "network": tmp_path / "network.pt",
                    "masks": [tmp_path / f"mask_{t}.pt" for t in exp.MASK_TASKS]})
    accuracy = read_parquet(tables["accuracy"])
    # no mask, then each mask and its inversion, in the input's order
    assert list(dict.fromkeys(accuracy["mask"])) == ["none", *exp.MASK_TASKS]
    assert set(read_parquet(tables["sharing"])["mask"]) == set(exp.SHARING_TASKS)
    assert (read_parquet(tables["layers"])["experiment"] == "addmul").all()


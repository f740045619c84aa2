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


def test_tables_are_written_with_provenance_first_and_a_missing_one_is_named(tmp_path):
    prov = {"experiment": "addmul", "seed": 0}
    steps.write_tables({"accuracy": pd.DataFrame({"accuracy": [0.5]})}, {"accuracy": tmp_path / "a.parquet"}, prov,
                       LOG)
    table = read_parquet(tmp_path / "a.parquet")
    assert list(table.columns) == ["experiment", "seed", "accuracy"]
    assert read_parquet_metadata(tmp_path / "a.parquet")["seed"] == 0
    with pytest.raises(KeyError, match="sharing"):
        steps.write_tables({}, {"sharing": tmp_path / "s.parquet"}, prov, LOG)


class _Named(dict):
    """Snakemake's named lists, as far as Job.from_snakemake reads them."""


def _snakemake_job(**params):
    from types import SimpleNamespace

    return SimpleNamespace(params=_Named(params), wildcards=_Named(seed="3"), input=_Named(data="d.parquet",
                           masks=["mask_a.pt", "mask_b.pt"]), output=_Named(network="n.pt"), log=["job.log"],
                           threads=2, config={"device": "cpu", "checkpoint_every": 50})


def test_a_job_is_read_into_plain_data():
    job = steps.Job.from_snakemake(_snakemake_job(experiment="scan", settings='{"lr": 0.1}', provenance={"seed": 3}))
    assert (job.experiment, job.seed, job.threads, job.checkpoint_every) == ("scan", 3, 2, 50)
    assert job.input == {"data": "d.parquet", "masks": ["mask_a.pt", "mask_b.pt"]} and job.output == {"network": "n.pt"}
    assert job.json("settings") == {"lr": 0.1} and job.provenance == {"seed": 3} and job.log_file == "job.log"
    assert steps.mask_seed(3, "ab") == 3000 + ord("a") + ord("b")


def test_running_a_step_an_experiment_lacks_names_the_experiment_and_the_step():
    with pytest.raises(ValueError, match="set params.experiment or use an {experiment} wildcard"):
        steps.run(_snakemake_job(), "mask")
    with pytest.raises(ValueError, match="no workflow steps for experiment 'nonexistent'"):
        steps.run(_snakemake_job(experiment="nonexistent"), "mask")
    with pytest.raises(ValueError, match=r"experiment 'scan' has no 'stability' step \(modmask.scan_steps"):
        steps.run(_snakemake_job(experiment="scan", step="stability"), "evaluate")

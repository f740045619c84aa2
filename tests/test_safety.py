"""Bad inputs: nothing loaded runs code, damaged artefacts and checkpoints are named (a damaged checkpoint
never blocks its job), training stops on non-finite losses and logits, figure and collect rules check the
columns they read, and outputs get the permissions the umask gives. Config cases: tests/test_config.py.

Every crafted file carries a payload that would create a marker file; each test first shows that an
ordinary unpickler does run it (so the test can fail), then that our loaders refuse the file and the
marker never appears.
"""
from __future__ import annotations

import logging
import os
import pickle
import random
import runpy
from collections import OrderedDict
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from modmask import BatchSampler, TrainSettings, WeightMask, train_mask, train_network
from modmask.data import cifar10 as cifar_data
from modmask.data.cifar10 import CLASSES, Cifar10FileError
from modmask.io import (ArtefactError, TableError, atomic_path, concat_parquet, current_umask, load_checkpoint,
                        load_torch, read_table, save_torch, write_json, write_parquet)

REPO = Path(__file__).resolve().parent.parent


class Payload:
    """Pickles as a call of ``open(marker, "w")``: unpickling it creates the marker file."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def crafted_torch_file(path: Path, marker: Path, **content) -> Path:
    """A torch file that looks like an artefact but whose unpickling would run the payload."""
    torch.save({**content, "payload": Payload(marker)}, path)
    torch.load(path, weights_only=False)  # the control: an unsafe load runs it...
    assert marker.exists()
    marker.unlink()                        # ...and the real test starts without the marker
    return path


# ---- nothing loaded runs code ----------------------------------------------------------------------

def _loaders():
    from modmask import steps
    from modmask.experiments import cifar10

    log = logging.getLogger("test_safety")
    return {
        "network (add/mul)": (lambda p: steps.load_network(p, "addmul"),
                              {"format": steps.NETWORK_FORMAT, "experiment": "addmul"}),
        "mask": (steps.load_mask, {"format": "modmask.WeightMask/1"}),
        "SCAN network": (lambda p: steps.load_network(p, "scan"), {}),
        "CIFAR-10 network": (lambda p: steps.load_network(p, "cifar10"), {}),
        "CIFAR-10 data cache": (cifar10.load_data, {"format": "modmask.cifar10.data/1"}),
        "Mathematics network": (lambda p: steps.load_network(p, "mathematics"), {}),
        "permuted MNIST run": (lambda p: steps.sequential_run_tables("permuted_mnist", [p], {}, log), {}),
    }


@pytest.mark.parametrize("kind", list(_loaders()))
def test_a_crafted_artefact_is_refused_and_its_payload_never_runs(tmp_path, kind):
    loader, content = _loaders()[kind]
    marker = tmp_path / "payload-ran"
    path = crafted_torch_file(tmp_path / "network.pt", marker, **content)
    with pytest.raises(ArtefactError) as error:
        loader(path)
    message = str(error.value)
    assert str(path) in message and "refused" in message and "io.open" in message and "delete it" in message
    assert not marker.exists()


def test_a_crafted_checkpoint_is_set_aside_unrun_and_the_job_starts_afresh(tmp_path, caplog):
    marker = tmp_path / "payload-ran"
    checkpoint = crafted_torch_file(tmp_path / "net.ckpt", marker, identity="run", step=3)
    reference, resumed = _train_twice(tmp_path, checkpoint, caplog)
    assert not marker.exists()
    assert torch.equal(reference, resumed)  # exactly the run without a checkpoint
    assert f"ignoring checkpoint {checkpoint}" in caplog.text and "io.open" in caplog.text
    assert not checkpoint.exists() and (tmp_path / "net.ckpt.corrupt").exists()


def _batch(n: int = 4, seed: int = 0) -> dict:
    rng = np.random.RandomState(seed)
    return {b"batch_label": b"x", b"labels": [i % 10 for i in range(n)],
            b"data": rng.randint(0, 256, size=(n, 3072)).astype(np.uint8), b"filenames": [b"x.png"] * n}


def _batches_folder(root: Path, protocol: int = 2) -> Path:
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    for i, name in enumerate([*cifar_data.TRAIN_FILES, *cifar_data.TEST_FILES]):
        (folder / name).write_bytes(pickle.dumps(_batch(seed=i), protocol=protocol))
    (folder / "batches.meta").write_bytes(pickle.dumps({b"label_names": [c.encode() for c in CLASSES]},
                                                       protocol=protocol))
    return folder


@pytest.mark.parametrize("name", ["data_batch_3", "batches.meta"])
def test_a_crafted_cifar_batch_is_refused_and_its_payload_never_runs(tmp_path, name):
    folder = _batches_folder(tmp_path)
    marker = tmp_path / "payload-ran"
    content = {**_batch(), b"extra": Payload(marker)} if name != "batches.meta" else \
        {b"label_names": [c.encode() for c in CLASSES], b"extra": Payload(marker)}
    (folder / name).write_bytes(pickle.dumps(content, protocol=2))
    pickle.loads((folder / name).read_bytes())  # the control: plain pickle runs it
    assert marker.exists()
    marker.unlink()
    with pytest.raises(Cifar10FileError) as error:
        cifar_data.load(folder, verify=False) if name != "batches.meta" else cifar_data.load(folder)
    message = str(error.value)
    assert f"CIFAR-10 file {name} at {(folder / name).resolve()} was refused" in message
    assert "io.open" in message
    assert not marker.exists()


def test_the_cifar_unpickler_refuses_codecs_beyond_latin1_bytes(tmp_path):
    import codecs

    class Encoded:
        def __reduce__(self):
            return (codecs.encode, ("eJwrSS0uAQAEXQHB", "base64"))

    folder = _batches_folder(tmp_path)
    (folder / "test_batch").write_bytes(pickle.dumps({**_batch(), b"x": Encoded()}, protocol=2))
    with pytest.raises(Cifar10FileError, match="test_batch.*only for latin1"):
        cifar_data.load(folder, verify=False)


@pytest.mark.parametrize("protocol", [2, 3, 4, 5, "numpy1"])
def test_the_cifar_unpickler_reads_the_official_format_at_every_protocol(tmp_path, protocol):
    """NumPy 1 wrote ``numpy.core.multiarray._reconstruct`` (the official files), NumPy 2 ``numpy._core``."""
    folder = _batches_folder(tmp_path, 2 if protocol == "numpy1" else protocol)
    if protocol == "numpy1":
        for path in folder.iterdir():
            raw = path.read_bytes()
            path.write_bytes(raw.replace(b"numpy._core.multiarray\n", b"numpy.core.multiarray\n"))
        assert b"numpy.core.multiarray\n_reconstruct" in (folder / "data_batch_1").read_bytes()
    images, labels = cifar_data.read_batch(folder / "data_batch_2")
    expected = _batch(seed=1)
    assert np.array_equal(images.reshape(4, -1), expected[b"data"]) and labels.tolist() == expected[b"labels"]
    assert cifar_data.read_meta(folder / "batches.meta") == CLASSES


# ---- every saved object loads safely ------------------------------------------------------------------

class Wildcard(str):
    """Like Snakemake's string subclasses in wildcards and params."""


def test_every_kind_of_saved_state_loads_back_with_weights_only(tmp_path):
    from modmask.cnn import build_cnn
    from modmask.experiments import scan

    cnn = build_cnn({"model": "resnet", "depth": 8, "widths": [4, 4, 8]}, seed=0)  # BatchNorm: state_dict versions
    lstm = scan.build_network({"model": "lstm_seq2seq", "hidden": 8, "layers": 1, "embedding": 4}, seed=0)
    lstm.get_extra_state()  # the teacher-forcing generator travels as _extra_state
    sgd = torch.optim.SGD(cnn.parameters(), lr=0.1, momentum=0.9)
    cnn(torch.randn(2, 3, 32, 32)).sum().backward()
    sgd.step()
    milestones = torch.optim.lr_scheduler.MultiStepLR(sgd, [3, 5])
    adam = torch.optim.Adam(lstm.parameters())
    warmup = torch.optim.lr_scheduler.LambdaLR(adam, lambda s: min(1.0, s / 10))
    sampler = BatchSampler([torch.arange(20)], 4, seed=0, lengths=torch.arange(20), pool=3)
    sampler()
    state = {"cnn": cnn.state_dict(), "lstm": lstm.state_dict(), "sgd": sgd.state_dict(),
             "milestones": milestones.state_dict(), "warmup": warmup.state_dict(), "sampler": sampler.state_dict(),
             "rng": torch.get_rng_state(), "python_rng": random.Random(3).getstate(),
             "provenance": {"arch": Wildcard("fnn"), "seed": np.int64(2), "beta": np.float32(0.5)},
             "history": [{"step": 1, "loss": np.float64(0.25)}], "path": tmp_path, "array": np.arange(3)}
    save_torch(state, tmp_path / "state.pt")
    back = load_torch(tmp_path / "state.pt")   # weights_only=True inside
    fresh_cnn = build_cnn({"model": "resnet", "depth": 8, "widths": [4, 4, 8]}, seed=1)
    fresh_cnn.load_state_dict(back["cnn"])
    assert all(torch.equal(a, b) for a, b in zip(fresh_cnn.state_dict().values(), cnn.state_dict().values()))
    assert back["cnn"]._metadata == cnn.state_dict()._metadata
    fresh_lstm = scan.build_network({"model": "lstm_seq2seq", "hidden": 8, "layers": 1, "embedding": 4}, seed=5)
    fresh_lstm.load_state_dict(back["lstm"])
    assert fresh_lstm.get_extra_state() == lstm.get_extra_state()
    sgd.load_state_dict(back["sgd"])
    milestones.load_state_dict(back["milestones"])
    assert milestones.milestones == {3: 1, 5: 1} and milestones.milestones[4] == 0  # still a Counter
    warmup.load_state_dict(back["warmup"])
    assert back["python_rng"] == random.Random(3).getstate()
    assert back["provenance"] == {"arch": "fnn", "seed": 2, "beta": 0.5}
    assert type(back["provenance"]["arch"]) is str and type(back["history"][0]["loss"]) is float
    assert back["path"] == str(tmp_path) and torch.equal(back["array"], torch.arange(3))


def test_saving_an_object_a_safe_load_would_refuse_fails_at_once_naming_where_it_sits(tmp_path):
    with pytest.raises(TypeError, match=r"\['history'\]\[1\]\['when'\] is a datetime.date.*weights_only"):
        import datetime
        save_torch({"history": [{}, {"when": datetime.date(2024, 1, 1)}]}, tmp_path / "x.pt")
    assert not list(tmp_path.iterdir())


# ---- truncated and corrupt artefacts ------------------------------------------------------------------

def _saved_network(path: Path) -> Path:
    from modmask import steps
    from modmask.experiments import addmul
    from modmask.models import build_model
    from modmask.training import History

    spec = {"model": "fnn", "hidden": [16]}
    steps.save_network(path, "addmul", spec, build_model(spec, addmul.INPUT_SIZE, addmul.OUTPUT_SIZE), History(), {})
    return path


@pytest.mark.parametrize("damage", ["truncated", "empty", "garbage"])
def test_a_damaged_network_file_is_named_with_what_to_do(tmp_path, damage):
    from modmask import steps

    path = _saved_network(tmp_path / "network.pt")
    steps.load_network(path, "addmul")  # the control: the intact file loads
    raw = path.read_bytes()
    path.write_bytes({"truncated": raw[: len(raw) // 2], "empty": b"", "garbage": b"not a network" * 50}[damage])
    with pytest.raises(ArtefactError) as error:
        steps.load_network(path, "addmul")
    assert str(path) in str(error.value) and "truncated or corrupt" in str(error.value)
    assert "delete it so that Snakemake rebuilds it" in str(error.value)


def _train_twice(tmp_path: Path, checkpoint: Path, caplog):
    """The same short run without a checkpoint and with ``checkpoint`` present; the final weights."""
    x = torch.randn(256, 4)
    y = (x[:, 0] > 0).long()
    settings = TrainSettings(steps=12, lr=1e-2, batch_size=32, checkpoint_every=5, log_every=4)

    def run(path):
        torch.manual_seed(0)
        net = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
        with caplog.at_level(logging.INFO, logger="test_safety"):
            train_network(net, BatchSampler([x, y], 32, seed=0), nn.functional.cross_entropy, settings,
                          checkpoint_path=path, identity="run", log=logging.getLogger("test_safety"))
        return torch.cat([p.detach().flatten() for p in net.parameters()])

    return run(None), run(checkpoint)


@pytest.mark.parametrize("damage", ["truncated", "garbage", "not a dict"])
def test_a_corrupt_checkpoint_is_set_aside_with_a_warning_and_the_job_restarts_cleanly(tmp_path, caplog, damage):
    checkpoint = tmp_path / "net.ckpt"
    save_torch({"identity": "run", "step": 5, "history": []}, checkpoint)
    raw = checkpoint.read_bytes()
    if damage == "not a dict":
        save_torch([1, 2, 3], checkpoint)
    else:
        checkpoint.write_bytes(raw[: len(raw) // 3] if damage == "truncated" else b"\x00garbage" * 40)
    reference, restarted = _train_twice(tmp_path, checkpoint, caplog)
    assert torch.equal(reference, restarted)
    warning = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warning) == 1 and f"ignoring checkpoint {checkpoint}" in warning[0].getMessage()
    assert f"moved it to {checkpoint}.corrupt" in warning[0].getMessage()
    assert not checkpoint.exists()  # finished: no checkpoint left; the bad one is kept aside for inspection
    # a second bad checkpoint replaces the first one set aside: nothing piles up, nothing blocks
    checkpoint.write_bytes(b"garbage again")
    assert load_checkpoint(checkpoint, logging.getLogger("test_safety")) is None
    assert (tmp_path / "net.ckpt.corrupt").read_bytes() == b"garbage again" and not checkpoint.exists()


# ---- non-finite training ------------------------------------------------------------------------------

def _mask_problem():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
    for p in net.parameters():
        p.requires_grad_(False)
    x = torch.randn(128, 4)
    return net, BatchSampler([x, (x[:, 0] > 0).long()], 32, seed=0)


def test_a_nan_regulariser_stops_mask_training_although_the_task_loss_is_finite():
    net, sampler = _mask_problem()
    settings = TrainSettings(steps=5, lr=1e-2, batch_size=32, mask_samples=4, beta=float("nan"), log_every=5)
    with pytest.raises(FloatingPointError, match=r"mask: the loss with the regulariser became nan at step 1 "
                                                 r"\(task loss [0-9.]+\); check beta"):
        train_mask(net, sampler, nn.functional.cross_entropy, settings, seed=0)


def test_logits_that_become_infinite_stop_mask_training():
    """An infinite learning rate: the one step's loss is finite (computed before the update), the logits
    after it are not."""
    net, sampler = _mask_problem()
    settings = TrainSettings(steps=1, lr=float("inf"), batch_size=32, mask_samples=4, beta=1e-4, grad_clip=None,
                             log_every=1)
    with pytest.raises(FloatingPointError, match=r"mask: \d+ mask logits became NaN or infinite by step 1 "
                                                 r"\(\d+ in 0.weight\); lower the learning rate"):
        train_mask(net, sampler, nn.functional.cross_entropy, settings, seed=0)


def test_a_nan_regulariser_stops_joint_training():
    from modmask.training import train_jointly

    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
    x = torch.randn(128, 4)
    mask = WeightMask.for_module(net, None, 2.0)
    settings = TrainSettings(steps=3, lr=1e-2, batch_size=32, mask_samples=4, beta=float("nan"), log_every=3)
    with pytest.raises(FloatingPointError, match="joint: the loss with the regulariser became nan at step 1"):
        train_jointly(net, mask, BatchSampler([x, (x[:, 0] > 0).long()], 32, seed=0), nn.functional.cross_entropy,
                      settings)


# ---- figure and collect rules check the columns they read ----------------------------------------------

def _figure_cases():
    from modmask.plotting import addmul, cifar10, double_add, histogram, mathematics, permuted_mnist, scan, sweeps

    experiment_tables = ["accuracy", "confusion", "layers", "sharing", "histogram"]
    cases = []
    for module, names in [(addmul, experiment_tables), (double_add, experiment_tables),
                          (sweeps, ["accuracy", "sharing", "layers"]), (permuted_mnist, ["sharing", "layers", "accuracy"]),
                          (scan, ["accuracy", "output_weights"]), (cifar10, ["accuracy", "confusion"]),
                          (mathematics, ["accuracy"]), (histogram, ["histogram"])]:
        plots = module.__name__.split(".")[-1]
        assert set(module.COLUMNS) <= set(names), plots
        for table in module.COLUMNS:
            cases.append(pytest.param(plots, module, names, table, id=f"{plots}-{table}"))
    return cases


class Files(list):
    """Snakemake's named file lists: a list that also has ``items()``."""

    def __init__(self, named: dict):
        super().__init__(named.values())
        self.named = named

    def items(self):
        return self.named.items()


def run_script(name: str, **fields):
    """Run ``scripts/<name>.py`` as Snakemake would, with a stand-in ``snakemake`` object."""
    defaults = {"scriptdir": str(REPO / "scripts"), "config": {"cifar10": {"architectures": {}}},
                "wildcards": SimpleNamespace(), "params": SimpleNamespace(), "threads": 1}
    snakemake = SimpleNamespace(**{**defaults, **fields})
    runpy.run_path(str(REPO / "scripts" / f"{name}.py"), init_globals={"snakemake": snakemake}, run_name="__main__")


@pytest.mark.parametrize("plots, module, names, table", _figure_cases())
def test_a_figure_rule_names_the_missing_column_and_its_file(tmp_path, plots, module, names, table):
    dropped = module.COLUMNS[table][-1]
    paths = {}
    for name in names:
        columns = [c for c in module.COLUMNS.get(name, ("arch",)) if not (name == table and c == dropped)]
        paths[name] = str(tmp_path / f"{name}.parquet")
        write_parquet(pd.DataFrame({c: [1] for c in [*columns, "other"]}), paths[name])
    out = tmp_path / "figures"
    with pytest.raises(TableError) as error:
        run_script("figures", input=Files(paths), output=[str(out)], log=[str(tmp_path / "figures.log")],
                   params=SimpleNamespace(plots=plots))
    assert f"table {paths[table]} lacks column(s) ['{dropped}']" in str(error.value)
    assert not out.exists()  # no figure, let alone an empty panel


def test_the_collect_rule_names_a_seed_table_that_lacks_a_column(tmp_path):
    good = pd.DataFrame({"arch": ["fnn"], "seed": [0], "mask": ["add"], "accuracy": [0.9]})
    paths = [tmp_path / f"seed{s}.parquet" for s in range(3)]
    write_parquet(good, paths[0])
    write_parquet(good.drop(columns="accuracy").assign(seed=1), paths[1])
    write_parquet(good.iloc[:0][["arch"]], paths[2])  # a run with nothing to report passes as it is
    out = tmp_path / "accuracy.parquet"
    unnamed = Files({})  # a rule's single output without a name
    unnamed.append(str(out))
    with pytest.raises(TableError) as error:
        run_script("collect_table", input=[str(p) for p in paths], output=unnamed, log=[str(tmp_path / "c.log")])
    assert f"table {paths[1]} lacks column(s) ['accuracy']" in str(error.value) and str(paths[0]) in str(error.value)
    assert not out.exists()
    write_parquet(good.assign(seed=1), paths[1])  # the control: consistent tables concatenate
    assert concat_parquet(paths, out)["seed"].tolist() == [0, 1]


def test_one_collect_job_writes_each_table_from_the_runs_files_of_that_name(tmp_path):
    runs = [tmp_path / f"seed{s}" for s in range(2)]
    for seed, run in enumerate(runs):
        run.mkdir()
        write_parquet(pd.DataFrame({"seed": [seed], "accuracy": [0.5 + seed]}), run / "accuracy.parquet")
        write_parquet(pd.DataFrame({"seed": [seed] * 2, "shared": [0.1, 0.2]}), run / "sharing.parquet")
    outputs = {name: str(tmp_path / f"{name}.parquet") for name in ("accuracy", "sharing")}
    run_script("collect_table", input=[str(run / f"{name}.parquet") for run in runs for name in outputs],
               output=Files(outputs), log=[str(tmp_path / "c.log")])
    accuracy, sharing = (pd.read_parquet(outputs[name]) for name in ("accuracy", "sharing"))
    assert accuracy["accuracy"].tolist() == [0.5, 1.5] and list(accuracy.columns) == ["seed", "accuracy"]
    assert sharing["seed"].tolist() == [0, 0, 1, 1] and list(sharing.columns) == ["seed", "shared"]


def test_the_summary_names_the_table_and_the_missing_column(tmp_path):
    from modmask.summary import markdown

    (tmp_path / "mathematics").mkdir()
    table = pd.DataFrame({"task": ["t"], "seed": [0], "mask": ["none"], "test_level": ["hard"], "accuracy": [0.5]})
    write_parquet(table, tmp_path / "mathematics" / "accuracy.parquet")
    assert "50.0%" in markdown(tmp_path)  # the control
    write_parquet(table.drop(columns="test_level"), tmp_path / "mathematics" / "accuracy.parquet")
    with pytest.raises(TableError, match=rf"table {tmp_path}/mathematics/accuracy.parquet lacks column\(s\) "
                                         r"\['test_level'\]"):
        markdown(tmp_path)


def test_read_table_passes_an_empty_table_only_when_asked(tmp_path):
    write_parquet(pd.DataFrame({"arch": pd.Series([], dtype=str)}), tmp_path / "t.parquet")
    assert read_table(tmp_path / "t.parquet", ["arch", "token"], allow_empty=True).empty
    with pytest.raises(TableError, match=r"lacks column\(s\) \['token'\]"):
        read_table(tmp_path / "t.parquet", ["arch", "token"])


# ---- permissions -------------------------------------------------------------------------------------

@pytest.fixture
def umask():
    """Set a umask for one test; the old one comes back afterwards."""
    old = os.umask(0o022)
    os.umask(old)
    yield lambda mask: os.umask(mask)
    os.umask(old)


@pytest.mark.parametrize("mask, mode", [(0o022, 0o644), (0o027, 0o640), (0o002, 0o664), (0o077, 0o600)])
def test_outputs_get_the_permissions_the_umask_gives(tmp_path, umask, mask, mode):
    umask(mask)
    assert current_umask() == mask
    save_torch({"a": torch.zeros(2)}, tmp_path / "network.pt")
    write_parquet(pd.DataFrame({"a": [1]}), tmp_path / "table.parquet")
    write_json({"a": 1}, tmp_path / "meta.json")
    with atomic_path(tmp_path / "figure.png") as tmp:
        tmp.write_bytes(b"png")
    for name in ("network.pt", "table.parquet", "meta.json", "figure.png"):
        assert (tmp_path / name).stat().st_mode & 0o777 == mode, name
    assert current_umask() == mask  # reading it changed nothing


def test_mathematics_shards_get_the_permissions_the_umask_gives(tmp_path, umask):
    """The generator script runs in its own environment and cannot import modmask.io: its own writer."""
    shard = runpy.run_path(str(REPO / "scripts" / "mathematics_generate_shard.py"), run_name="shard")
    umask(0o027)
    shard["write_atomic"](["a\tb\n"], str(tmp_path / "shard.tsv"))
    assert (tmp_path / "shard.tsv").stat().st_mode & 0o777 == 0o640
    assert [p.name for p in tmp_path.iterdir()] == ["shard.tsv"]


def test_state_dict_metadata_survives_the_round_trip(tmp_path):
    """load_state_dict reads each module's version from ``_metadata``; plain_artefact keeps it."""
    state = nn.BatchNorm1d(3).state_dict()
    assert isinstance(state, OrderedDict) and state._metadata[""]["version"] == 2
    save_torch(state, tmp_path / "bn.pt")
    assert load_torch(tmp_path / "bn.pt")._metadata[""]["version"] == 2

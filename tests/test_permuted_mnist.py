"""Permuted MNIST transfer: IDX reading and its errors, permutations, freezing, re-initialisation,
mask init variants, the sharing metric, and resuming a killed run."""
import gzip
import hashlib
import logging

import numpy as np
import pandas as pd
import pytest
import torch
from torch.nn import functional as F

from modmask.data import mnist
from modmask.experiments import permuted_mnist as pm
from modmask.masks import BinaryMask, WeightMask
from modmask.training import BatchSampler, TrainSettings, train_jointly

from local_data import shared_data

SHARED_MNIST = shared_data("mnist")
LOG = logging.getLogger("test")


def idx_bytes(array: np.ndarray) -> bytes:
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    return header + array.astype(np.uint8).tobytes()


# ---- IDX files --------------------------------------------------------------------------------

def test_parse_idx_hand_built_file(tmp_path):
    images = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    raw = idx_bytes(images)
    assert raw[:4] == b"\x00\x00\x08\x03" and raw[4:8] == b"\x00\x00\x00\x02"  # magic 0x0803, 2 items
    np.testing.assert_array_equal(mnist.parse_idx(raw, 0x0803, (2, 3, 4)), images)
    labels = np.array([7, 0, 9], dtype=np.uint8)
    path = tmp_path / "labels.gz"
    path.write_bytes(gzip.compress(idx_bytes(labels)))
    np.testing.assert_array_equal(mnist.read_idx_file(path), labels)  # gzip detected by its magic bytes
    plain = tmp_path / "labels.idx"
    plain.write_bytes(idx_bytes(labels))
    np.testing.assert_array_equal(mnist.read_idx_file(plain), labels)


@pytest.mark.parametrize("damage, message", [
    (lambda raw: raw[:-1], "truncated or corrupt"),
    (lambda raw: raw + b"\x00", "truncated or corrupt"),
    (lambda raw: b"\x00\x00\x08\x01" + raw[4:], "magic number"),
    (lambda raw: raw[:2], "too short"),
])
def test_parse_idx_rejects_damaged_data(damage, message):
    raw = idx_bytes(np.zeros((2, 3, 4), np.uint8))
    with pytest.raises(mnist.MnistFileError, match=message):
        mnist.parse_idx(damage(raw), 0x0803, (2, 3, 4), name="some file")


def test_missing_file_error_names_file_and_expected_path(tmp_path):
    with pytest.raises(mnist.MnistFileError) as error:
        mnist.load(tmp_path)
    text = str(error.value)
    assert "train-images-idx3-ubyte.gz" in text and str(tmp_path.resolve()) in text and "mnist_dir" in text


def test_corrupt_files_are_named(tmp_path):
    # not gzip at all, but starting with the gzip magic: cannot be decompressed
    (tmp_path / "t10k-labels-idx1-ubyte.gz").write_bytes(b"\x1f\x8b" + b"garbage" * 10)
    with pytest.raises(mnist.MnistFileError, match="t10k-labels-idx1-ubyte.gz.*cannot be decompressed"):
        mnist.read_idx_file(tmp_path / "t10k-labels-idx1-ubyte.gz", "test_labels")
    # right layout, wrong content: the checksum catches it, the size check does not
    (tmp_path / "t10k-labels-idx1-ubyte.gz").write_bytes(gzip.compress(idx_bytes(np.zeros(10000, np.uint8))))
    with pytest.raises(mnist.MnistFileError, match=r"t10k-labels-idx1-ubyte.gz at .*wrong content"):
        mnist.read_idx_file(tmp_path / "t10k-labels-idx1-ubyte.gz", "test_labels")
    assert len(mnist.read_idx_file(tmp_path / "t10k-labels-idx1-ubyte.gz", "test_labels", verify=False)) == 10000
    # wrong number of items for the file it claims to be
    (tmp_path / "t10k-labels-idx1-ubyte.gz").write_bytes(gzip.compress(idx_bytes(np.zeros(10, np.uint8))))
    with pytest.raises(mnist.MnistFileError, match=r"t10k-labels-idx1-ubyte.gz.*dimensions \(10,\), expected \(10000,\)"):
        mnist.read_idx_file(tmp_path / "t10k-labels-idx1-ubyte.gz", "test_labels")


@pytest.mark.skipif(not SHARED_MNIST.exists(), reason="no local MNIST copy")
def test_real_mnist_labels_and_checksums():
    labels = mnist.read_idx_file(SHARED_MNIST / "t10k-labels-idx1-ubyte.gz", "test_labels")
    assert np.bincount(labels).tolist() == [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
    raw = gzip.decompress((SHARED_MNIST / "t10k-labels-idx1-ubyte.gz").read_bytes())
    assert hashlib.sha256(raw).hexdigest() == mnist.CONTENT_SHA256["test_labels"]


# ---- permutations -----------------------------------------------------------------------------

def test_permutations_identity_first_fixed_from_seed():
    perms = mnist.permutations(11, seed=3)
    assert perms.shape == (11, 784)
    assert torch.equal(perms[0], torch.arange(784))
    for p in perms[1:]:
        assert torch.equal(p.sort().values, torch.arange(784)) and not torch.equal(p, torch.arange(784))
    assert len({tuple(p.tolist()) for p in perms}) == 11
    assert torch.equal(perms, mnist.permutations(11, seed=3))  # reproducible
    assert not torch.equal(perms[1], mnist.permutations(11, seed=4)[1])
    x = torch.arange(2 * 784, dtype=torch.float32).view(2, 784)
    assert torch.equal(mnist.permute(x, perms[0]), x)
    assert mnist.permute(x, perms[1])[1, 5] == x[1, perms[1][5]]


# ---- freezing, re-initialisation, mask init ---------------------------------------------------

def small_net(seed=0):
    torch.manual_seed(seed)
    return pm.build_network([16, 8])


def toy_task(seed, n=256):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 784, generator=g)
    y = torch.randint(10, (n,), generator=g)
    return x, y


def random_bits(net, seed, p=0.4):
    g = torch.Generator().manual_seed(seed)
    return BinaryMask({n: torch.rand(q.shape, generator=g) < p for n, q in net.named_parameters()})


SETTINGS = TrainSettings(steps=15, lr=1e-2, batch_size=32, mask_samples=8, beta=1e-3, log_every=100,
                         kernels="eager")


def test_frozen_weights_stay_bit_identical_while_the_next_task_trains():
    net = small_net()
    used = random_bits(net, 1)
    frozen = pm.frozen_entries(used, net)
    assert set(frozen) == {n for n, _ in net.named_parameters()} - {"layers.0.weight", "layers.0.bias"}
    before = {n: p.detach().clone() for n, p in net.named_parameters()}
    mask = WeightMask.for_module(net, pm.SELECTION, 2.0)
    x, y = toy_task(0)
    train_jointly(net, mask, BatchSampler([x, y], 32, seed=0), F.cross_entropy, SETTINGS, frozen=frozen, seed=0)
    for name, param in net.named_parameters():
        changed = param.detach() != before[name]
        if name in frozen:
            assert torch.equal(param.detach()[frozen[name]], before[name][frozen[name]]), name  # bit-identical
            assert changed[~frozen[name]].float().mean() > 0.9, name  # the free entries did train
        else:
            assert changed.float().mean() > 0.9, name  # the first layer trains fully
    assert any((mask.logit(n) != 2.0).any() for n in mask.names)  # the mask trained too
    assert "layers.0.bias" in mask.names  # biases are masked


def test_frozen_entries_ignore_adam_weight_decay_and_momentum():
    """Even an optimiser that moves zero-gradient entries cannot move frozen ones: they are restored."""
    net = small_net()
    frozen = pm.frozen_entries(random_bits(net, 2), net)
    before = {n: p.detach().clone() for n, p in net.named_parameters()}
    mask = WeightMask.for_module(net, pm.SELECTION, 2.0)
    x, y = toy_task(1)
    original = torch.optim.Adam

    class DecayingAdam(original):
        def __init__(self, params, **kwargs):
            super().__init__(params, weight_decay=0.5, **kwargs)

    torch.optim.Adam = DecayingAdam
    try:
        train_jointly(net, mask, BatchSampler([x, y], 32, seed=0), F.cross_entropy, SETTINGS, frozen=frozen)
    finally:
        torch.optim.Adam = original
    for name, bits in frozen.items():
        assert torch.equal(dict(net.named_parameters())[name].detach()[bits], before[name][bits])


def test_reinitialise_touches_exactly_the_free_weights_and_the_whole_first_layer():
    net = small_net()
    used = random_bits(net, 3)
    keep = pm.frozen_entries(used, net)
    before = {n: p.detach().clone() for n, p in net.named_parameters()}
    pm.reinitialise(net, keep, seed=7)
    fresh = pm.fresh_parameters(net, seed=7)
    for name, param in net.named_parameters():
        if name.startswith("layers.0."):
            assert torch.equal(param.detach(), fresh[name]), name  # first layer: all new, used or not
            continue
        bits = keep[name]
        assert torch.equal(param.detach()[bits], before[name][bits]), name
        assert torch.equal(param.detach()[~bits], fresh[name][~bits]), name
        assert (param.detach()[~bits] != before[name][~bits]).float().mean() > 0.95
    again = small_net()
    pm.reinitialise(again, {}, seed=7)  # same seed, same fresh values
    assert all(torch.equal(a, b) for a, b in zip(again.parameters(), fresh.values()))


def test_xavier_normal_init_matches_the_papers_scales_and_reinitialise_uses_it():
    """Xavier normal: std = gain * sqrt(2 / (fan_in + fan_out)), gain sqrt(2) for hidden layers, 1 for the
    output layer; zero biases. Checked on a net big enough for the sample std to be within a few %."""
    torch.manual_seed(0)
    net = pm.build_network([400, 300, 64], "xavier_normal")
    sizes = [784, 400, 300, 64, 10]
    for i, layer in enumerate(net.layers):
        gain = 1.0 if i == len(net.layers) - 1 else 2 ** 0.5
        expected = gain * (2 / (sizes[i] + sizes[i + 1])) ** 0.5
        assert layer.weight.std().item() == pytest.approx(expected, rel=0.06), i
        assert abs(layer.weight.mean().item()) < 0.1 * expected
        assert torch.count_nonzero(layer.bias) == 0
    # PyTorch's default is uniform in +-1/sqrt(fan_in): std 1/sqrt(3 fan_in), much smaller
    default = pm.build_network([400, 300, 64])
    assert default.layers[1].weight.std().item() == pytest.approx((3 * 400) ** -0.5, rel=0.06)
    assert net.layers[1].weight.std().item() > 2 * default.layers[1].weight.std().item()
    # the free entries get the network's own scheme when a task re-initialises them
    torch.manual_seed(1)
    trained = pm.build_network([400, 300, 64], "xavier_normal")
    with torch.no_grad():
        for param in trained.parameters():
            param.fill_(0.5)  # far from either init
    keep = {n: torch.zeros_like(p, dtype=torch.bool) for n, p in trained.named_parameters()}
    pm.reinitialise(trained, keep, seed=3)
    assert trained.layers[1].weight.std().item() == pytest.approx(net.layers[1].weight.std().item(), rel=0.06)
    assert torch.count_nonzero(trained.layers[2].bias) == 0
    with pytest.raises(ValueError, match="unknown FNN init 'glorot'"):
        pm.build_network([8], "glorot")


@pytest.mark.parametrize("init, used_value, new_value", [({}, 2.0, 2.0),
                                                         ({"used_logit": 2.0, "new_logit": 0.0}, 2.0, 0.0),
                                                         ({"used_logit": 2.0, "new_logit": -1.0}, 2.0, -1.0)])
def test_mask_init_variants(init, used_value, new_value):
    net = small_net()
    frozen = pm.frozen_entries(random_bits(net, 4), net)
    mask = WeightMask.for_module(net, pm.SELECTION, 5.0)
    pm.initial_logits(mask, frozen, init, default=2.0)
    for name in mask.names:
        logit = mask.logit(name)
        used = frozen.get(name, torch.zeros_like(logit, dtype=torch.bool))
        if name.startswith("layers.0."):
            assert not used.any()  # the first layer is always new
        assert (logit[used] == used_value).all() and (logit[~used] == new_value).all(), name
    first_task = WeightMask.for_module(net, pm.SELECTION, 5.0)
    pm.initial_logits(first_task, {}, init, default=2.0)  # nothing used yet: the normal init
    assert all((first_task.logit(n) == 2.0).all() for n in first_task.names)


# ---- metric -----------------------------------------------------------------------------------

def test_sharing_against_a_hand_computed_example():
    t = torch.tensor
    mask = BinaryMask({"a": t([[1, 1, 0], [1, 0, 0]]), "b": t([1, 1, 1, 1]), "c": t([0, 0])})
    earlier = BinaryMask({"a": t([[1, 0, 0], [1, 1, 1]]), "b": t([0, 0, 0, 1]), "c": t([1, 1])})
    rows = {r["layer"]: r for r in pm.sharing_rows(mask, earlier, {"b": "layer 2"}, reinitialised=["a"])}
    assert rows["a"]["shared_fraction"] == pytest.approx(2 / 3) and rows["a"]["reinitialised"]
    assert rows["b"]["shared_fraction"] == pytest.approx(1 / 4) and rows["b"]["layer_label"] == "layer 2"
    assert np.isnan(rows["c"]["shared_fraction"])  # no weights used: undefined, not 0
    # total without the re-initialised layer: (1 + 0) / (4 + 0)
    assert rows["total"]["shared_fraction"] == pytest.approx(1 / 4) and rows["total"]["used"] == 4
    first = pm.sharing_rows(mask, None, {}, reinitialised=["a"])
    assert all(r["shared"] == 0 for r in first)


# ---- a whole run ------------------------------------------------------------------------------

def tiny_block(steps=6):
    return {"tasks": 3, "architecture": {"model": "fnn", "hidden": [12, 6]}, "mask_init": {"used_logit": 2.0,
            "new_logit": 0.0}, "train": {"steps": steps, "lr": 5e-2, "batch_size": 16, "mask_samples": 8,
                                         "beta": 1e-2, "log_every": 100, "kernels": "eager"}}


def tiny_data():
    x, y = toy_task(5, 64)
    images = (x.view(-1, 28, 28) * 255).to(torch.uint8)
    return {"train": (images, y), "test": (images[:32], y[:32])}


def test_run_records_sharing_consistent_with_the_masks():
    run = pm.run(tiny_block(), "used2_new0", tiny_data(), seed=0, device="cpu", log=LOG)
    assert [r["task"] for r in run["tasks"]] == [0, 1, 2]
    masks = [BinaryMask.from_file_dict(r["mask"]) for r in run["tasks"]]
    for t in (1, 2):
        earlier = BinaryMask.union(masks[:t])
        rows = {r["layer"]: r for r in run["tasks"][t]["sharing"]}
        for name in ("layers.1.weight", "layers.2.weight"):
            own = masks[t].bits[name]
            expected = (own & earlier.bits[name]).sum().item() / max(own.sum().item(), 1)
            assert rows[name]["shared_fraction"] == pytest.approx(expected)
    tables = pm.tables(run, {"experiment": "permuted_mnist", "variant": "used2_new0", "seed": 0})
    assert set(tables["accuracy"]["mask"]) == {"own_mask", "no_mask"} and len(tables["accuracy"]) == 6
    assert (tables["sharing"]["variant"] == "used2_new0").all()
    frozen = tables["layers"].query("layer == 'layers.0.weight'")["frozen"]
    assert (frozen == 0).all()  # the first layer is never frozen


def test_the_log_says_how_long_the_whole_run_has_left(monkeypatch, caplog):
    # a clock that moves 10 s per reading: the loop reads it at its start and at each log line
    from types import SimpleNamespace

    from modmask import training
    clock = iter(range(0, 10_000, 10))
    monkeypatch.setattr(training, "time", SimpleNamespace(perf_counter=lambda: float(next(clock))))
    block = tiny_block(steps=6)
    block["train"]["log_every"] = 3
    with caplog.at_level(logging.INFO, logger=LOG.name):
        pm.run(block, "used2_new0", tiny_data(), seed=0, device="cpu", log=LOG)
    lines = [r.getMessage() for r in caplog.records if "joint step" in r.getMessage()]
    assert len(lines) == 6   # 3 tasks x steps 3 and 6
    # task 0, step 3: 10 s for 3 steps; 3 steps left in the task, 2 x 6 in the two tasks after it
    assert lines[0].endswith("(0.3 steps/s, eta 10s, job eta 50s)")
    # task 0, step 6: 20 s for 6 steps, 12 steps left; task 1, step 3: 10 s for 3 steps, 3 + 6 left
    assert lines[1].endswith("eta 0s, job eta 40s)") and lines[2].endswith("eta 10s, job eta 30s)")
    # the last task: the loop's eta is the job's
    assert lines[4].endswith("(0.3 steps/s, eta 10s)") and "job eta" not in lines[5]


def test_killed_run_resumes_after_the_last_finished_task():
    block, data = tiny_block(), tiny_data()
    reference = pm.run(block, "used2_new0", data, seed=1, device="cpu", log=LOG)
    saved = {}

    class Killed(Exception):
        pass

    def save_and_die(state):
        saved["state"] = state
        if len(state["tasks"]) == 2:
            raise Killed

    with pytest.raises(Killed):
        pm.run(block, "used2_new0", data, seed=1, device="cpu", log=LOG, save_progress=save_and_die,
               code_version="old")
    # resumed in a later session under changed code: finished tasks keep the version that trained them
    resumed = pm.run(block, "used2_new0", data, seed=1, device="cpu", log=LOG, load_progress=lambda: saved["state"],
                     code_version="new")
    for a, b in zip(reference["tasks"], resumed["tasks"]):
        assert a["accuracy"] == b["accuracy"] and repr(a["sharing"]) == repr(b["sharing"])  # nan-safe
        assert all(torch.equal(a["mask"]["bits"][n], b["mask"]["bits"][n]) for n in a["mask"]["bits"])
    tables = pm.tables(resumed, {"experiment": "permuted_mnist", "seed": 1, "code_version": "new"})
    for df in tables.values():
        assert list(df.columns[:3]) == ["experiment", "seed", "code_version"]
        assert df.groupby("task")["code_version"].agg(set).to_dict() == {0: {"old"}, 1: {"old"}, 2: {"new"}}


def test_run_progress_belongs_to_settings_not_to_the_code_version(tmp_path, monkeypatch):
    from modmask import steps

    seen = {}

    def fake_run(block, variant, data, seed, device, log, identity, code_version, **kwargs):
        seen.setdefault("identity", []).append(identity)
        seen.setdefault("code", []).append(code_version)
        return {"tasks": []}

    monkeypatch.setattr(pm, "run", fake_run)
    monkeypatch.setattr(pm, "run_data", lambda block, log: {"train": ([], []), "test": ([], [])})
    prov = {"experiment": "permuted_mnist", "scale": "long", "variant": "normal", "seed": 0, "config_hash": "abc"}
    for code in ("v1", "v2"):
        steps.sequential_run("permuted_mnist", {"data": {"mnist_dir": "x"}}, "normal", 0, "cpu",
                             tmp_path / f"{code}.pt", LOG, {**prov, "code_version": code})
    assert seen["identity"][0] == seen["identity"][1] and "v1" not in seen["identity"][0]
    assert seen["code"] == ["v1", "v2"]


def test_config_block_is_validated():
    import copy

    from modmask.config import ConfigError, load_config, validate_config

    config = load_config("config/config.yaml", "config/quick.yaml")
    assert set(config["permuted_mnist"]["variants"]) == {"normal", "used2_new0", "used2_new-1"}
    for change, key in [(lambda c: c["train"].update(batch_size=100), "permuted_mnist.train.batch_size"),
                        (lambda c: c["variants"].update(odd={"used_logit": 2.0}), "permuted_mnist.variants.odd"),
                        (lambda c: c["data"].update(mnist_path="x"), "permuted_mnist.data"),
                        (lambda c: c["train"].update(steps=0), "permuted_mnist.train.steps")]:
        bad = copy.deepcopy(config)
        change(bad["permuted_mnist"])
        with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
            validate_config(bad)


def test_joint_training_resumes_exactly_inside_a_task(tmp_path):
    x, y = toy_task(2, 128)
    settings = TrainSettings(steps=12, lr=1e-2, batch_size=32, mask_samples=8, beta=1e-3, log_every=4,
                             checkpoint_every=4, kernels="eager")

    class Crash(Exception):
        pass

    def run(checkpoint, crash_at=None):
        net = small_net(3)
        frozen = pm.frozen_entries(random_bits(net, 5), net)
        mask = WeightMask.for_module(net, pm.SELECTION, 2.0)
        calls = {"n": 0}

        def loss(out, target):
            calls["n"] += 1
            if calls["n"] == crash_at:
                raise Crash()
            return F.cross_entropy(out, target)

        history = train_jointly(net, mask, BatchSampler([x, y], 32, seed=1), loss, settings, frozen=frozen,
                                seed=4, checkpoint_path=checkpoint, identity="run")
        return net, mask, history

    ref_net, ref_mask, ref_history = run(None)
    checkpoint = tmp_path / "task.ckpt"
    with pytest.raises(Crash):
        run(checkpoint, crash_at=7)
    assert checkpoint.exists()
    net, mask, history = run(checkpoint)
    assert all(torch.equal(a, b) for a, b in zip(ref_net.parameters(), net.parameters()))
    assert all(torch.equal(ref_mask.logit(n), mask.logit(n)) for n in mask.names)
    assert [r["loss"] for r in history.rows] == [r["loss"] for r in ref_history.rows]
    assert not checkpoint.exists()


def test_accuracy_lines_with_and_without_mask_stay_visible_when_they_coincide():
    """Fig. 3's right panel: equal accuracies must not draw one line exactly over the other."""
    import matplotlib

    matplotlib.use("Agg")
    from modmask.plotting import permuted_mnist as plots

    tasks = range(5)
    sharing = pd.DataFrame([{"variant": "normal", "seed": s, "task": t, "layer": layer, "layer_label": layer,
                             "shared_fraction": 0.1 * t} for s in (0, 1) for t in tasks for layer in plots.LAYERS])
    layers = sharing.rename(columns={"shared_fraction": "frozen_fraction"})
    accuracy = pd.DataFrame([{"variant": "normal", "seed": s, "task": t, "mask": m, "accuracy": 0.9}
                             for s in (0, 1) for t in tasks for m in ("own_mask", "no_mask")])
    fig = plots.variant_figure(sharing, layers, accuracy, "test")
    own, none = (container.lines[0] for container in fig.axes[2].containers)  # each errorbar's data line
    assert list(own.get_ydata()) == list(none.get_ydata()) == [90.0] * 5
    assert not np.allclose(np.asarray(own.get_xdata(), float), np.asarray(none.get_xdata(), float))  # side by side
    assert own.get_linestyle() != none.get_linestyle() and own.get_marker() != none.get_marker()
    assert [t.get_text() for t in fig.axes[2].get_legend().get_texts()] == ["with its mask", "without mask"]

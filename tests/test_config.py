"""Config validation: every scale's file is valid; bad values stop with the key named."""
from pathlib import Path

import pytest
import yaml

from modmask.config import (SCHEMA_PATH, ConfigError, deep_merge, drop_disabled_entries, load_config,
                            network_spec, seeds, stage_settings, validate_config)

CONFIG = Path(__file__).resolve().parent.parent / "config"


def paper():
    return load_config(CONFIG / "config.yaml")


@pytest.mark.parametrize("scale", ["quick", "smoke"])
def test_scale_files_override_the_paper_config(scale):
    config = load_config(CONFIG / "config.yaml", CONFIG / f"{scale}.yaml")
    assert config["scale"] == scale
    # keys the override does not name keep the paper's values
    assert config["experiments"]["addmul"]["mask"]["beta"] == 1e-4
    assert config["experiments"]["addmul"]["mask"]["mask_samples"] == 4


def test_paper_config_has_the_papers_settings():
    addmul = paper()["experiments"]["addmul"]
    assert addmul["architectures"]["fnn"]["hidden"] == [2000] * 5
    assert addmul["architectures"]["lstm"]["hidden"] == 256
    assert addmul["pretrain"]["steps"] == 20000 and addmul["mask"]["steps"] == 20000
    assert seeds(addmul) == list(range(10))


@pytest.mark.parametrize("path, value, key, words", [
    (("experiments", "addmul", "mask", "lr"), -0.1, "experiments.addmul.mask.lr", "minimum"),
    (("experiments", "addmul", "pretrain", "steps"), "many", "experiments.addmul.pretrain.steps", "integer"),
    (("experiments", "addmul", "architectures", "fnn", "model"), "transformerish",
     "experiments.addmul.architectures.fnn.model", "is not one of"),
    (("experiments", "addmul", "mask", "batch_size"), 130, "experiments.addmul.mask.batch_size", "not divisible"),
    (("device",), "tpu", "device", "does not match"),
    (("experiments", "addmul", "mask", "temperature"), 0, "experiments.addmul.mask.temperature", "less than"),
])
def test_bad_values_name_the_key(path, value, key, words):
    config = paper()
    target = config
    for part in path[:-1]:
        target = target[part]
    target[path[-1]] = value
    with pytest.raises(ConfigError) as error:
        validate_config(config)
    assert key in str(error.value) and words in str(error.value)


def test_unknown_key_is_rejected():
    config = paper()
    config["experiments"]["addmul"]["mask"]["betta"] = 1e-4
    with pytest.raises(ConfigError, match=r"experiments\.addmul\.mask.*'betta' was unexpected"):
        validate_config(config)


def test_architecture_overrides_apply_per_stage():
    config = paper()
    config["experiments"]["addmul"]["architectures"]["lstm"]["mask"] = {"beta": 3e-5}
    validate_config(config)
    assert stage_settings(config["experiments"]["addmul"], "lstm", "mask")["beta"] == 3e-5
    assert stage_settings(config["experiments"]["addmul"], "fnn", "mask")["beta"] == 1e-4
    # the network itself is the same with or without a stage override: no retraining for a mask change
    assert network_spec(config["experiments"]["addmul"], "lstm") == {"model": "lstm", "hidden": 256, "steps": 3}


def test_an_architecture_set_to_null_in_a_later_file_is_left_out(tmp_path):
    override = tmp_path / "drop.yaml"
    override.write_text("scan:\n  architectures:\n    transformer: null\n")
    config = load_config(CONFIG / "config.yaml", override)
    assert set(config["scan"]["architectures"]) == {"lstm"}
    # an architecture dropped but still named elsewhere stops the run, naming the key and the name
    override.write_text("experiments:\n  addmul:\n    sweeps:\n      architectures:\n        huge: null\n")
    config = deep_merge(yaml.safe_load((CONFIG / "config.yaml").read_text()), yaml.safe_load(override.read_text()))
    assert drop_disabled_entries(config) == ["experiments.addmul.sweeps.architectures.huge"]
    with pytest.raises(ConfigError, match=r"size_architectures.3: 'huge' names no entry of"):
        validate_config(config)


def test_long30k_is_the_long_scale_at_30k_steps_for_the_normal_init_only():
    from modmask.config import variant_seeds

    long = load_config(CONFIG / "config.yaml", CONFIG / "long.yaml")
    long30k = load_config(CONFIG / "config.yaml", CONFIG / "long.yaml", CONFIG / "long30k.yaml")
    pm = long30k["permuted_mnist"]
    assert pm["train"]["steps"] == 30_000 and long30k["results"] == "results/long30k" != long["results"]
    assert list(pm["variants"]) == ["normal"] and variant_seeds(pm, "normal") == [0, 1]
    # everything else as in the 10k run, but the kernels, which are not part of the config hash
    from modmask.steps import method_settings

    assert pm["train"]["kernels"] == "fused" and "kernels" not in long["permuted_mnist"]["train"]
    assert method_settings({**pm["train"], "steps": 10_000}) == long["permuted_mnist"]["train"]
    assert pm["data"] == long["permuted_mnist"]["data"] and long30k["checkpoint_every"] == 1000


def test_deep_merge_replaces_lists_and_merges_dicts():
    merged = deep_merge({"a": {"b": 1, "c": [1, 2]}, "d": 1}, {"a": {"c": [3]}})
    assert merged == {"a": {"b": 1, "c": [3]}, "d": 1}


def test_schema_declares_2020_12():
    schema = yaml.safe_load(SCHEMA_PATH.read_text())
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"


# ---- checks the schema cannot make (tests/test_safety.py has the other bad inputs) ---------------------

def smoke():
    return load_config(CONFIG / "config.yaml", CONFIG / "smoke.yaml")


def _set(config: dict, path: tuple, value) -> dict:
    target = config
    for part in path[:-1]:
        if isinstance(target, dict) and target.get(part) is None:  # e.g. task_settings: null
            target[part] = {}
        target = target[part]
    target[path[-1]] = value
    return config


def _error(config: dict) -> str:
    with pytest.raises(ConfigError) as error:
        validate_config(config)
    return str(error.value)


# Each training block where a batch is split into mask samples: the key set, and the value that breaks it
# (smoke scale: mask_samples 4, Mathematics 2, permuted MNIST 8).
BATCH_CASES = [
    (("experiments", "addmul", "mask", "batch_size"), 30),
    (("experiments", "addmul", "architectures", "lstm", "mask", "batch_size"), 30),
    (("experiments", "addmul", "sweeps", "architectures", "small", "mask", "batch_size"), 30),
    (("experiments", "addmul", "sweeps", "mask", "batch_size"), 30),
    (("experiments", "double_add", "mask", "mask_samples"), 3),
    (("scan", "mask", "batch_size"), 30),
    (("scan", "architectures", "lstm", "mask", "batch_size"), 30),
    (("scan", "architectures", "lstm", "mask", "mask_samples"), 5),
    (("cifar10", "mask", "batch_size"), 30),
    (("cifar10", "architectures", "resnet", "mask", "batch_size"), 30),
    (("mathematics", "mask", "batch_size"), 15),
    (("mathematics", "task_settings", "comparison__sort", "mask", "batch_size"), 15),
    (("permuted_mnist", "train", "batch_size"), 36),
]


@pytest.mark.parametrize("path, value", BATCH_CASES, ids=[".".join(p) for p, _ in BATCH_CASES])
def test_every_mask_block_needs_a_batch_divisible_by_mask_samples(path, value):
    config = smoke()
    validate_config(config)  # the control
    message = _error(_set(config, path, value))
    # the key that was set is named (first, when it is the more specific of the two)
    assert message.startswith("config key ") and ".".join(path) in message
    assert "is not divisible by mask_samples" in message or "does not divide batch_size" in message
    if path[-1] == "mask_samples" and "architectures" in path:
        assert message.startswith(f"config key {'.'.join(path)}: {value} does not divide batch_size")


def test_every_block_holding_a_batch_size_is_checked():
    """The cross-field checks reach every block of every scale that sets a batch_size or mask_samples,
    so a block added later cannot slip past them."""
    from modmask.config import _leaves, training_blocks

    for scale in (["config.yaml"], ["config.yaml", "quick.yaml"], ["config.yaml", "smoke.yaml"],
                  ["config.yaml", "long.yaml"]):
        config = load_config(*[CONFIG / name for name in scale])
        checked = {where for _, sources in training_blocks(config) for where, _ in sources}
        holding = {".".join(map(str, path[:-1])) for path, _ in _leaves(config)
                   if path[-1] in ("batch_size", "mask_samples")}
        assert holding and holding <= checked, (scale, holding - checked)


def test_long_scale_is_permuted_mnist_at_paper_settings_but_10k_steps():
    """config/long.yaml changes only what the README says: scale, steps, seeds, CPU, checkpoints."""
    from modmask.config import variant_seeds

    paper, long = load_config(CONFIG / "config.yaml"), load_config(CONFIG / "config.yaml", CONFIG / "long.yaml")
    assert long["scale"] == "long" and long["results"] == "results/long" and long["device"] == "cpu"
    assert long["permuted_mnist"]["train"]["steps"] == 10_000
    assert {v: variant_seeds(long["permuted_mnist"], v) for v in long["permuted_mnist"]["variants"]} == \
        {"normal": [0, 1], "used2_new0": [0], "used2_new-1": [0]}
    assert long["checkpoint_every"] == 1000
    for key in ("lr", "beta", "mask_samples", "batch_size", "initial_logit"):
        assert long["permuted_mnist"]["train"][key] == paper["permuted_mnist"]["train"][key], key
    assert long["permuted_mnist"]["data"] == paper["permuted_mnist"]["data"]  # all 60,000 / 10,000 images
    assert long["permuted_mnist"]["variants"] == paper["permuted_mnist"]["variants"]


@pytest.mark.parametrize("path, value", [
    (("experiments", "addmul", "mask", "beta"), float("nan")),
    (("experiments", "addmul", "pretrain", "lr"), float("inf")),
    (("scan", "mask", "initial_logit"), float("-inf")),
    (("mathematics", "pretrain", "adam_betas", 1), float("nan")),
    (("experiments", "addmul", "sweeps", "beta", 0), float("inf")),
    (("permuted_mnist", "variants", "used2_new0", "new_logit"), float("nan")),
    (("cifar10", "architectures", "resnet", "pretrain", "weight_decay"), float("inf")),
])
def test_non_finite_numbers_are_rejected_naming_the_key(path, value):
    message = _error(_set(smoke(), path, value))
    assert f"config key {'.'.join(map(str, path))}: {value} is not a finite number" in message


def test_yaml_nan_and_inf_are_rejected_too(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("experiments:\n  addmul:\n    mask: {beta: .nan}\n")
    with pytest.raises(ConfigError, match=r"experiments\.addmul\.mask\.beta: nan is not a finite number"):
        load_config(CONFIG / "config.yaml", bad)


@pytest.mark.parametrize("path", [("scan", "mask", "include"), ("experiments", "addmul", "mask", "exclude"),
                                  ("cifar10", "architectures", "resnet", "mask", "include"),
                                  ("experiments", "addmul", "sweeps", "mask", "exclude")])
def test_every_regular_expression_is_compiled_at_validation(path):
    message = _error(_set(smoke(), path, [r"^layers\.", "(unclosed"]))
    assert f"config key {'.'.join(path)}.1: '(unclosed' is not a valid regular expression (missing )" in message
    validate_config(_set(smoke(), path, [r"^layers\.", r"\.weight$"]))  # the control: valid patterns pass


@pytest.mark.parametrize("path, value, known", [
    (("cifar10", "stability", "architecture"), "vgg16", "['resnet', 'simple_cnn', 'simple_cnn_nodrop']"),
    (("experiments", "addmul", "sweeps", "beta_architectures"), ["fnn", "giant"], "['fnn', 'huge', 'lstm'"),
    (("experiments", "addmul", "sweeps", "size_architectures"), ["tiny"], "'medium', 'small']"),
    (("resources", "train_mask"), {"runtime": 5}, "['default', 'generate_data', 'pretrain', 'mask'"),
])
def test_names_of_other_entries_are_checked_naming_the_key_the_name_and_the_known_ones(path, value, known):
    message = _error(_set(smoke(), path, value))
    name = value if isinstance(value, str) else path[-1] if isinstance(value, dict) else value[-1]
    key = ".".join(path) + (f".{len(value) - 1}" if isinstance(value, list) else "")
    assert f"config key {key}: {name!r} names no entry of" in message and known in message


def test_the_known_resource_stages_are_those_the_rules_ask_for():
    import re

    from modmask.config import RESOURCE_STAGES

    rules = "".join(p.read_text() for p in CONFIG.parent.glob("rules/*.smk"))
    asked = set(re.findall(r'job_resources\("(\w+)"\)', rules))
    assert asked and {"default", *asked} == set(RESOURCE_STAGES)


@pytest.mark.parametrize("override, words", [
    ("cifar10:\n  stability: {architecture: vgg16, networks: 1, pairs: 2}\n",
     "config key cifar10.stability.architecture: 'vgg16' names no entry of cifar10.architectures"),
    ("scan:\n  mask: {batch_size: 30}\n", "config key scan.mask.batch_size: 30 is not divisible by mask_samples 4"),
])
def test_the_workflow_stops_before_any_job_naming_the_key(tmp_path, override, words):
    """The Snakefile validates the merged config when it is parsed: a dry run fails at once."""
    import subprocess
    import sys

    bad = tmp_path / "bad.yaml"
    bad.write_text(override)
    result = subprocess.run([sys.executable, "-m", "snakemake", "--dry-run", "figures/all", "--configfile",
                             "config/smoke.yaml", str(bad)], cwd=CONFIG.parent, capture_output=True, text=True,
                            timeout=120)
    assert result.returncode != 0 and words in result.stdout + result.stderr


def test_variant_seeds_must_name_a_permuted_mnist_variant():
    config = load_config(CONFIG / "config.yaml", CONFIG / "long.yaml")
    config["permuted_mnist"]["variant_seeds"] = {"used2_new1": 1}
    with pytest.raises(ConfigError, match=r"config key permuted_mnist.variant_seeds.used2_new1: 'used2_new1' names "
                                          r"no entry of permuted_mnist.variants"):
        validate_config(config)


def test_cifar10_removed_classes_are_checked_against_the_ten_classes():
    config = load_config(CONFIG / "config.yaml", CONFIG / "smoke.yaml")
    assert config["cifar10"]["removed_classes"] == ["cat", "dog"]
    validate_config(config)
    config["cifar10"]["removed_classes"] = ["cat", "kitten"]
    with pytest.raises(ConfigError, match=r"cifar10\.removed_classes"):
        validate_config(config)


def test_the_models_ignore_the_same_stage_override_keys_as_the_config():
    from modmask import config, seq2seq

    assert seq2seq.STAGE_OVERRIDES == config.STAGE_OVERRIDES

"""Config validation: every scale's file is valid; bad values stop with the key named."""
from pathlib import Path

import pytest
import yaml

from modmask.config import ConfigError, deep_merge, load_config, network_spec, seeds, stage_settings, validate_config

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


def test_deep_merge_replaces_lists_and_merges_dicts():
    merged = deep_merge({"a": {"b": 1, "c": [1, 2]}, "d": 1}, {"a": {"c": [3]}})
    assert merged == {"a": {"b": 1, "c": [3]}, "d": 1}


def test_schema_declares_2020_12():
    schema = yaml.safe_load((CONFIG / "schema.yaml").read_text())
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"

"""Workflow configuration: loading, merging the scale overrides, and validation with clear errors."""
from __future__ import annotations

import copy
from pathlib import Path

import jsonschema
import yaml

SCHEMA_PATH = Path(__file__).resolve().parent.parent / "config" / "schema.yaml"


class ConfigError(ValueError):
    """A configuration problem; the message names the offending key."""


def _key_path(parts) -> str:
    return ".".join(str(p) for p in parts) or "<top level>"


def load_schema(path=SCHEMA_PATH) -> dict:
    with open(path) as f:
        return yaml.safe_load(f)


def deep_merge(base: dict, override: dict) -> dict:
    """Like Snakemake's ``--configfile`` update: nested dicts merge, everything else replaces."""
    merged = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def load_config(*paths) -> dict:
    config: dict = {}
    for path in paths:
        with open(path) as f:
            config = deep_merge(config, yaml.safe_load(f) or {})
    validate_config(config)
    return config


def seeds(block: dict) -> list[int]:
    value = block["seeds"]
    return list(range(value)) if isinstance(value, int) else list(value)


def all_architectures(experiment: dict) -> dict:
    """The experiment's architectures plus the extra networks its sweeps train."""
    return {**experiment["architectures"], **experiment.get("sweeps", {}).get("architectures", {})}


STAGE_OVERRIDES = ("pretrain", "mask")


def network_spec(experiment: dict, arch: str) -> dict:
    """An architecture's network settings without its per-stage overrides, so that changing a mask
    override does not count as a different network."""
    return {k: v for k, v in all_architectures(experiment)[arch].items() if k not in STAGE_OVERRIDES}


def stage_settings(experiment: dict, arch: str, stage: str) -> dict:
    """The ``pretrain`` or ``mask`` block of an experiment with the architecture's overrides applied."""
    return deep_merge(experiment[stage], all_architectures(experiment)[arch].get(stage, {}))


def sweep_mask_settings(experiment: dict, arch: str, beta: float) -> dict:
    """Mask settings of a beta-sweep point: the architecture's, then ``sweeps.mask``, then this beta."""
    block = deep_merge(stage_settings(experiment, arch, "mask"), experiment.get("sweeps", {}).get("mask", {}))
    return {**block, "beta": float(beta)}


def validate_config(config: dict, schema: dict | None = None) -> None:
    schema = schema or load_schema()
    validator = jsonschema.Draft202012Validator(schema)
    errors = sorted(validator.iter_errors(config), key=lambda e: list(e.absolute_path))
    if errors:
        lines = []
        for error in errors[:10]:
            lines.append(f"config key {_key_path(error.absolute_path)}: {error.message}")
        raise ConfigError("invalid configuration:\n  " + "\n  ".join(lines))
    train = config.get("permuted_mnist", {}).get("train", {})
    if train and train["batch_size"] % train["mask_samples"]:
        raise ConfigError(f"config key permuted_mnist.train.batch_size: {train['batch_size']} is not divisible by "
                          f"mask_samples {train['mask_samples']}; each mask sample takes an equal chunk of the batch")
    for name, experiment in config.get("experiments", {}).items():
        architectures = all_architectures(experiment)
        sweeps = experiment.get("sweeps", {})
        for key in ("beta_architectures", "size_architectures"):
            unknown = [a for a in sweeps.get(key, []) if a not in architectures]
            if unknown:
                raise ConfigError(f"config key experiments.{name}.sweeps.{key}: unknown architectures {unknown}; "
                                  f"known: {sorted(architectures)}")
        for arch in architectures:
            mask = stage_settings(experiment, arch, "mask")
            if mask["batch_size"] % mask["mask_samples"]:
                raise ConfigError(
                    f"config key experiments.{name}.mask.batch_size: {mask['batch_size']} is not divisible by "
                    f"mask_samples {mask['mask_samples']} (architecture {arch}); each mask sample takes an equal "
                    f"chunk of the batch")
            spec = architectures[arch]
            if spec["model"] == "fnn" and not isinstance(spec["hidden"], list):
                raise ConfigError(f"config key experiments.{name}.architectures.{arch}.hidden: an fnn needs a list "
                                  f"of layer sizes, got {spec['hidden']!r}")
            if spec["model"] == "lstm" and not isinstance(spec["hidden"], int):
                raise ConfigError(f"config key experiments.{name}.architectures.{arch}.hidden: an lstm needs one "
                                  f"hidden size, got {spec['hidden']!r}")
            if spec.get("presentation") == "sequential" and spec.get("steps", 3) % 2:
                raise ConfigError(f"config key experiments.{name}.architectures.{arch}.steps: a sequential LSTM "
                                  f"shows each pair for half the steps, so steps must be even")

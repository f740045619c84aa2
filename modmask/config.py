"""Workflow configuration: loading, merging the scale overrides, and validation with clear errors."""
from __future__ import annotations

import copy
import math
import re
from pathlib import Path
from typing import Iterator

import jsonschema
import yaml

SCHEMA_PATH = Path(__file__).resolve().parent / "schema.yaml"  # shipped in the package (package-data)


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
    """The config files merged in order (as Snakemake merges ``--configfile``), checked."""
    config: dict = {}
    for path in paths:
        with open(path) as f:
            config = deep_merge(config, yaml.safe_load(f) or {})
    drop_disabled_entries(config)
    validate_config(config)
    return config


def seeds(block: dict) -> list[int]:
    value = block["seeds"]
    return list(range(value)) if isinstance(value, int) else list(value)


def variant_seeds(block: dict, variant: str) -> list[int]:
    """The seeds of one permuted-MNIST variant: ``variant_seeds.<variant>`` where given, else ``seeds``."""
    return seeds({"seeds": (block.get("variant_seeds") or {}).get(variant, block["seeds"])})


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


def task_stage_settings(block: dict, task: str, stage: str) -> dict:
    """Mathematics: the ``pretrain`` or ``mask`` block with ``task_settings.<task>.<stage>`` merged over it
    (``task_settings: null`` in a smaller scale's config drops the paper's per-task table)."""
    per_task = (block.get("task_settings") or {}).get(task) or {}
    return deep_merge(block[stage], per_task.get(stage) or {})


def sweep_mask_settings(experiment: dict, arch: str, beta: float) -> dict:
    """Mask settings of a beta-sweep point: the architecture's, then ``sweeps.mask``, then this beta."""
    block = deep_merge(stage_settings(experiment, arch, "mask"), experiment.get("sweeps", {}).get("mask", {}))
    return {**block, "beta": float(beta)}


# The stages a ``resources.<stage>`` entry can name: ``default`` and each job_resources(...) of rules/*.smk.
RESOURCE_STAGES = ("default", "generate_data", "pretrain", "mask", "evaluate", "collect", "figures")
# Keys whose values are regular expressions (mask selections), wherever they sit.
PATTERN_KEYS = ("include", "exclude")


def _leaves(value, path=()) -> Iterator[tuple[tuple, object]]:
    """Every (key path, value) of a nested config, lists included (their items by index)."""
    if isinstance(value, dict):
        for key, item in value.items():
            yield from _leaves(item, (*path, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _leaves(item, (*path, index))
    else:
        yield path, value


def _check_finite(config: dict) -> None:
    """NaN and infinity pass the schema's number checks (every comparison with NaN is false)."""
    for path, value in _leaves(config):
        if isinstance(value, float) and not math.isfinite(value):
            raise ConfigError(f"config key {_key_path(path)}: {value} is not a finite number; give a finite value")


def _check_patterns(config: dict) -> None:
    """Every ``include`` / ``exclude`` pattern compiles, so that a bad one stops the run before any job."""
    for path, value in _leaves(config):
        if isinstance(value, str) and any(part in PATTERN_KEYS for part in path if isinstance(part, str)):
            try:
                re.compile(value)
            except re.error as error:
                raise ConfigError(f"config key {_key_path(path)}: {value!r} is not a valid regular expression "
                                  f"({error}); fix or quote the pattern") from None


def _arch_key(block_key: str, block: dict, arch: str) -> str:
    """Where an architecture is defined: the block's ``architectures`` or its ``sweeps.architectures``."""
    return f"{block_key}.architectures.{arch}" if arch in block.get("architectures", {}) \
        else f"{block_key}.sweeps.architectures.{arch}"


def _references(config: dict) -> Iterator[tuple[str, object, list, str]]:
    """Every key that names another config entry: (key, the name, the names it may take, where those live)."""
    for name, experiment in config.get("experiments", {}).items():
        known = sorted(all_architectures(experiment))
        for key in ("beta_architectures", "size_architectures"):
            for index, arch in enumerate(experiment.get("sweeps", {}).get(key, [])):
                yield (f"experiments.{name}.sweeps.{key}.{index}", arch, known,
                       f"experiments.{name}.architectures or experiments.{name}.sweeps.architectures")
    cifar = config.get("cifar10")
    if cifar:
        yield ("cifar10.stability.architecture", cifar["stability"]["architecture"], sorted(cifar["architectures"]),
               "cifar10.architectures")
    pm = config.get("permuted_mnist")
    if pm:
        for variant in pm.get("variant_seeds") or {}:
            yield (f"permuted_mnist.variant_seeds.{variant}", variant, sorted(pm["variants"]),
                   "permuted_mnist.variants")
    for stage in config.get("resources", {}):
        yield f"resources.{stage}", stage, list(RESOURCE_STAGES), "the workflow's stages"


def _check_references(config: dict) -> None:
    for key, value, known, where in _references(config):
        if value not in known:
            raise ConfigError(f"config key {key}: {value!r} names no entry of {where}; known: {known}")


def training_blocks(config: dict) -> Iterator[tuple[str, list[tuple[str, dict]]]]:
    """Every training block a job runs with, as the keys it is merged from, in merge order:
    (what uses it, [(key, block), ...]). Mask blocks (those with ``mask_samples``) and pretraining
    blocks of every experiment, architecture, sweep and Mathematics task, and permuted MNIST's."""
    def architecture_blocks(block_key: str, block: dict, architectures: dict):
        for arch, spec in architectures.items():
            arch_key = _arch_key(block_key, block, arch)
            for stage in STAGE_OVERRIDES:
                yield f"the {stage} jobs of {arch_key}", [(f"{block_key}.{stage}", block[stage]),
                                                          (f"{arch_key}.{stage}", spec.get(stage) or {})]

    for name, experiment in config.get("experiments", {}).items():
        block_key = f"experiments.{name}"
        yield from architecture_blocks(block_key, experiment, all_architectures(experiment))
        sweeps = experiment.get("sweeps")
        if sweeps:
            for arch in dict.fromkeys(sweeps["beta_architectures"] + sweeps["size_architectures"]):
                arch_key = _arch_key(block_key, experiment, arch)
                yield f"the sweep masks of {arch_key}", [
                    (f"{block_key}.mask", experiment["mask"]),
                    (f"{arch_key}.mask", all_architectures(experiment)[arch].get("mask") or {}),
                    (f"{block_key}.sweeps.mask", sweeps.get("mask") or {})]
    for name in ("scan", "cifar10"):
        if config.get(name):
            yield from architecture_blocks(name, config[name], config[name]["architectures"])
    math_block = config.get("mathematics")
    if math_block:
        tasks = dict.fromkeys([*math_block["tasks"], *(math_block.get("task_settings") or {})])
        for task in tasks:
            per_task = (math_block.get("task_settings") or {}).get(task) or {}
            for stage in STAGE_OVERRIDES:
                yield f"the {stage} jobs of Mathematics task {task}", [
                    (f"mathematics.{stage}", math_block[stage]),
                    (f"mathematics.task_settings.{task}.{stage}", per_task.get(stage) or {})]
    if config.get("permuted_mnist"):
        yield "the permuted MNIST runs", [("permuted_mnist.train", config["permuted_mnist"]["train"])]


def _setter(sources: list[tuple[str, dict]], key: str) -> tuple[int, str]:
    """Where ``key`` is set last in a merge (the key to change): (position in ``sources``, key path)."""
    for index in range(len(sources) - 1, -1, -1):
        if key in sources[index][1]:
            return index, f"{sources[index][0]}.{key}"
    return 0, f"{sources[0][0]}.{key}"


def _check_training_blocks(config: dict) -> None:
    """The cross-field checks every training block gets after its overrides are merged."""
    for use, sources in training_blocks(config):
        merged: dict = {}
        for _, block in sources:
            merged = deep_merge(merged, block)
        if "mask_samples" in merged and merged["batch_size"] % merged["mask_samples"]:
            (batch_at, batch_key), (samples_at, samples_key) = _setter(sources, "batch_size"), \
                _setter(sources, "mask_samples")
            batch, samples = merged["batch_size"], merged["mask_samples"]
            # name first the key set by the more specific block: that is the one that broke the pair
            first = (f"{samples_key}: {samples} does not divide batch_size {batch} ({batch_key})"
                     if samples_at > batch_at else
                     f"{batch_key}: {batch} is not divisible by mask_samples {samples} ({samples_key})")
            raise ConfigError(f"config key {first} in {use}; each mask sample takes an equal chunk of the batch")


# Mappings of named entries (an architecture, a permuted-MNIST mask init and its seed count) from which a
# later config file may remove an entry by setting it to null.
DROPPABLE_ENTRIES = ("architectures", "variants", "variant_seeds")


def drop_disabled_entries(config: dict) -> list[str]:
    """Remove, in place, every ``<mapping>.<name>: null`` of the mappings in :data:`DROPPABLE_ENTRIES`
    (``architectures``, ``variants``, ``variant_seeds``), and return the dropped keys.

    Config files merge key by key, so a smaller scale cannot delete an entry the paper's config defines;
    setting it to ``null`` leaves it out (e.g. the smoke run's SCAN Transformer).
    """
    dropped = []

    def walk(node, path):
        if isinstance(node, dict):
            for key, value in list(node.items()):
                if key in DROPPABLE_ENTRIES and isinstance(value, dict):
                    for name in [n for n, entry in value.items() if entry is None]:
                        del value[name]
                        dropped.append(".".join((*path, key, name)))
                walk(value, (*path, str(key)))

    walk(config, ())
    return dropped


def validate_config(config: dict, schema: dict | None = None) -> None:
    """Check the whole config before anything runs; a :class:`ConfigError` names the key.

    The schema (types, ranges, known keys), then what it cannot say: finite numbers, compilable regular
    expressions, names that refer to other entries, and cross-field checks of every training block with
    its overrides merged.
    """
    _check_finite(config)
    schema = schema or load_schema()
    validator = jsonschema.Draft202012Validator(schema)
    errors = sorted(validator.iter_errors(config), key=lambda e: list(e.absolute_path))
    if errors:
        lines = []
        for error in errors[:10]:
            lines.append(f"config key {_key_path(error.absolute_path)}: {error.message}")
        raise ConfigError("invalid configuration:\n  " + "\n  ".join(lines))
    _check_patterns(config)
    _check_references(config)
    _check_training_blocks(config)
    for name, experiment in config.get("experiments", {}).items():
        architectures = all_architectures(experiment)
        for arch, spec in architectures.items():
            if spec["model"] == "fnn" and not isinstance(spec["hidden"], list):
                raise ConfigError(f"config key experiments.{name}.architectures.{arch}.hidden: an fnn needs a list "
                                  f"of layer sizes, got {spec['hidden']!r}")
            if spec["model"] == "lstm" and not isinstance(spec["hidden"], int):
                raise ConfigError(f"config key experiments.{name}.architectures.{arch}.hidden: an lstm needs one "
                                  f"hidden size, got {spec['hidden']!r}")
            if spec.get("presentation") == "sequential" and spec.get("steps", 3) % 2:
                raise ConfigError(f"config key experiments.{name}.architectures.{arch}.steps: a sequential LSTM "
                                  f"shows each pair for half the steps, so steps must be even")

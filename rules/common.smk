# Helpers shared by the rules: config lookups, code versions for rerun triggers, job lists.
import json

from modmask.config import seeds, stage_settings
from modmask.io import code_version, stable_hash

EXPERIMENTS = list(config["experiments"])
TABLES = {"addmul": ["accuracy", "confusion", "layers", "sharing"]}
MASK_TASKS = {"addmul": ["all", "add", "mul"]}
# Library modules each stage runs; editing one re-runs the stages that use it and no others.
CODE = {
    "data": code_version("data", "experiments", "io", "pipeline"),
    "pretrain": code_version("models", "training", "data", "experiments", "io", "pipeline"),
    "mask": code_version("gumbel", "masks", "masked_model", "models", "training", "data", "experiments", "io", "pipeline"),
    "evaluate": code_version("masks", "masked_model", "metrics", "models", "data", "experiments", "io", "pipeline"),
    "figures": code_version("plotting", "io"),
}


wildcard_constraints:
    experiment="|".join(EXPERIMENTS),
    seed=r"\d+",
    arch=r"[A-Za-z][A-Za-z0-9_]*",
    task=r"[A-Za-z0-9_]+",
    # "main": the experiment's mask settings; "beta<value>": the same with beta replaced (sweeps)
    variant=r"main|beta[0-9.eE+-]+",


def experiment_config(wildcards):
    return config["experiments"][wildcards.experiment]


def variant_name(beta=None):
    return "main" if beta is None else f"beta{beta:g}"


def mask_settings(wildcards):
    """The mask block for an architecture and variant (a beta sweep point overrides beta)."""
    block = stage_settings(experiment_config(wildcards), wildcards.arch, "mask")
    if wildcards.variant != "main":
        block = {**block, "beta": float(wildcards.variant[len("beta"):])}
    return block


def settings_json(block):
    return json.dumps(block, sort_keys=True)


STAGE_BLOCKS = {
    "pretrain": ("data", "arch", "pretrain"),
    "mask": ("data", "arch", "pretrain", "mask"),
    "evaluate": ("data", "arch", "pretrain", "mask"),
}


def provenance(wildcards, stage):
    """Columns every table row carries, so each number traces back to its seed, config and code.

    The config hash covers only the settings the stage depends on, so a changed mask setting
    does not re-run pretraining.
    """
    exp = experiment_config(wildcards)
    blocks = {
        "data": exp.get("data", {}),
        "arch": exp["architectures"][wildcards.arch],
        "pretrain": stage_settings(exp, wildcards.arch, "pretrain"),
    }
    columns = {
        "experiment": wildcards.experiment,
        "scale": config["scale"],
        "arch": wildcards.arch,
        "seed": int(wildcards.seed),
    }
    if stage != "pretrain":
        blocks["mask"] = mask_settings(wildcards)
        columns["variant"] = wildcards.variant
        columns["beta"] = blocks["mask"]["beta"]
    columns["config_hash"] = stable_hash({k: blocks[k] for k in STAGE_BLOCKS[stage]})
    columns["code_version"] = CODE[stage]
    return columns


def run_dirs(experiment, variant="main", archs=None):
    """Evaluation folders of a variant over architectures (default: the experiment's) and seeds."""
    exp = config["experiments"][experiment]
    return [
        f"{RESULTS}/{experiment}/{arch}/seed{seed}/{variant}"
        for arch in (archs or exp["architectures"])
        for seed in seeds(exp)
    ]


def mask_files(wildcards):
    base = f"{RESULTS}/{wildcards.experiment}/{wildcards.arch}/seed{wildcards.seed}/{wildcards.variant}"
    return {task: f"{base}/mask_{task}.pt" for task in MASK_TASKS[wildcards.experiment]}


def seed_tables(experiment):
    return {
        table: [f"{d}/{table}.parquet" for d in run_dirs(experiment)]
        for table in TABLES[experiment]
    }

# What every experiment's rules use: code versions (rerun triggers), job resources, settings as params.
import importlib
import json

from modmask import steps

from modmask.code_versions import code_version
from modmask.config import network_spec, seeds, stage_settings, sweep_mask_settings, variant_seeds


def rule_code(script, *modules):
    """The code version of the scripts/<script> that a rule runs, the hash of the script and of every library
    module it imports, directly or not (``modmask.code_versions``), so that editing a module re-runs
    exactly the rules whose code imports it. ``modules`` names what the script loads by computed name;
    ``{wildcard}`` in one makes the version a function of the job's wildcards."""
    path = f"{workflow.basedir}/scripts/{script}"
    if any("{" in module for module in modules):
        return lambda wc: code_version(path, *(module.format(**dict(wc.items())) for module in modules))
    return code_version(path, *modules)


def step_code(script, experiment=None):
    """Code version of a rule running a generic step script (network, mask, evaluate) for ``experiment``
    (None: the job's ``experiment`` wildcard): the script, the experiment's steps module and its experiment
    module, each with what it imports (modmask.steps.run loads both by name)."""
    if experiment is None:
        return lambda wc: step_code(script, wc.experiment)
    return rule_code(script, steps.STEP_MODULES[experiment], f"experiments.{experiment}")


def job_resources(stage):
    """Resources of one job of ``stage`` from the config's ``resources`` block (the stage's entry over
    ``default``): ``runtime`` (minutes), ``mem_mb``, ``cpus`` (as ``cpus_per_task``, for SLURM) and
    ``gpu``, which the SLURM executor turns into ``--gpus`` and which ``--resources gpu=N`` limits
    locally. Jobs that run on the CPU (``device: cpu``) take no GPU."""
    blocks = config.get("resources", {})
    block = {**blocks.get("default", {}), **blocks.get(stage, {})}
    resources = {key: block[key] for key in ("runtime", "mem_mb") if key in block}
    if "cpus" in block:
        resources["cpus_per_task"] = block["cpus"]
    resources["gpu"] = 0 if config["device"] == "cpu" else block.get("gpu", 0)
    return resources


wildcard_constraints:
    seed=r"\d+",


def settings_json(block):
    return json.dumps(block, sort_keys=True)


def arch_spec_json(block):
    """Params function: one architecture's network settings of an experiment's config block, as JSON."""
    return lambda wc: settings_json(network_spec(block, wc.arch))


def block_provenance(experiment, stage, script, name="arch", **columns):
    """Params function: the provenance columns of a job of ``experiment`` (its own config block and steps
    module: scan, cifar10, mathematics) at ``stage``, run by ``script``. ``name`` is the wildcard naming the
    run (arch or task); ``columns`` maps further column names to wildcard names."""
    steps_module = importlib.import_module(f"modmask.{steps.STEP_MODULES[experiment]}")

    def columns_for(wildcards):
        extra = {column: getattr(wildcards, wildcard) for column, wildcard in columns.items()}
        return steps_module.provenance(
            config[experiment],
            getattr(wildcards, name),
            wildcards.seed,
            stage,
            config["scale"],
            step_code(script, experiment),
            **extra,
        )

    return columns_for


def run_folders(experiment):
    """Folders of every (architecture, seed) run of an experiment with its own config block."""
    block = config[experiment]
    return [f"{RESULTS}/{experiment}/{arch}/seed{seed}" for arch in block["architectures"] for seed in seeds(block)]

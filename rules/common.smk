# What every experiment's rules use: code versions (rerun triggers), job resources, settings as params.
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
    """Code version of a rule running a step script (network, mask, evaluate, the permuted-MNIST run) for
    ``experiment`` (None: the job's ``experiment`` wildcard): the script and the experiment's module, each
    with what it imports (modmask.steps loads the experiment's module by name)."""
    if experiment is None:
        return lambda wc: step_code(script, wc.experiment)
    return rule_code(script, f"experiments.{experiment}")


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


def block_provenance(experiment, stage, script, name="arch", column=None, **columns):
    """Params function: the provenance columns of a job of ``experiment`` (one with its own config block:
    permuted_mnist, scan, cifar10, mathematics) at ``stage``, run by ``script``. ``name`` is the wildcard
    naming the run (arch, task, pm_variant), ``column`` its column (default: the wildcard's name);
    ``columns`` maps further column names to wildcard names."""

    def columns_for(wildcards):
        extra = {key: getattr(wildcards, wildcard) for key, wildcard in columns.items()}
        return steps.run_provenance(
            experiment,
            config[experiment],
            column or name,
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

# The experiments of the `experiments` config block (add/mul and double addition, paper sections 3.1-3.2):
# pretrain a network, train a mask per task, evaluate; their rules are data, pretrain, masks, evaluate and
# figures. Config lookups, provenance and job lists of these rules.
from modmask import experiments

EXPERIMENTS = list(config["experiments"])
# Every experiment's evaluation writes the same tables (their columns differ by experiment).
TABLES = ["accuracy", "confusion", "layers", "sharing", "histogram"]


wildcard_constraints:
    experiment="|".join(EXPERIMENTS),
    arch=r"[A-Za-z][A-Za-z0-9_]*",
    task=r"[A-Za-z0-9_]+",
    # "main": the experiment's mask settings; "beta<value>": the same with beta replaced (sweeps)
    variant=r"main|beta[0-9.eE+-]+",


def experiment_config(wildcards):
    return config["experiments"][wildcards.experiment]


def variant_name(beta=None):
    return "main" if beta is None else f"beta{beta:g}"


def mask_settings(wildcards):
    """The mask block for an architecture and variant (a beta sweep point: sweeps.mask and its beta)."""
    exp = experiment_config(wildcards)
    if wildcards.variant == "main":
        return stage_settings(exp, wildcards.arch, "mask")
    return sweep_mask_settings(exp, wildcards.arch, float(wildcards.variant[len("beta") :]))


def architecture_spec(wildcards):
    return network_spec(experiment_config(wildcards), wildcards.arch)


def variant_tasks(wildcards):
    """Main runs train every mask task; sweep points only the masks compared for sharing."""
    exp = experiments.get(wildcards.experiment)
    return list(exp.MASK_TASKS if wildcards.variant == "main" else exp.SHARING_TASKS)


STAGE_BLOCKS = {
    "pretrain": ("data", "arch", "pretrain"),
    "mask": ("data", "arch", "pretrain", "mask"),
    "evaluate": ("data", "arch", "pretrain", "mask"),
}


def provenance(wildcards, stage, script):
    """Columns every table row carries, so each number traces back to its seed, config and code
    (``script``: what the rule runs, see ``rule_code``).

    The config hash covers only the settings the stage depends on, so a changed mask setting
    does not re-run pretraining.
    """
    exp = experiment_config(wildcards)
    blocks = {
        "data": exp.get("data", {}),
        "arch": architecture_spec(wildcards),
        "pretrain": stage_settings(exp, wildcards.arch, "pretrain"),
    }
    mask = {}
    if stage != "pretrain":
        blocks["mask"] = mask_settings(wildcards)
        mask = {"variant": wildcards.variant, "beta": blocks["mask"]["beta"]}
    return steps.provenance(
        wildcards.experiment,
        config["scale"],
        {"arch": wildcards.arch},
        wildcards.seed,
        {k: blocks[k] for k in STAGE_BLOCKS[stage]},
        step_code(script, wildcards.experiment),
        **mask,
    )


def run_dirs(experiment):
    """Evaluation folders of an experiment's main runs: its architectures and seeds."""
    exp = config["experiments"][experiment]
    return [f"{RESULTS}/{experiment}/{arch}/seed{seed}/main" for arch in exp["architectures"] for seed in seeds(exp)]


def mask_files(wildcards):
    base = f"{RESULTS}/{wildcards.experiment}/{wildcards.arch}/seed{wildcards.seed}/{wildcards.variant}"
    return {task: f"{base}/mask_{task}.pt" for task in variant_tasks(wildcards)}


def seed_tables(experiment):
    return {table: [f"{d}/{table}.parquet" for d in run_dirs(experiment)] for table in TABLES}


def sweep_run_dirs(experiment):
    """Evaluation folders of an experiment's sweeps: beta points, and network sizes at the main beta.

    Both are beta-sweep variants (only the masks compared for sharing, ``sweeps.mask`` settings),
    so a size-sweep point of an architecture that is also beta-swept is the same job.
    """
    exp = config["experiments"][experiment]
    sweeps = exp["sweeps"]
    base = f"{RESULTS}/{experiment}"
    points = [(arch, beta) for arch in sweeps["beta_architectures"] for beta in sweeps["beta"]]
    points += [(arch, stage_settings(exp, arch, "mask")["beta"]) for arch in sweeps["size_architectures"]]
    dirs = [f"{base}/{arch}/seed{seed}/{variant_name(float(beta))}" for arch, beta in points for seed in seeds(sweeps)]
    return list(dict.fromkeys(dirs))


SWEEP_EXPERIMENTS = [e for e in EXPERIMENTS if "sweeps" in config["experiments"][e]]

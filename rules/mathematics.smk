# Mathematics Dataset (paper section 4, Fig. 5). The data stage: per task (`mathematics.tasks`), a
# train and a test table of (question, answer, level), levels easy / medium / hard, no question twice,
# `test_per_level` of each level held out (target: snakemake mathematics_data_all).
# The samples come from the official release when `mathematics.data.archive` names it (the unpacked
# mathematics_dataset-v1.0 folder or its .tar.gz); otherwise DeepMind's generator writes them, seeded
# shard by shard, in an environment of its own (it needs sympy 1.5.1 and numpy 1.23.5), which is
#   - `mathematics.data.python`, an interpreter that has envs/mathematics-requirements.txt installed;
#   - else, with --use-conda, envs/mathematics.yaml;
#   - else a virtual environment that rule mathematics_env builds from envs/mathematics-requirements.txt
#     in .snakemake/venvs/mathematics (beside Snakemake's conda environments; every scale shares it).
from snakemake_interface_executor_plugins.settings import DeploymentMethod

MATH = config.get("mathematics")
MATH_VENV = ".snakemake/venvs/mathematics"
MATH_ENV_MARKER = f"{MATH_VENV}.json"  # written last: the environment is complete
MATH_SHARD_SCRIPT = f"{workflow.basedir}/scripts/mathematics_generate_shard.py"
MATH_REQUIREMENTS = f"{workflow.basedir}/envs/mathematics-requirements.txt"
MATH_TABLES = f"{RESULTS}/data/mathematics/{{task}}"  # shards: <task>/shards/<level>_<shard>.jsonl


if MATH:
    from modmask import generator_env
    from modmask.data import mathematics as math_data

    MATH_DATA = MATH["data"]
    math_data.check_settings(MATH_DATA)
    if MATH_DATA.get("archive"):
        MATH_SOURCE = "archive"
    elif MATH_DATA.get("python"):
        MATH_SOURCE = "python"
    else:
        # --use-conda (or --sdm conda): envs/mathematics.yaml
        MATH_SOURCE = "conda" if DeploymentMethod.CONDA in workflow.deployment_settings.deployment_method else "venv"
    MATH_PYTHON = {
        "python": MATH_DATA.get("python"),
        "conda": "python",
        "venv": str(generator_env.venv_python(MATH_VENV)),
    }.get(MATH_SOURCE)

    if MATH_SOURCE == "venv":

        # Runs where Snakemake runs (like its conda environments): pip needs the internet, which
        # cluster nodes often lack.
        localrules:
            mathematics_env,

        rule mathematics_env:
            """The generator's virtual environment, built atomically from envs/mathematics-requirements.txt."""
            input:
                requirements=MATH_REQUIREMENTS,
            output:
                marker=MATH_ENV_MARKER,
            log:
                f"{MATH_VENV}.log",
            conda:
                "../envs/modmask.yaml"
            params:
                venv=lambda wc, output: output.marker[: -len(".json")],
                base_python=MATH_DATA.get("base_python") or "",
            script:
                "../scripts/mathematics_env.py"

    if MATH_SOURCE != "archive":

        rule mathematics_shard:
            """One seeded shard of a task's level, written by DeepMind's generator in its own environment."""
            input:
                [MATH_ENV_MARKER] if MATH_SOURCE == "venv" else [],
            output:
                shard=f"{MATH_TABLES}/shards/{{level}}_{{shard}}.jsonl",
            log:
                f"{RESULTS}/logs/data/mathematics/{{task}}/shard_{{level}}_{{shard}}.log",
            wildcard_constraints:
                task="|".join(math_data.TASKS),
                level="|".join(math_data.LEVELS),
                shard=r"\d+",
            conda:
                "../envs/mathematics.yaml" if MATH_SOURCE in ("venv", "conda") else None
            resources:
                **job_resources("generate_data"),
            params:
                python=MATH_PYTHON,
                script=MATH_SHARD_SCRIPT,
                hash_seed=math_data.HASH_SEED,
                samples=lambda wc: math_data.shard_settings(MATH_DATA, wc.task, wc.level, wc.shard)["samples"],
                seed=lambda wc: math_data.shard_settings(MATH_DATA, wc.task, wc.level, wc.shard)["seed"],
                code=generator_env.file_version(MATH_SHARD_SCRIPT, MATH_REQUIREMENTS),
            shell:
                "PYTHONHASHSEED={params.hash_seed} {params.python:q} {params.script:q} --task {wildcards.task}"
                " --level {wildcards.level} --samples {params.samples} --seed {params.seed}"
                " --output {output.shard:q} > {log:q} 2>&1"

    rule mathematics_data:
        """A task's train and test tables: de-duplicated across levels, a test set held out per level."""
        input:
            # the release's files of the task, or its shards per level, in order
            unpack(lambda wc: math_data.task_inputs(MATH_DATA, wc.task, f"{RESULTS}/data/mathematics")),
        output:
            train=f"{MATH_TABLES}/train.parquet",
            test=f"{MATH_TABLES}/test.parquet",
        log:
            f"{RESULTS}/logs/data/mathematics/{{task}}.log",
        wildcard_constraints:
            task="|".join(math_data.TASKS),
        conda:
            "../envs/modmask.yaml"
        resources:
            **job_resources("generate_data"),
        params:
            settings=settings_json(math_data.data_settings(MATH_DATA)),
            code=rule_code("mathematics_data.py"),
        script:
            "../scripts/mathematics_data.py"

    rule mathematics_data_all:
        """Every configured task's tables (target: snakemake mathematics_data_all)."""
        input:
            expand(f"{MATH_TABLES}/{{part}}.parquet", task=MATH["tasks"], part=["train", "test"]),


# The experiment: per (task, seed), a Transformer trained on every level, masks on its frozen weights
# trained on every level (`control`) and on the easy level only (`easy`), one evaluation job scoring
# the network and both masks on each level's test set (Fig. 5 reads hard).
MATH_RUN = f"{RESULTS}/mathematics/{{task}}/seed{{seed}}"


if MATH:
    from modmask.experiments import mathematics as math_experiment

    wildcard_constraints:
        math_mask="|".join(math_experiment.SUBSETS),

    rule mathematics_network:
        """A task's Transformer, trained on every level of its training table."""
        input:
            train=f"{MATH_TABLES}/train.parquet",
        output:
            network=f"{MATH_RUN}/network.pt",
        log:
            f"{RESULTS}/logs/mathematics/{{task}}/seed{{seed}}/network.log",
        conda:
            "../envs/modmask.yaml"
        threads: config["threads"]
        resources:
            **job_resources("pretrain"),
        params:
            experiment="mathematics",
            arch=settings_json(MATH.get("network", {})),
            settings=lambda wc: settings_json(math_experiment.stage_settings(MATH, wc.task, "pretrain")),
            provenance=block_provenance("mathematics", "network", "network.py", name="task"),
            code=step_code("network.py", "mathematics"),
        script:
            "../scripts/network.py"

    rule mathematics_mask:
        """A mask on the task's frozen network: `control` trains on every level, `easy` on easy only."""
        input:
            train=f"{MATH_TABLES}/train.parquet",
            network=f"{MATH_RUN}/network.pt",
        output:
            mask=f"{MATH_RUN}/mask_{{math_mask}}.pt",
        log:
            f"{RESULTS}/logs/mathematics/{{task}}/seed{{seed}}/mask_{{math_mask}}.log",
        conda:
            "../envs/modmask.yaml"
        threads: config["threads"]
        resources:
            **job_resources("mask"),
        params:
            experiment="mathematics",
            settings=lambda wc: settings_json(math_experiment.stage_settings(MATH, wc.task, "mask")),
            mask=lambda wc: wc.math_mask,
            provenance=block_provenance("mathematics", "mask", "mask.py", name="task", mask="math_mask"),
            code=step_code("mask.py", "mathematics"),
        script:
            "../scripts/mask.py"

    rule mathematics_evaluate:
        """Exact-answer accuracy of the network without a mask and through each mask, per test level."""
        input:
            network=f"{MATH_RUN}/network.pt",
            test=f"{MATH_TABLES}/test.parquet",
            masks=expand(
                f"{MATH_RUN}/mask_{{math_mask}}.pt", math_mask=list(math_experiment.SUBSETS), allow_missing=True
            ),
        output:
            accuracy=f"{MATH_RUN}/accuracy.parquet",
        log:
            f"{RESULTS}/logs/mathematics/{{task}}/seed{{seed}}/evaluate.log",
        conda:
            "../envs/modmask.yaml"
        threads: config["threads"]
        resources:
            **job_resources("evaluate"),
        params:
            experiment="mathematics",
            provenance=block_provenance("mathematics", "evaluate", "evaluate.py", name="task"),
            code=step_code("evaluate.py", "mathematics"),
        script:
            "../scripts/evaluate.py"

    localrules:
        mathematics_table,

    rule mathematics_table:
        """One tidy accuracy table over every task and seed."""
        input:
            [
                f"{RESULTS}/mathematics/{task}/seed{seed}/accuracy.parquet"
                for task in MATH["tasks"]
                for seed in seeds(MATH)
            ],
        output:
            f"{RESULTS}/mathematics/accuracy.parquet",
        log:
            f"{RESULTS}/logs/mathematics/collect_accuracy.log",
        conda:
            "../envs/modmask.yaml"
        resources:
            **job_resources("collect"),
        params:
            code=rule_code("collect_table.py"),
        script:
            "../scripts/collect_table.py"

    rule figures_mathematics:
        """Paper Fig. 5: hard-level accuracy without a mask, with the control mask and with the easy mask."""
        input:
            accuracy=f"{RESULTS}/mathematics/accuracy.parquet",
        output:
            report(
                directory(f"{FIGURES}/mathematics"),
                patterns=["{figure}.png"],
                caption="../report/mathematics.rst",
                category="mathematics",
                labels={"figure": "{figure}"},
            ),
        log:
            f"{RESULTS}/logs/figures/mathematics.log",
        conda:
            "../envs/modmask.yaml"
        resources:
            **job_resources("figures"),
        params:
            plots="mathematics",
            code=rule_code("figures.py", "plotting.mathematics"),
        script:
            "../scripts/figures.py"

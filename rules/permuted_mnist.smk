# Permuted MNIST transfer (paper section 3.3, Fig. 3 and 15). Its procedure differs from the
# pretrain-then-mask experiments (weights and masks train together, task after task), so its
# config is a top-level block, `permuted_mnist`, and it has rules of its own: one job per
# (variant, seed) runs all tasks in order, one job collects the tables, one draws the figures.
import re

from modmask.experiments import permuted_mnist as permuted_mnist_experiment
from modmask.data import mnist as mnist_data

PM = config.get("permuted_mnist")
PM_TABLES = ["sharing", "layers", "accuracy"]


if PM:
    MNIST_DIR = PM["data"]["mnist_dir"]

    rule permuted_mnist_run:
        """All tasks of one (variant, seed): weights and masks train together, used weights freeze."""
        input:
            # ancient: a fresh copy of the same (checksummed) archives must not rerun every task
            [ancient(f"{MNIST_DIR}/{name}") for name in mnist_data.FILES.values()],
        output:
            run=f"{RESULTS}/permuted_mnist/{{pm_variant}}/seed{{seed}}/run.pt",
        log:
            f"{RESULTS}/logs/permuted_mnist/{{pm_variant}}/seed{{seed}}/run.log",
        wildcard_constraints:
            pm_variant="|".join(re.escape(v) for v in PM["variants"]),
        conda:
            "../envs/modmask.yaml"
        threads: config["threads"]
        resources:
            **job_resources("mask"),
        params:
            settings=lambda wc: settings_json(permuted_mnist_experiment.run_settings(PM, wc.pm_variant)),
            provenance=block_provenance(
                "permuted_mnist", "run", "permuted_mnist_run.py", name="pm_variant", column="variant"
            ),
            code=step_code("permuted_mnist_run.py", "permuted_mnist"),
        script:
            "../scripts/permuted_mnist_run.py"

    rule permuted_mnist_tables:
        """Tidy tables over all variants and seeds: sharing and capacity per task and layer, accuracy per task."""
        input:
            [f"{RESULTS}/permuted_mnist/{v}/seed{seed}/run.pt" for v in PM["variants"] for seed in variant_seeds(PM, v)],
        output:
            **{table: f"{RESULTS}/permuted_mnist/{table}.parquet" for table in PM_TABLES},
        log:
            f"{RESULTS}/logs/permuted_mnist/tables.log",
        conda:
            "../envs/modmask.yaml"
        resources:
            **job_resources("collect"),
        params:
            code=step_code("permuted_mnist_tables.py", "permuted_mnist"),
        script:
            "../scripts/permuted_mnist_tables.py"

    rule figures_permuted_mnist:
        """Paper Fig. 3 (normal mask init) and Fig. 15 a, b (used weights start at 2, new ones at 0 / -1)."""
        input:
            **{table: f"{RESULTS}/permuted_mnist/{table}.parquet" for table in PM_TABLES},
        output:
            report(
                directory(f"{FIGURES}/permuted_mnist"),
                patterns=["{figure}.png"],
                caption="../report/permuted_mnist.rst",
                category="permuted_mnist",
                labels={"figure": "{figure}"},
            ),
        log:
            f"{RESULTS}/logs/figures/permuted_mnist.log",
        conda:
            "../envs/modmask.yaml"
        resources:
            **job_resources("figures"),
        params:
            plots="permuted_mnist",
            code=rule_code("figures.py", "plotting.permuted_mnist"),
        script:
            "../scripts/figures.py"

    if PM["data"].get("download", False):

        rule download_mnist:
            """Fetch one MNIST archive from the mirror and verify it (only with data.download: true)."""
            output:
                f"{MNIST_DIR}/{{mnist_file}}",
            log:
                f"{RESULTS}/logs/permuted_mnist/download_{{mnist_file}}.log",
            wildcard_constraints:
                mnist_file="|".join(re.escape(name) for name in mnist_data.FILES.values()),
            conda:
                "../envs/modmask.yaml"
            params:
                url=PM["data"].get("mirror", mnist_data.MIRROR),
            script:
                "../scripts/download_mnist.py"

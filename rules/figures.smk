rule figures_experiment:
    """An experiment's figures (add/mul: paper Fig. 1, 10-12; double addition: Fig. 2, 13, 14),
    PDF and PNG, from its Parquet tables alone."""
    input:
        **{table: f"{RESULTS}/{{experiment}}/{table}.parquet" for table in TABLES},
    output:
        report(
            directory(f"{FIGURES}/{{experiment}}"),
            patterns=["{figure}.png"],
            caption="../report/experiment.rst",
            category="{experiment}",
            labels={"figure": "{figure}"},
        ),
    log:
        f"{RESULTS}/logs/figures/{{experiment}}.log",
    conda:
        "../envs/modmask.yaml"
    resources:
        **job_resources("figures"),
    params:
        scale=config["scale"],
        plots=lambda wc: wc.experiment,
        code=rule_code("figures.py", "plotting.{experiment}"),
    script:
        "../scripts/figures.py"


rule figures_sweeps:
    """Paper Fig. 8 (sharing and accuracy vs beta) and Fig. 9 (sharing vs network size)."""
    input:
        **{table: f"{RESULTS}/addmul/sweeps/{table}.parquet" for table in ["accuracy", "sharing", "layers"]},
    output:
        report(
            directory(f"{FIGURES}/sweeps"),
            patterns=["{figure}.png"],
            caption="../report/sweeps.rst",
            category="sweeps",
            labels={"figure": "{figure}"},
        ),
    log:
        f"{RESULTS}/logs/figures/sweeps.log",
    conda:
        "../envs/modmask.yaml"
    resources:
        **job_resources("figures"),
    params:
        plots="sweeps",
        code=rule_code("figures.py", "plotting.sweeps"),
    script:
        "../scripts/figures.py"


rule figures_histogram:
    """Paper Fig. 7: distribution of the mask probabilities after training, per experiment."""
    input:
        histogram=[f"{RESULTS}/{experiment}/histogram.parquet" for experiment in EXPERIMENTS],
    output:
        report(
            directory(f"{FIGURES}/histogram"),
            patterns=["{figure}.png"],
            caption="../report/histogram.rst",
            category="histogram",
            labels={"figure": "{figure}"},
        ),
    log:
        f"{RESULTS}/logs/figures/histogram.log",
    conda:
        "../envs/modmask.yaml"
    resources:
        **job_resources("figures"),
    params:
        plots="histogram",
        code=rule_code("figures.py", "plotting.histogram"),
    script:
        "../scripts/figures.py"


rule summary:
    """The paper's findings beside ours, as a Markdown table computed from the Parquet tables."""
    input:
        [f"{RESULTS}/{experiment}/{table}.parquet" for experiment in EXPERIMENTS for table in TABLES],
        [f"{RESULTS}/{e}/sweeps/{t}.parquet" for e in SWEEP_EXPERIMENTS for t in ["sharing", "layers"]],
        [f"{RESULTS}/permuted_mnist/{t}.parquet" for t in ["sharing", "accuracy"]]
        if config.get("permuted_mnist")
        else [],
        [f"{RESULTS}/scan/{t}.parquet" for t in ["accuracy", "output_weights"]] if config.get("scan") else [],
        [f"{RESULTS}/cifar10/{t}.parquet" for t in ["accuracy", "confusion", "stability"]]
        if config.get("cifar10")
        else [],
        [f"{RESULTS}/mathematics/accuracy.parquet"] if config.get("mathematics") else [],
    output:
        report(f"{RESULTS}/summary.md", caption="../report/summary.rst", category="summary"),
    log:
        f"{RESULTS}/logs/summary.log",
    conda:
        "../envs/modmask.yaml"
    resources:
        **job_resources("figures"),
    params:
        code=rule_code("summary.py"),
    script:
        "../scripts/summary.py"


localrules:
    figures_all,


rule figures_all:
    """Every figure of the chosen scale; the output lists them."""
    input:
        [f"{FIGURES}/{experiment}" for experiment in EXPERIMENTS],
        [f"{FIGURES}/sweeps"] if "addmul" in SWEEP_EXPERIMENTS else [],
        f"{FIGURES}/histogram",
        # the experiments with a config block of their own (permuted MNIST, SCAN, CIFAR-10, Mathematics)
        [f"{FIGURES}/{name}" for name in experiments.EXPERIMENTS if name not in EXPERIMENTS and config.get(name)],
        f"{RESULTS}/summary.md",
    output:
        f"{FIGURES}/all",
    log:
        f"{RESULTS}/logs/figures/all.log",
    conda:
        "../envs/modmask.yaml"
    resources:
        **job_resources("figures"),
    params:
        code=rule_code("figures_index.py"),
    script:
        "../scripts/figures_index.py"

rule evaluate:
    """Accuracy with every mask and inverted mask, weights kept, sharing: one run's tables."""
    input:
        masks=lambda wc: list(mask_files(wc).values()),
        data=f"{RESULTS}/data/{{experiment}}.parquet",
        network=f"{RESULTS}/{{experiment}}/{{arch}}/seed{{seed}}/network.pt",
    output:
        **{table: f"{RESULTS}/{{experiment}}/{{arch}}/seed{{seed}}/{{variant}}/{table}.parquet" for table in TABLES},
    log:
        f"{RESULTS}/logs/{{experiment}}/{{arch}}/seed{{seed}}/{{variant}}/evaluate.log",
    conda:
        "../envs/modmask.yaml"
    threads: config["threads"]
    resources:
        **job_resources("evaluate"),
    params:
        provenance=lambda wc: provenance(wc, "evaluate", "evaluate.py"),
        code=step_code("evaluate.py"),
    script:
        "../scripts/evaluate.py"


# Concatenating small tables: on a cluster, run on the submitting node instead of as SLURM jobs.
localrules:
    collect_table,
    collect_sweep_table,


rule collect_table:
    """One tidy table over all architectures and seeds of an experiment."""
    input:
        lambda wc: seed_tables(wc.experiment)[wc.table],
    output:
        f"{RESULTS}/{{experiment}}/{{table}}.parquet",
    log:
        f"{RESULTS}/logs/{{experiment}}/collect_{{table}}.log",
    wildcard_constraints:
        table="|".join(TABLES),
    conda:
        "../envs/modmask.yaml"
    resources:
        **job_resources("collect"),
    params:
        code=rule_code("collect_table.py"),
    script:
        "../scripts/collect_table.py"


rule collect_sweep_table:
    """One tidy table over an experiment's sweep points (beta values, network sizes) and seeds."""
    input:
        lambda wc: [f"{d}/{wc.table}.parquet" for d in sweep_run_dirs(wc.experiment)],
    output:
        f"{RESULTS}/{{experiment}}/sweeps/{{table}}.parquet",
    log:
        f"{RESULTS}/logs/{{experiment}}/collect_sweeps_{{table}}.log",
    wildcard_constraints:
        table="|".join(TABLES),
    conda:
        "../envs/modmask.yaml"
    resources:
        **job_resources("collect"),
    params:
        code=rule_code("collect_table.py"),
    script:
        "../scripts/collect_table.py"

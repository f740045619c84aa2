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
    collect_tables,
    collect_sweep_tables,


rule collect_tables:
    """The experiment's tidy tables, each over all architectures and seeds (one job for all of them)."""
    input:
        lambda wc: [path for paths in seed_tables(wc.experiment).values() for path in paths],
    output:
        **{table: f"{RESULTS}/{{experiment}}/{table}.parquet" for table in TABLES},
    log:
        f"{RESULTS}/logs/{{experiment}}/collect.log",
    conda:
        "../envs/modmask.yaml"
    resources:
        **job_resources("collect"),
    params:
        code=rule_code("collect_table.py"),
    script:
        "../scripts/collect_table.py"


rule collect_sweep_tables:
    """The experiment's tidy sweep tables, each over its sweep points (beta values, network sizes) and seeds."""
    input:
        lambda wc: [f"{d}/{table}.parquet" for d in sweep_run_dirs(wc.experiment) for table in TABLES],
    output:
        **{table: f"{RESULTS}/{{experiment}}/sweeps/{table}.parquet" for table in TABLES},
    log:
        f"{RESULTS}/logs/{{experiment}}/collect_sweeps.log",
    conda:
        "../envs/modmask.yaml"
    resources:
        **job_resources("collect"),
    params:
        code=rule_code("collect_table.py"),
    script:
        "../scripts/collect_table.py"

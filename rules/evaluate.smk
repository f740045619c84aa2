rule evaluate:
    """Accuracy with every mask and inverted mask, weights kept, sharing: one run's tables."""
    input:
        unpack(mask_files),
        data=f"{RESULTS}/data/{{experiment}}.parquet",
        network=f"{RESULTS}/{{experiment}}/{{arch}}/seed{{seed}}/network.pt",
    output:
        **{
            table: f"{RESULTS}/{{experiment}}/{{arch}}/seed{{seed}}/{{variant}}/{table}.parquet"
            for table in ["accuracy", "confusion", "layers", "sharing"]
        },
    params:
        tasks=lambda wc: MASK_TASKS[wc.experiment],
        provenance=lambda wc: provenance(wc, "evaluate"),
        code=CODE["evaluate"],
    threads: config["threads"]
    resources:
        gpu=1,
    log:
        f"{RESULTS}/logs/{{experiment}}/{{arch}}/seed{{seed}}/{{variant}}/evaluate.log",
    conda:
        "../envs/modmask.yaml"
    script:
        "../scripts/evaluate.py"


rule collect_table:
    """One tidy table over all architectures and seeds of an experiment."""
    input:
        lambda wc: seed_tables(wc.experiment)[wc.table],
    output:
        f"{RESULTS}/{{experiment}}/{{table}}.parquet",
    wildcard_constraints:
        table="accuracy|confusion|layers|sharing",
    log:
        f"{RESULTS}/logs/{{experiment}}/collect_{{table}}.log",
    conda:
        "../envs/modmask.yaml"
    script:
        "../scripts/collect_table.py"

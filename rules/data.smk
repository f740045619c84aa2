rule generate_data:
    """Generate an experiment's data set once (seed 0; it does not vary with the network seed)."""
    output:
        f"{RESULTS}/data/{{experiment}}.parquet",
    log:
        f"{RESULTS}/logs/data/{{experiment}}.log",
    conda:
        "../envs/modmask.yaml"
    resources:
        **job_resources("generate_data"),
    params:
        settings=lambda wc: settings_json(experiment_config(wc).get("data", {})),
        code=rule_code("generate_data.py", "data.{experiment}"),
    script:
        "../scripts/generate_data.py"

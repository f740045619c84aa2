rule pretrain:
    """Train one network (architecture, seed) on the experiment's full task."""
    input:
        data=f"{RESULTS}/data/{{experiment}}.parquet",
    output:
        network=f"{RESULTS}/{{experiment}}/{{arch}}/seed{{seed}}/network.pt",
    log:
        f"{RESULTS}/logs/{{experiment}}/{{arch}}/seed{{seed}}/pretrain.log",
    conda:
        "../envs/modmask.yaml"
    threads: config["threads"]
    resources:
        **job_resources("pretrain"),
    params:
        arch=lambda wc: settings_json(architecture_spec(wc)),
        settings=lambda wc: settings_json(stage_settings(experiment_config(wc), wc.arch, "pretrain")),
        provenance=lambda wc: provenance(wc, "pretrain", "network.py"),
        code=step_code("network.py"),
    script:
        "../scripts/network.py"

rule train_mask:
    """Train one mask (architecture, seed, mask task) on the frozen pretrained network."""
    input:
        data=f"{RESULTS}/data/{{experiment}}.parquet",
        network=f"{RESULTS}/{{experiment}}/{{arch}}/seed{{seed}}/network.pt",
    output:
        mask=f"{RESULTS}/{{experiment}}/{{arch}}/seed{{seed}}/{{variant}}/mask_{{task}}.pt",
    log:
        f"{RESULTS}/logs/{{experiment}}/{{arch}}/seed{{seed}}/{{variant}}/mask_{{task}}.log",
    conda:
        "../envs/modmask.yaml"
    threads: config["threads"]
    resources:
        **job_resources("mask"),
    params:
        settings=lambda wc: settings_json(mask_settings(wc)),
        provenance=lambda wc: provenance(wc, "mask", "mask.py"),
        mask=lambda wc: wc.task,
        code=step_code("mask.py"),
    script:
        "../scripts/mask.py"

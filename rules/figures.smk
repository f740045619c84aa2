rule figures_addmul:
    """Paper Fig. 1, 10, 11, 12 from the add/mul tables (PDF and PNG)."""
    input:
        **{table: f"{RESULTS}/addmul/{table}.parquet" for table in TABLES["addmul"]},
    output:
        directory(f"{FIGURES}/addmul"),
    params:
        scale=config["scale"],
        code=CODE["figures"],
    log:
        f"{RESULTS}/logs/figures/addmul.log",
    conda:
        "../envs/modmask.yaml"
    script:
        "../scripts/figures_addmul.py"


rule figures_all:
    """Every figure of the chosen scale; the output lists them."""
    input:
        [f"{FIGURES}/{experiment}" for experiment in EXPERIMENTS],
    output:
        f"{FIGURES}/all",
    log:
        f"{RESULTS}/logs/figures/all.log",
    conda:
        "../envs/modmask.yaml"
    script:
        "../scripts/figures_index.py"

# SCAN (paper section 3.4). So far the data: every split's train and test set, generated from the
# grammar (or read from the official release files when `scan.data.official_dir` is set).
# The models, masks and figures will build on these tables.
from modmask.data import scan as scan_data

SCAN = config.get("scan")
SCAN_CODE = code_version("data.scan", "io")


if SCAN:

    rule scan_split:
        """One SCAN split (simple, length, addprim_jump, addprim_turn_left): train and test tables."""
        output:
            train=f"{RESULTS}/data/scan/{{split}}/train.parquet",
            test=f"{RESULTS}/data/scan/{{split}}/test.parquet",
        wildcard_constraints:
            split="|".join(scan_data.SPLITS),
        params:
            settings=settings_json(SCAN["data"]),
            code=SCAN_CODE,
        resources:
            **job_resources("generate_data"),
        log:
            f"{RESULTS}/logs/data/scan/{{split}}.log",
        conda:
            "../envs/modmask.yaml"
        script:
            "../scripts/scan_split.py"

    rule scan_data:
        """Every SCAN split (target: snakemake scan_data)."""
        input:
            expand(f"{RESULTS}/data/scan/{{split}}/{{part}}.parquet", split=scan_data.SPLITS,
                   part=["train", "test"]),

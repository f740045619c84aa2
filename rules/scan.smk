# SCAN (paper section 3.4; Fig. 4a, 4b, 16). Per (architecture, seed): a network trained on each
# split's train set (the simple split's is the IID-pretrained network the masks search; the others
# are Fig. 16's direct-training baseline), a mask on the IID network for each split's train set, and
# one evaluation job scoring every network and mask on every split's test set by exact match.
# Data: every split generated from the grammar, or read from the official release files when
# `scan.data.official_dir` is set (target: snakemake scan_data).
from modmask.data import scan as scan_data
from modmask.experiments import scan as scan_experiment

SCAN = config.get("scan")
SCAN_TABLES = ["accuracy", "output_weights"]
SCAN_DIR = f"{RESULTS}/scan/{{arch}}/seed{{seed}}"


if SCAN:

    wildcard_constraints:
        split="|".join(scan_data.SPLITS),

    rule scan_split:
        """One SCAN split (simple, length, addprim_jump, addprim_turn_left): train and test tables."""
        output:
            train=f"{RESULTS}/data/scan/{{split}}/train.parquet",
            test=f"{RESULTS}/data/scan/{{split}}/test.parquet",
        log:
            f"{RESULTS}/logs/data/scan/{{split}}.log",
        conda:
            "../envs/modmask.yaml"
        resources:
            **job_resources("generate_data"),
        params:
            settings=settings_json(SCAN["data"]),
            code=rule_code("scan_split.py"),
        script:
            "../scripts/scan_split.py"

    rule scan_data:
        """Every SCAN split (target: snakemake scan_data)."""
        input:
            expand(f"{RESULTS}/data/scan/{{split}}/{{part}}.parquet", split=scan_data.SPLITS, part=["train", "test"]),

    rule scan_network:
        """A sequence model trained on one split's train set (simple: the IID pretraining)."""
        input:
            train=f"{RESULTS}/data/scan/{{split}}/train.parquet",
        output:
            network=f"{SCAN_DIR}/network_{{split}}.pt",
        log:
            f"{RESULTS}/logs/scan/{{arch}}/seed{{seed}}/network_{{split}}.log",
        conda:
            "../envs/modmask.yaml"
        threads: config["threads"]
        resources:
            **job_resources("pretrain"),
        params:
            experiment="scan",
            arch=arch_spec_json(SCAN),
            settings=lambda wc: settings_json(stage_settings(SCAN, wc.arch, "pretrain")),
            provenance=block_provenance("scan", "network", "network.py", trained_on="split"),
            code=step_code("network.py", "scan"),
        script:
            "../scripts/network.py"

    rule scan_mask:
        """A mask on the IID-pretrained network, trained on one split's train set."""
        input:
            train=f"{RESULTS}/data/scan/{{split}}/train.parquet",
            network=f"{SCAN_DIR}/network_{scan_experiment.IID}.pt",
        output:
            mask=f"{SCAN_DIR}/mask_{{split}}.pt",
        log:
            f"{RESULTS}/logs/scan/{{arch}}/seed{{seed}}/mask_{{split}}.log",
        conda:
            "../envs/modmask.yaml"
        threads: config["threads"]
        resources:
            **job_resources("mask"),
        params:
            experiment="scan",
            settings=lambda wc: settings_json(stage_settings(SCAN, wc.arch, "mask")),
            mask=lambda wc: wc.split,
            provenance=block_provenance("scan", "mask", "mask.py", mask="split"),
            code=step_code("mask.py", "scan"),
        script:
            "../scripts/mask.py"

    rule scan_evaluate:
        """Exact-match accuracy of every network and mask of one (architecture, seed) on every test set,
        and the decoder output weights each split's mask removes (Fig. 4b)."""
        input:
            network=f"{SCAN_DIR}/network_{scan_experiment.IID}.pt",
            masks=expand(f"{SCAN_DIR}/mask_{{split}}.pt", split=scan_data.SPLITS, allow_missing=True),
            networks=expand(
                f"{SCAN_DIR}/network_{{split}}.pt",
                split=[s for s in scan_data.SPLITS if s != scan_experiment.IID],
                allow_missing=True,
            ),
            tests=expand(f"{RESULTS}/data/scan/{{split}}/test.parquet", split=scan_data.SPLITS),
        output:
            **{table: f"{SCAN_DIR}/{table}.parquet" for table in SCAN_TABLES},
        log:
            f"{RESULTS}/logs/scan/{{arch}}/seed{{seed}}/evaluate.log",
        conda:
            "../envs/modmask.yaml"
        threads: config["threads"]
        resources:
            **job_resources("evaluate"),
        params:
            experiment="scan",
            provenance=block_provenance("scan", "evaluate", "evaluate.py"),
            code=step_code("evaluate.py", "scan"),
        script:
            "../scripts/evaluate.py"

    localrules:
        scan_tables,

    rule scan_tables:
        """The tidy SCAN tables, each over all architectures and seeds."""
        input:
            lambda wc: [f"{run}/{table}.parquet" for run in run_folders("scan") for table in SCAN_TABLES],
        output:
            **{table: f"{RESULTS}/scan/{table}.parquet" for table in SCAN_TABLES},
        log:
            f"{RESULTS}/logs/scan/collect.log",
        conda:
            "../envs/modmask.yaml"
        resources:
            **job_resources("collect"),
        params:
            code=rule_code("collect_table.py"),
        script:
            "../scripts/collect_table.py"

    rule figures_scan:
        """Paper Fig. 4a (split masks vs the full-problem mask), 4b (output weights removed per token)
        and 16 (direct training vs IID pretraining plus a split mask)."""
        input:
            **{table: f"{RESULTS}/scan/{table}.parquet" for table in SCAN_TABLES},
        output:
            report(
                directory(f"{FIGURES}/scan"),
                patterns=["{figure}.png"],
                caption="../report/scan.rst",
                category="scan",
                labels={"figure": "{figure}"},
            ),
        log:
            f"{RESULTS}/logs/figures/scan.log",
        conda:
            "../envs/modmask.yaml"
        resources:
            **job_resources("figures"),
        params:
            plots="scan",
            code=rule_code("figures.py", "plotting.scan"),
        script:
            "../scripts/figures.py"

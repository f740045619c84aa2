# CIFAR-10 (paper section 3.6, appendix B.1; Fig. 6, 18-21). Per (architecture, seed): a network, a
# control mask on all classes, one mask per removed class (output layer fixed to the control's), and
# one evaluation job writing per-class accuracy and confusion matrices. Mask stability: for the
# `stability.architecture`, `stability.pairs` random class pairs per network, two masks per pair with
# different seeds, each trained on its own, compared by IoU.
if CIFAR:
    CIFAR_DATA = CIFAR["data"]
    CIFAR_DOWNLOAD = f"{CIFAR_DATA.get('download_dir', 'data/cifar10')}/{cifar_data_module.FOLDER}"
    CIFAR_SOURCE = cifar_data_module.source_folder(CIFAR_DATA, CIFAR_DOWNLOAD)

    wildcard_constraints:
        cifar_mask="|".join(CIFAR_MASKS),
        pair=r"[a-z]+\+[a-z]+",
        mask_seed=r"[01]",

    if CIFAR_DATA.get("download") and not CIFAR_DATA.get("cifar_dir"):

        rule download_cifar10:
            """The official CIFAR-10 archive, checked against its MD5 and unpacked atomically."""
            output:
                directory(CIFAR_DOWNLOAD),
            log:
                f"{RESULTS}/logs/data/cifar10_download.log",
            conda:
                "../envs/modmask.yaml"
            resources:
                **job_resources("generate_data"),
            script:
                "../scripts/cifar10_download.py"

    rule cifar10_data:
        """The uint8 image cache the other CIFAR-10 jobs read (official batches, or the shared JPEG copy)."""
        input:
            # ancient: a fresh copy of the same data set must not rerun every network and mask
            [ancient(path) for path in cifar_data_module.source_files(CIFAR_DATA, CIFAR_SOURCE)],
        output:
            CIFAR_CACHE,
        log:
            f"{RESULTS}/logs/data/cifar10.log",
        conda:
            "../envs/modmask.yaml"
        resources:
            **job_resources("generate_data"),
        params:
            settings=settings_json(CIFAR_DATA),
            code=rule_code("cifar10_data.py"),
        script:
            "../scripts/cifar10_data.py"

    rule cifar10_network:
        """A CNN trained on all ten classes."""
        input:
            data=CIFAR_CACHE,
        output:
            network=f"{CIFAR_DIR}/network.pt",
        log:
            f"{RESULTS}/logs/cifar10/{{arch}}/seed{{seed}}/network.log",
        conda:
            "../envs/modmask.yaml"
        threads: config["threads"]
        resources:
            **job_resources("pretrain"),
        params:
            experiment="cifar10",
            arch=arch_spec_json(CIFAR),
            settings=lambda wc: settings_json(stage_settings(CIFAR, wc.arch, "pretrain")),
            provenance=block_provenance("cifar10", "network", "network.py"),
            code=step_code("network.py", "cifar10"),
        script:
            "../scripts/network.py"

    rule cifar10_mask:
        """The control mask (all classes) or a mask without one class, its output layer the control's."""
        input:
            unpack(cifar_mask_inputs),
        output:
            mask=f"{CIFAR_DIR}/mask_{{cifar_mask}}.pt",
        log:
            f"{RESULTS}/logs/cifar10/{{arch}}/seed{{seed}}/mask_{{cifar_mask}}.log",
        conda:
            "../envs/modmask.yaml"
        threads: config["threads"]
        resources:
            **job_resources("mask"),
        params:
            experiment="cifar10",
            settings=lambda wc: settings_json(stage_settings(CIFAR, wc.arch, "mask")),
            mask=lambda wc: wc.cifar_mask,
            provenance=block_provenance("cifar10", "mask", "mask.py", mask="cifar_mask"),
            code=step_code("mask.py", "cifar10"),
        script:
            "../scripts/mask.py"

    rule cifar10_evaluate:
        """Per-class accuracy and confusion matrices of the network, the control and every removal mask."""
        input:
            data=CIFAR_CACHE,
            network=f"{CIFAR_DIR}/network.pt",
            masks=expand(f"{CIFAR_DIR}/mask_{{cifar_mask}}.pt", cifar_mask=CIFAR_MASKS, allow_missing=True),
        output:
            **{table: f"{CIFAR_DIR}/{table}.parquet" for table in CIFAR_TABLES},
        log:
            f"{RESULTS}/logs/cifar10/{{arch}}/seed{{seed}}/evaluate.log",
        conda:
            "../envs/modmask.yaml"
        threads: config["threads"]
        resources:
            **job_resources("evaluate"),
        params:
            experiment="cifar10",
            provenance=block_provenance("cifar10", "evaluate", "evaluate.py"),
            code=step_code("evaluate.py", "cifar10"),
        script:
            "../scripts/evaluate.py"

    rule cifar10_stability_mask:
        """One of the two masks (mask_seed 0 or 1) trained without a class pair, on its own."""
        input:
            data=CIFAR_CACHE,
            network=f"{CIFAR_DIR}/network.pt",
        output:
            mask=f"{CIFAR_DIR}/stability/{{pair}}_mask{{mask_seed}}.pt",
        log:
            f"{RESULTS}/logs/cifar10/{{arch}}/seed{{seed}}/stability/{{pair}}_mask{{mask_seed}}.log",
        conda:
            "../envs/modmask.yaml"
        threads: config["threads"]
        resources:
            **job_resources("mask"),
        params:
            experiment="cifar10",
            mask=lambda wc: f"{wc.pair}_mask{wc.mask_seed}",
            settings=lambda wc: settings_json(stage_settings(CIFAR, wc.arch, "mask")),
            provenance=block_provenance("cifar10", "mask", "mask.py", pair="pair", mask_seed="mask_seed"),
            code=step_code("mask.py", "cifar10"),
        script:
            "../scripts/mask.py"

    rule cifar10_stability:
        """IoU of the two masks of each class pair of one network."""
        input:
            masks=cifar_stability_masks,
        output:
            stability=f"{CIFAR_DIR}/stability.parquet",
        log:
            f"{RESULTS}/logs/cifar10/{{arch}}/seed{{seed}}/stability.log",
        conda:
            "../envs/modmask.yaml"
        resources:
            **job_resources("evaluate"),
        params:
            experiment="cifar10",
            step="stability",
            provenance=block_provenance("cifar10", "evaluate", "evaluate.py"),
            code=step_code("evaluate.py", "cifar10"),
        script:
            "../scripts/evaluate.py"

    localrules:
        cifar10_tables,
        cifar10_stability_table,

    rule cifar10_tables:
        """The tidy CIFAR-10 tables (accuracy, confusion), each over all architectures and seeds."""
        input:
            [f"{run}/{table}.parquet" for run in run_folders("cifar10") for table in CIFAR_TABLES],
        output:
            **{table: f"{RESULTS}/cifar10/{table}.parquet" for table in CIFAR_TABLES},
        log:
            f"{RESULTS}/logs/cifar10/collect.log",
        conda:
            "../envs/modmask.yaml"
        resources:
            **job_resources("collect"),
        params:
            code=rule_code("collect_table.py"),
        script:
            "../scripts/collect_table.py"

    rule cifar10_stability_table:
        """The tidy mask-stability table over the stability networks."""
        input:
            cifar_stability_tables,
        output:
            f"{RESULTS}/cifar10/stability.parquet",
        log:
            f"{RESULTS}/logs/cifar10/collect_stability.log",
        conda:
            "../envs/modmask.yaml"
        resources:
            **job_resources("collect"),
        params:
            code=rule_code("collect_table.py"),
        script:
            "../scripts/collect_table.py"

    rule figures_cifar10:
        """Paper Fig. 6a, 6b (class-removal drops), 18 (control confusion) and 19-21 (confusion differences)."""
        input:
            **{table: f"{RESULTS}/cifar10/{table}.parquet" for table in CIFAR_TABLES},
        output:
            report(
                directory(f"{FIGURES}/cifar10"),
                patterns=["{figure}.png"],
                caption="../report/cifar10.rst",
                category="cifar10",
                labels={"figure": "{figure}"},
            ),
        log:
            f"{RESULTS}/logs/figures/cifar10.log",
        conda:
            "../envs/modmask.yaml"
        resources:
            **job_resources("figures"),
        params:
            plots="cifar10",
            # ResNets are named by their depth (ResNet-110 at paper scale, shallower ones at quick and smoke scale)
            options=settings_json(
                {
                    "arch_names": {
                        arch: f"ResNet-{spec.get('depth', 110)}"
                        for arch, spec in CIFAR["architectures"].items()
                        if spec["model"] == "resnet"
                    }
                }
            ),
            code=rule_code("figures.py", "plotting.cifar10"),
        script:
            "../scripts/figures.py"

"""Data stage: raw scans (demo or ScanNet) -> label map -> processed store -> splits, masks, class statistics."""


localrules:
    label_map,
    splits,


if IS_DEMO:

    rule demo_scenes:
        output:
            directory(RAW_DIR),
        log:
            f"{LOGS}/demo_scenes.log",
        conda:
            "../../envs/core.yaml"
        threads: config["preprocess"]["workers"]
        params:
            d=config["demo"],
        shell:
            "python -m lgseg demo-scenes --out {output} --seed {params.d[seed]}"
            " --train {params.d[num_train]} --val {params.d[num_val]} --test {params.d[num_test]}"
            " --vertex-spacing {params.d[vertex_spacing]}"
            " --min-objects {params.d[objects_per_room][0]} --max-objects {params.d[objects_per_room][1]}"
            " --workers {threads} 2> {log}"


if DOWNLOAD["enabled"] and not IS_DEMO:

    localrules:
        download_scannet,

    rule download_scannet:
        output:
            DOWNLOAD_MANIFEST,
        log:
            f"{LOGS}/download_scannet.log",
        conda:
            "../../envs/core.yaml"
        params:
            raw=RAW_DIR,
            base_url=DOWNLOAD["base_url"],
            scenes=" ".join(SCENES),
            extra=" ".join(DOWNLOAD["extra_types"]),
            workers=DOWNLOAD["workers"],
            retries=DOWNLOAD["retries"],
        shell:
            "python -m lgseg download --accept-tos --base-url '{params.base_url}' --out {params.raw}"
            " --workers {params.workers} --retries {params.retries} --manifest {output}"
            " --extra-types {params.extra} --scenes {params.scenes} 2> {log}"


rule check_raw:
    input:
        raw_source,
    output:
        str(LAYOUT.raw_manifest),
    log:
        f"{LOGS}/check_raw.log",
    conda:
        "../../envs/core.yaml"
    params:
        raw=RAW_DIR,
        tsv=LABEL_TSV,
        scenes=" ".join(SCENES),
    shell:
        "python -m lgseg check-raw --raw-dir {params.raw} --label-map {params.tsv}"
        " --out {output} --scenes {params.scenes} 2> {log}"


rule label_map:
    input:
        str(LAYOUT.raw_manifest),
    output:
        str(LAYOUT.label_map),
    log:
        f"{LOGS}/label_map.log",
    conda:
        "../../envs/core.yaml"
    params:
        tsv=LABEL_TSV,
    shell:
        "python -m lgseg label-map --label-map {params.tsv} --out {output} 2> {log}"


rule preprocess:
    input:
        manifest=str(LAYOUT.raw_manifest),
        label_map=str(LAYOUT.label_map),
    output:
        str(LAYOUT.shard_manifest("{shard}")),
    log:
        f"{LOGS}/preprocess/shard_{{shard}}.log",
    benchmark:
        f"{LOGS}/preprocess/shard_{{shard}}.benchmark.tsv"
    conda:
        "../../envs/core.yaml"
    threads: config["preprocess"]["workers"]
    params:
        raw=RAW_DIR,
        out=lambda wildcards, output: os.path.dirname(os.path.dirname(output[0])),
        scenes=shard_scenes,
    shell:
        "python -m lgseg preprocess --raw-dir {params.raw} --out {params.out}"
        " --label-map {input.label_map} --workers {threads} --manifest {output}"
        " --scenes {params.scenes} 2> {log}"


rule splits:
    input:
        [str(LAYOUT.shard_manifest(shard)) for shard in SHARDS],
    output:
        [str(LAYOUT.split_list(split)) for split in SPLITS],
    log:
        f"{LOGS}/splits.log",
    conda:
        "../../envs/core.yaml"
    params:
        out_dir=lambda wildcards, output: os.path.dirname(output[0]),
    shell:
        "python -m lgseg splits --manifests {input} --out-dir {params.out_dir} 2> {log}"


rule annotation_masks:
    input:
        str(LAYOUT.split_list("train")),
    output:
        str(LAYOUT.mask("{ratio}")),
    log:
        f"{LOGS}/annotation_masks_{{ratio}}.log",
    # cheap jobs that hold up trainings: first whenever they are ready (here too for class_stats, instance_bank)
    priority: 50
    conda:
        "../../envs/core.yaml"
    threads: config["preprocess"]["workers"]
    params:
        processed=processed_root,
        min_points=config["annotation"]["min_points"],
    shell:
        "python -m lgseg annotation-masks --processed {params.processed} --train-list {input}"
        " --ratio {wildcards.ratio} --min-points {params.min_points} --out {output}"
        " --workers {threads} 2> {log}"


rule class_stats:
    input:
        str(LAYOUT.split_list("train")),
    output:
        str(LAYOUT.class_stats),
    log:
        f"{LOGS}/class_stats.log",
    priority: 50
    conda:
        "../../envs/core.yaml"
    params:
        processed=processed_root,
    shell:
        "python -m lgseg class-stats --processed {params.processed} --train-list {input}"
        " --out {output} 2> {log}"


rule instance_bank:
    input:
        train_list=str(LAYOUT.split_list("train")),
        stats=str(LAYOUT.class_stats),
        masks=lambda wildcards: (
            [] if float(wildcards.ratio) >= 1 else [str(LAYOUT.mask(wildcards.ratio))]
        ),
    output:
        str(LAYOUT.instance_bank("{ratio}")),
    log:
        f"{LOGS}/instance_bank_{{ratio}}.log",
    wildcard_constraints:
        ratio="[0-9.]+",
    priority: 50
    conda:
        "../../envs/core.yaml"
    threads: config["preprocess"]["workers"]
    params:
        processed=processed_root,
        groups=" ".join(config["instance_sampling"]["groups"]),
        power=config["instance_sampling"]["power"],
        masks=lambda wildcards, input: (
            f"--annotation-masks {input.masks}" if input.masks else ""
        ),
    shell:
        "python -m lgseg instance-bank --processed {params.processed} --train-list {input.train_list}"
        " --stats {input.stats} --groups {params.groups} --power {params.power} {params.masks}"
        " --workers {threads} --out {output} 2> {log}"

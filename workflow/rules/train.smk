"""Training stage: one resumable run per experiment of the config (fine-tuning from scratch for now)."""


rule train:
    input:
        training_inputs,
    output:
        f"{RUNS}/{{experiment}}/train_summary.json",
    log:
        f"{LOGS}/train_{{experiment}}.log",
    benchmark:
        f"{LOGS}/train_{{experiment}}.benchmark.tsv"
    conda:
        "../../envs/core.yaml"
    threads: max(1, config["train"]["gpus"]) * max(1, config["train"]["workers"])
    resources:
        gpu=config["train"]["gpus"],  # the SLURM executor requests --gpus=N
    params:
        config_json=run_config,
        run_dir=lambda wildcards, output: os.path.dirname(output[0]),
        # one DDP process per GPU when there are several (lgseg.train.distributed)
        launcher=(
            f"torchrun --standalone --nproc-per-node {config['train']['gpus']}"
            if config["train"]["gpus"] > 1
            else "python"
        ),
    shell:
        "mkdir -p {params.run_dir} && printf '%s\\n' {params.config_json:q} > {params.run_dir}/config.json"
        " && {params.launcher} -m lgseg train --config {params.run_dir}/config.json"
        " --experiment {wildcards.experiment} --run-dir {params.run_dir} --summary {output} 2> {log}"


rule evaluate:
    input:
        f"{RUNS}/{{experiment}}/train_summary.json",
    output:
        f"{RUNS}/{{experiment}}/metrics.json",
    log:
        f"{LOGS}/evaluate_{{experiment}}.log",
    conda:
        "../../envs/core.yaml"
    params:
        run_dir=lambda wildcards, input: os.path.dirname(input[0]),
    shell:
        "python -m lgseg evaluate --config {params.run_dir}/config.json --run-dir {params.run_dir}"
        " --split val --out {output} 2> {log}"

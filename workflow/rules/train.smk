"""Training stage: language-grounded pre-training runs, then one resumable fine-tuning run per experiment."""


wildcard_constraints:
    name="[^/]+",


# one DDP process per GPU when there are several (lgseg.train.distributed)
LAUNCHER = (
    f"torchrun --standalone --nproc-per-node {config['train']['gpus']}"
    if config["train"]["gpus"] > 1
    else "python"
)


rule pretrain:
    input:
        training_inputs("pretraining"),
    output:
        f"{RUNS}/pretrain/{{name}}/train_summary.json",
    log:
        f"{LOGS}/pretrain_{{name}}.log",
    benchmark:
        f"{LOGS}/pretrain_{{name}}.benchmark.tsv"
    conda:
        "../../envs/core.yaml"
    threads: max(1, config["train"]["gpus"]) * max(1, config["train"]["workers"])
    resources:
        gpu=config["train"]["gpus"],  # the SLURM executor requests --gpus=N
    params:
        config_json=run_config("pretraining"),
        run_dir=lambda wildcards, output: os.path.dirname(output[0]),
        launcher=LAUNCHER,
    shell:
        "mkdir -p {params.run_dir} && printf '%s\\n' {params.config_json:q} > {params.run_dir}/config.json"
        " && {params.launcher} -m lgseg train --config {params.run_dir}/config.json"
        " --pretraining {wildcards.name} --run-dir {params.run_dir} --summary {output} 2> {log}"


rule train:
    input:
        training_inputs("experiment"),
    output:
        f"{RUNS}/{{name}}/train_summary.json",
    log:
        f"{LOGS}/train_{{name}}.log",
    benchmark:
        f"{LOGS}/train_{{name}}.benchmark.tsv"
    conda:
        "../../envs/core.yaml"
    threads: max(1, config["train"]["gpus"]) * max(1, config["train"]["workers"])
    resources:
        gpu=config["train"]["gpus"],  # the SLURM executor requests --gpus=N
    params:
        config_json=run_config("experiment"),
        run_dir=lambda wildcards, output: os.path.dirname(output[0]),
        launcher=LAUNCHER,
    shell:
        "mkdir -p {params.run_dir} && printf '%s\\n' {params.config_json:q} > {params.run_dir}/config.json"
        " && {params.launcher} -m lgseg train --config {params.run_dir}/config.json"
        " --experiment {wildcards.name} --run-dir {params.run_dir} --summary {output} 2> {log}"


rule evaluate:
    input:
        f"{RUNS}/{{name}}/train_summary.json",
    output:
        f"{RUNS}/{{name}}/metrics.json",
    log:
        f"{LOGS}/evaluate_{{name}}.log",
    conda:
        "../../envs/core.yaml"
    params:
        run_dir=lambda wildcards, input: os.path.dirname(input[0]),
    shell:
        "python -m lgseg evaluate --config {params.run_dir}/config.json --run-dir {params.run_dir}"
        " --split val --out {output} 2> {log}"

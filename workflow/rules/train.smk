"""Training stage: one run specification per run, language-grounded pre-trainings, one resumable fine-tuning per
experiment, evaluation. What a run reads and what re-runs it come from its specification (lgseg.runs).
"""


wildcard_constraints:
    name="[^/]+",
    kind="pretraining|experiment",


localrules:
    run_spec,


# torch's compute threads per training process: one per loader worker, so a job keeps to the cores it claims
# (`threads`) and `--cores N` runs N / threads jobs at once (bench/training_jobs.sh: two 1-thread jobs on 2 cores
# train 1.55x faster than one 2-thread job)
COMPUTE_THREADS = max(1, config["train"]["workers"])

# one DDP process per GPU when there are several (lgseg.train.distributed)
LAUNCHER = (
    f"torchrun --standalone --nproc-per-node {config['train']['gpus']}"
    if config["train"]["gpus"] > 1
    else "python"
)


# The specification is rewritten only when it changes (params trigger); the training rules depend on it, so a
# change of what the run is re-runs it and nothing else does. The engine then decides by the run's identity
# (settings + input contents): reuse a finished run, resume an unfinished one, or start fresh.
rule run_spec:
    output:
        spec_path("{kind}", "{name}"),
    log:
        f"{LOGS}/run_spec_{{kind}}_{{name}}.log",
    conda:
        "../../envs/core.yaml"
    params:
        spec=lambda wildcards: RUN_SPECS[(wildcards.kind, wildcards.name)].to_json(),
    shell:
        "printf '%s\\n' {params.spec:q} > {output} 2> {log}"


rule pretrain:
    input:
        unpack(run_inputs("pretraining")),
    output:
        run_path("pretraining", "{name}", SUMMARY),
    log:
        f"{LOGS}/pretrain_{{name}}.log",
    benchmark:
        f"{LOGS}/pretrain_{{name}}.benchmark.tsv"
    # pre-trainings before fine-tunings (and the cheap data jobs feeding them first of all, priority 50): each
    # holds up several fine-tunings, which then fill the cores to the end of the run
    priority: 10
    conda:
        TRAIN_ENV
    threads: max(1, config["train"]["gpus"]) * max(1, config["train"]["workers"])
    resources:
        gpu=config["train"]["gpus"],  # the SLURM executor requests --gpus=N
    params:
        launcher=LAUNCHER,
        compute_threads=COMPUTE_THREADS,
    shell:
        "OMP_NUM_THREADS={params.compute_threads} {params.launcher} -m lgseg train --spec {input.spec} "
        "--summary {output} 2> {log}"


rule train:
    input:
        unpack(run_inputs("experiment")),
    output:
        run_path("experiment", "{name}", SUMMARY),
    log:
        f"{LOGS}/train_{{name}}.log",
    benchmark:
        f"{LOGS}/train_{{name}}.benchmark.tsv"
    conda:
        TRAIN_ENV
    threads: max(1, config["train"]["gpus"]) * max(1, config["train"]["workers"])
    resources:
        gpu=config["train"]["gpus"],  # the SLURM executor requests --gpus=N
    params:
        launcher=LAUNCHER,
        compute_threads=COMPUTE_THREADS,
    shell:
        "OMP_NUM_THREADS={params.compute_threads} {params.launcher} -m lgseg train --spec {input.spec} "
        "--summary {output} 2> {log}"


rule evaluate:
    input:
        summary=run_path("experiment", "{name}", SUMMARY),
        spec=spec_path("experiment", "{name}"),
    output:
        run_path("experiment", "{name}", METRICS),
    log:
        f"{LOGS}/evaluate_{{name}}.log",
    conda:
        TRAIN_ENV
    shell:
        "OMP_NUM_THREADS={threads} python -m lgseg evaluate --spec {input.spec} --split val --out {output} "
        "2> {log}"

"""Report stage: paper tables and figures, made only from pipeline outputs."""


localrules:
    figure_class_distribution,
    table1,


rule table1:
    input:
        expand(f"{RUNS}/{{name}}/metrics.json", name=EXPERIMENTS),
    output:
        csv=f"{RESULTS}/table1.csv",
        markdown=f"{RESULTS}/table1.md",
    log:
        f"{LOGS}/table1.log",
    conda:
        "../../envs/core.yaml"
    params:
        runs=lambda wildcards, input: " ".join(
            f"{experiment_label(e)!r}={path}" for e, path in zip(EXPERIMENTS, input)
        ),
        dataset=DATASET,
    shell:
        "python -m lgseg table1 --runs {params.runs} --out {output.csv} --markdown {output.markdown}"
        " --dataset {params.dataset} 2> {log}"


rule figure_class_distribution:
    input:
        f"{PROCESSED}/class_stats.csv",
    output:
        report(
            f"{RESULTS}/figures/fig4_class_distribution.png",
            caption="../report/fig4.rst",
            category="Dataset",
        ),
    log:
        f"{LOGS}/figure_class_distribution.log",
    conda:
        "../../envs/core.yaml"
    params:
        title=f"Fig. 4 ({DATASET}): instances and labelled points per class, train split",
    shell:
        "python -m lgseg plot-class-stats --stats {input} --out {output} --title '{params.title}' 2> {log}"

"""Report stage: paper tables and figures, made only from pipeline outputs."""


localrules:
    figure_class_distribution,


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

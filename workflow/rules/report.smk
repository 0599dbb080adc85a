"""Report stage: paper tables and figures, made only from pipeline outputs; each shows its report group's runs."""


localrules:
    figure_class_distribution,
    table1,
    table2,
    table3,
    text_encoder_ablation,
    limited_annotations,
    fig5,


rule table1:
    input:
        [run_path("experiment", name, METRICS) for name in REPORTS["table1"]],
    output:
        csv=report(
            str(LAYOUT.result("table1.csv")),
            caption="../report/table1.rst",
            category="Results",
        ),
        markdown=str(LAYOUT.result("table1.md")),
    log:
        f"{LOGS}/table1.log",
    conda:
        "../../envs/core.yaml"
    params:
        # label=metrics pairs as one static value: a renamed label re-runs this rule (params trigger)
        runs=" ".join(
            f"{experiment_label(e)!r}={run_path('experiment', e, METRICS)}"
            for e in REPORTS["table1"]
        ),
        dataset=DATASET,
    shell:
        "python -m lgseg table1 --runs {params.runs} --out {output.csv} --markdown {output.markdown}"
        " --dataset {params.dataset} 2> {log}"


rule table2:
    input:
        [run_path("experiment", name, METRICS) for name in REPORTS["table2"]],
    output:
        csv=report(
            str(LAYOUT.result("table2.csv")),
            caption="../report/table2.rst",
            category="Results",
        ),
        markdown=str(LAYOUT.result("table2.md")),
    log:
        f"{LOGS}/table2.log",
    conda:
        "../../envs/core.yaml"
    params:
        runs=" ".join(
            f"{experiment_label(e)!r}={run_path('experiment', e, METRICS)}"
            for e in REPORTS["table2"]
        ),
        dataset=DATASET,
    shell:
        "python -m lgseg table2 --runs {params.runs} --out {output.csv} --markdown {output.markdown}"
        " --dataset {params.dataset} 2> {log}"


rule table3:
    input:
        metrics=[run_path("experiment", name, METRICS) for name in REPORTS["table3"]],
        specs=[spec_path("experiment", name) for name in REPORTS["table3"]],
    output:
        csv=report(
            str(LAYOUT.result("table3.csv")),
            caption="../report/table3.rst",
            category="Results",
        ),
        markdown=str(LAYOUT.result("table3.md")),
    log:
        f"{LOGS}/table3.log",
    conda:
        "../../envs/core.yaml"
    params:
        # one static value, so a renamed label re-runs this rule (params trigger)
        runs=" ".join(
            f"--run {experiment_label(e)!r} {spec_path('experiment', e)} {run_path('experiment', e, METRICS)}"
            for e in REPORTS["table3"]
        ),
        dataset=DATASET,
    shell:
        "python -m lgseg table3 {params.runs} --out {output.csv} --markdown {output.markdown}"
        " --dataset {params.dataset} 2> {log}"


ABLATION_RUNS = text_ablation_rows(config)  # (experiment, its language pre-training)


rule text_encoder_ablation:
    input:
        metrics=[run_path("experiment", e, METRICS) for e, _ in ABLATION_RUNS],
        specs=[spec_path("pretraining", p) for _, p in ABLATION_RUNS],
        anchors=[
            RUN_SPECS[("pretraining", p)].files["anchors"] for _, p in ABLATION_RUNS
        ],
    output:
        csv=report(
            str(LAYOUT.result("text_encoder_ablation.csv")),
            caption="../report/text_encoder_ablation.rst",
            category="Results",
        ),
        markdown=str(LAYOUT.result("text_encoder_ablation.md")),
    log:
        f"{LOGS}/text_encoder_ablation.log",
    conda:
        "../../envs/core.yaml"
    params:
        # one static value, so a renamed label re-runs this rule (params trigger)
        runs=" ".join(
            f"--run {experiment_label(e)!r} {spec_path('pretraining', p)} {run_path('experiment', e, METRICS)}"
            for e, p in ABLATION_RUNS
        ),
        dataset=DATASET,
    shell:
        "python -m lgseg text-encoder-ablation {params.runs} --out {output.csv} --markdown {output.markdown}"
        " --dataset {params.dataset} 2> {log}"


rule figure_class_distribution:
    input:
        str(LAYOUT.class_stats),
    output:
        report(
            str(LAYOUT.figure("fig4_class_distribution.png")),
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


rule limited_annotations:
    input:
        [run_path("experiment", run, METRICS) for _, _, run in STUDY_RUNS],
    output:
        csv=report(
            str(LAYOUT.result("limited_annotations.csv")),
            caption="../report/limited_annotations.rst",
            category="Results",
        ),
        markdown=str(LAYOUT.result("limited_annotations.md")),
    log:
        f"{LOGS}/limited_annotations.log",
    conda:
        "../../envs/core.yaml"
    params:
        # one static value, so a renamed label or another ratio re-runs this rule (params trigger)
        runs=" ".join(
            f"--run {experiment_label(row)!r} {ratio:g} {run_path('experiment', run, METRICS)}"
            for row, ratio, run in STUDY_RUNS
        ),
        dataset=DATASET,
    shell:
        "python -m lgseg limited-annotations {params.runs} --out {output.csv} --markdown {output.markdown}"
        " --dataset {params.dataset} 2> {log}"


rule fig5:
    input:
        str(LAYOUT.result("limited_annotations.csv")),
    output:
        report(
            str(LAYOUT.figure("fig5_limited_annotations.png")),
            caption="../report/fig5.rst",
            category="Results",
        ),
    log:
        f"{LOGS}/fig5.log",
    conda:
        "../../envs/core.yaml"
    params:
        title=f"Fig. 5 ({DATASET}): semantic segmentation with limited annotations",
    shell:
        "python -m lgseg plot-limited-annotations --table {input} --out {output} --title '{params.title}'"
        " 2> {log}"


rule fig7:
    input:
        summaries=[run_path("pretraining", name, SUMMARY) for _, name in TSNE_PANELS],
        specs=[spec_path("pretraining", name) for _, name in TSNE_PANELS],
    output:
        report(
            str(LAYOUT.figure("fig7_tsne.png")),
            caption="../report/fig7.rst",
            category="Results",
        ),
    log:
        f"{LOGS}/fig7.log",
    benchmark:
        f"{LOGS}/fig7.benchmark.tsv"
    conda:
        TRAIN_ENV
    threads: max(1, config["train"]["workers"])
    params:
        # one static value, so a renamed label re-runs this rule (params trigger)
        runs=" ".join(
            f"--run {label!r} {spec_path('pretraining', name)}"
            for label, name in TSNE_PANELS
        ),
        classes=" ".join(repr(name) for name in TSNE["classes"]),
        sampling=(
            f"--points-per-class {TSNE['points_per_class']} --seed {TSNE['seed']}"
            f" --pca-dims {TSNE['pca_dims']} --perplexity {TSNE['perplexity']}"
        ),
        title=f"Fig. 7 ({DATASET}): t-SNE of pre-trained features, val vertices",
    shell:
        "OMP_NUM_THREADS={threads} python -m lgseg plot-tsne {params.runs} --classes {params.classes}"
        " {params.sampling} --out {output} --title '{params.title}' 2> {log}"


# Fig. 6 (semantic) and Fig. 8 (instance): the same scenes, the runs of their report groups
QUALITATIVE = config["figures"]["qualitative"]
QUALITATIVE_FIGURES = {
    "fig6_qualitative": ("fig6", "semantic"),
    "fig8_instances": ("fig8", "instance"),
}


rule qualitative_figure:
    input:
        summaries=lambda w: [
            run_path("experiment", e, SUMMARY)
            for e in REPORTS[QUALITATIVE_FIGURES[w.figure][0]]
        ],
        specs=lambda w: [
            spec_path("experiment", e)
            for e in REPORTS[QUALITATIVE_FIGURES[w.figure][0]]
        ],
    output:
        report(
            str(LAYOUT.figure("{figure}.png")),
            caption="../report/qualitative.rst",
            category="Results",
        ),
    log:
        f"{LOGS}/{{figure}}.log",
    benchmark:
        f"{LOGS}/{{figure}}.benchmark.tsv"
    wildcard_constraints:
        figure="|".join(QUALITATIVE_FIGURES),
    conda:
        TRAIN_ENV
    threads: max(1, config["train"]["workers"])
    params:
        task=lambda w: QUALITATIVE_FIGURES[w.figure][1],
        # one static value, so a renamed label re-runs this rule (params trigger)
        runs=lambda w: " ".join(
            f"--run {experiment_label(e)!r} {spec_path('experiment', e)}"
            for e in REPORTS[QUALITATIVE_FIGURES[w.figure][0]]
        ),
        scenes=" ".join(FIGURE_SCENES),
        drawing=f"--max-height {QUALITATIVE['max_height']} --panel-width {QUALITATIVE['panel_width']}",
        title=lambda w: (
            f"Fig. {QUALITATIVE_FIGURES[w.figure][0][3:]} ({DATASET}):"
            f" {QUALITATIVE_FIGURES[w.figure][1]} segmentation of val scenes"
        ),
    shell:
        "OMP_NUM_THREADS={threads} python -m lgseg plot-qualitative --task {params.task} {params.runs}"
        " --scenes {params.scenes} {params.drawing} --out {output} --title '{params.title}' 2> {log}"

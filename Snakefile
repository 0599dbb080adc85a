"""lgseg: ScanNet200 language-grounded semantic segmentation, from raw scans to the paper's tables and figures."""

import os
import re
import sys

sys.path.insert(0, os.path.join(workflow.basedir, "src"))

from lgseg.config import validate_config

# every rule runs `python -m lgseg` from this checkout, also inside conda envs and on cluster nodes
shell.prefix(
    f"set -euo pipefail; export PYTHONPATH='{os.path.join(workflow.basedir, 'src')}'; "
)


configfile: os.path.join(workflow.basedir, "config.yaml")


config = validate_config(
    config, workflow.source_path("workflow/schemas/config.schema.yaml")
)


include: "workflow/rules/common.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/text.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/report.smk"


rule all:
    default_target: True
    input:
        str(LAYOUT.result("table1.csv")),
        [str(LAYOUT.result("table2.csv"))] if REPORTS["table2"] else [],
        [str(LAYOUT.result("table3.csv"))] if REPORTS["table3"] else [],
        (
            [str(LAYOUT.result("text_encoder_ablation.csv"))]
            if REPORTS["text_encoder_ablation"]
            else []
        ),
        str(LAYOUT.figure("fig4_class_distribution.png")),
        [str(LAYOUT.text_anchors_figure(encoder)) for encoder in TEXT_ENCODERS],
        str(LAYOUT.class_stats),
        [str(LAYOUT.mask(ratio)) for ratio in RATIOS],
        [run_path("experiment", name, METRICS) for name in EXPERIMENTS],
        [str(LAYOUT.figure("fig5_limited_annotations.png"))] if STUDY_RUNS else [],
        [str(LAYOUT.figure("fig7_tsne.png"))] if TSNE_PANELS else [],
        [
            str(LAYOUT.figure(f"{figure}.png"))
            for figure, (group, _) in QUALITATIVE_FIGURES.items()
            if REPORTS[group] and FIGURE_SCENES
        ],


onerror:
    print_failed_logs(log)

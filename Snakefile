"""lgseg: ScanNet200 language-grounded semantic segmentation, from raw scans to the paper's tables and figures."""

import os
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
        f"{RESULTS}/table1.csv",
        f"{RESULTS}/figures/fig4_class_distribution.png",
        f"{RESULTS}/figures/text_anchors_{TEXT['encoder']}.png",
        f"{PROCESSED}/class_stats.csv",
        expand(f"{PROCESSED}/masks/annotated_{{ratio}}.npz", ratio=RATIOS),

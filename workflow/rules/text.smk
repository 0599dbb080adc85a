"""Text stage: class-name anchors of each text encoder the runs use, cached once (and their similarity heat map).
Each encoder's job reads only the `text` settings its anchors depend on (lgseg.text.encoders.ENCODER_SETTINGS).
"""


rule text_anchors:
    input:
        lambda w: (
            [TEXT["checkpoint"]]
            if encoder_reads(w, "checkpoint") and TEXT["checkpoint"]
            else []
        ),
    output:
        anchors=str(LAYOUT.text_anchors("{encoder}")),
        figure=report(
            str(LAYOUT.text_anchors_figure("{encoder}")),
            caption="../report/text_anchors.rst",
            category="Dataset",
        ),
    log:
        f"{LOGS}/text_anchors_{{encoder}}.log",
    wildcard_constraints:
        encoder="|".join(TEXT_ENCODERS),
    conda:
        "../../envs/core.yaml"
    params:
        checkpoint=lambda w, input: f"--checkpoint {input[0]}" if input else "",
        quick_gelu=lambda w: (
            ("--quick-gelu" if TEXT["quick_gelu"] else "--no-quick-gelu")
            if encoder_reads(w, "quick_gelu")
            else ""
        ),
        template=TEXT["template"],
    shell:
        "python -m lgseg text-anchors --encoder {wildcards.encoder} {params.checkpoint} {params.quick_gelu}"
        " --template {params.template:q} --out {output.anchors} --report {output.figure} > {log} 2>&1"

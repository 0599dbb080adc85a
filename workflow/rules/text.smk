"""Text stage: class-name anchors of each text encoder the runs use, cached once (and their similarity heat map)."""


rule text_anchors:
    input:
        lambda w: (
            [TEXT["checkpoint"]]
            if w.encoder == "clip-vit-b32" and TEXT["checkpoint"]
            else []
        ),
    output:
        anchors=str(LAYOUT.text_anchors("{encoder}")),
        figure=report(
            str(LAYOUT.figure("text_anchors_{encoder}.png")),
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
        checkpoint=lambda w: (
            f"--checkpoint {TEXT['checkpoint']}"
            if w.encoder == "clip-vit-b32" and TEXT["checkpoint"]
            else ""
        ),
        quick_gelu="--quick-gelu" if TEXT["quick_gelu"] else "--no-quick-gelu",
        template=TEXT["template"],
    shell:
        "python -m lgseg text-anchors --encoder {wildcards.encoder} {params.checkpoint} {params.quick_gelu}"
        " --template {params.template:q} --out {output.anchors} --report {output.figure} > {log} 2>&1"

"""Text stage: class-name anchors of the configured text encoder, cached once (and their similarity heat map)."""


rule text_anchors:
    input:
        [TEXT["checkpoint"]] if TEXT["checkpoint"] else [],
    output:
        anchors=TEXT_ANCHORS,
        figure=report(
            str(LAYOUT.figure(f"text_anchors_{TEXT['encoder']}.png")),
            caption="../report/text_anchors.rst",
            category="Dataset",
        ),
    log:
        f"{LOGS}/text_anchors.log",
    conda:
        "../../envs/core.yaml"
    params:
        encoder=TEXT["encoder"],
        checkpoint=f"--checkpoint {TEXT['checkpoint']}" if TEXT["checkpoint"] else "",
        quick_gelu="--quick-gelu" if TEXT["quick_gelu"] else "--no-quick-gelu",
        template=TEXT["template"],
    shell:
        "python -m lgseg text-anchors --encoder {params.encoder} {params.checkpoint} {params.quick_gelu}"
        " --template {params.template:q} --out {output.anchors} --report {output.figure} > {log} 2>&1"

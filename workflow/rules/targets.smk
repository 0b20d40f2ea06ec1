# Stage targets for partial reruns: `snakemake --cores all <stage>` builds that stage and what
# it needs, nothing after it.


rule data:
    input:
        stage_targets("DATA"),


rule drr:
    input:
        stage_targets("DRR"),


rule segmentation:
    input:
        stage_targets("SEGMENTATION"),


rule generators:
    input:
        stage_targets("GENERATORS"),


rule samples:
    input:
        stage_targets("SAMPLES"),


rule classifiers:
    input:
        stage_targets("CLASSIFIERS"),


rule checks:
    input:
        stage_targets("CHECKS"),


rule stats:
    input:
        stage_targets("STATS"),


rule figures:
    input:
        stage_targets("FIGURES"),

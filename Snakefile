# kneesynth: synthetic knee radiograph studies, reproduced end to end.
#
#   snakemake --cores all                                  demo on generated phantoms (CPU)
#   snakemake --cores all --configfile config/paper.yaml   the papers' settings (real data, GPU)
#   snakemake --cores all --profile slurm                  on a Slurm cluster
#   snakemake --cores all <stage>                          one stage: data drr segmentation
#                                                          generators samples classifiers checks
#                                                          stats figures
from snakemake.utils import min_version

min_version("9.0")


configfile: "config/config.yaml"


include: "workflow/rules/common.smk"


rule all:
    default_target: True
    input:
        all_targets,


include: "workflow/rules/data.smk"
include: "workflow/rules/drr.smk"
include: "workflow/rules/segmentation.smk"
include: "workflow/rules/study_a.smk"
include: "workflow/rules/study_b.smk"
include: "workflow/rules/classifiers.smk"
include: "workflow/rules/checks.smk"
include: "workflow/rules/tables.smk"
include: "workflow/rules/targets.smk"

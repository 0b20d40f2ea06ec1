# kneesynth: synthetic knee radiograph studies, reproduced end to end.
#
#   snakemake --cores all                                  demo on generated phantoms (CPU)
#   snakemake --cores all --configfile config/paper.yaml   the papers' settings (real data, GPU)
#   snakemake --cores all --profile slurm                  on a Slurm cluster
#   snakemake --cores all <stage>                          one stage: data drr segmentation
#                                                          generators samples classifiers checks
#                                                          stats figures
import os
import sys

from snakemake.utils import min_version

min_version("9.0")

# Parse time runs a few light helpers of kneesynth (config validation, the volume names). They
# come from this workflow's own src/ when kneesynth is not installed beside Snakemake, as with
# --software-deployment-method conda from an environment that holds only Snakemake: they need
# PyYAML and jsonschema (Snakemake's own dependencies) and numpy (which the Slurm plugin brings,
# and the global environment below, under conda deployment). Jobs run the installed kneesynth.
try:
    import kneesynth
except ImportError:
    sys.path.insert(0, os.path.join(workflow.basedir, "src"))
# envs/kneesynth.yaml installs kneesynth from this folder: pip expands this variable, which the
# workflow sets (the user need not), in conda's environment build.
os.environ.update(KNEESYNTH_WORKFLOW_DIR=workflow.basedir)


conda: "envs/workflow.yaml"


configfile: "config/config.yaml"


report: "workflow/report/workflow.rst"


include: "workflow/rules/common.smk"


rule all:
    default_target: True
    input:
        all_targets,
        "results/report/scorecard_headline.rst",
    message:
        "every stage of the three studies is up to date"


include: "workflow/rules/data.smk"
include: "workflow/rules/drr.smk"
include: "workflow/rules/segmentation.smk"
include: "workflow/rules/study_a.smk"
include: "workflow/rules/study_b.smk"
include: "workflow/rules/classifiers.smk"
include: "workflow/rules/checks.smk"
include: "workflow/rules/tables.smk"
include: "workflow/rules/report.smk"
include: "workflow/rules/targets.smk"


# What the run found, where it is, and the next command (kneesynth.summary: standard library
# only, so it runs in Snakemake's own process whatever is installed there).
onsuccess:
    from kneesynth.summary import run_summary

    print("\n".join(run_summary("results", config)))


onerror:
    from kneesynth.summary import failure_summary

    print("\n".join(failure_summary(log)))

# Stage targets for partial reruns: `snakemake --cores all <stage>` builds that stage and what
# it needs, nothing after it. Each stage file lists its final outputs at its top.
STAGE_TARGETS = {
    "data": DATA_DATA,
    "drr": DRR_DRR,
    "segmentation": SEG_SEGMENTATION,
    "generators": STUDY_A_GENERATORS + STUDY_B_GENERATORS,
    "samples": STUDY_A_SAMPLES + STUDY_B_SAMPLES,
    "classifiers": STUDY_B_CLASSIFIERS,
    "checks": CHECKS_CHECKS + CHECKS_FIGURES,
    "stats": STUDY_A_STATS + STUDY_B_STATS + STUDY_B_CLASSIFIER_STATS + LEAD_STATS,
    "figures": SEG_FIGURES
    + STUDY_A_FIGURES
    + STUDY_B_FIGURES
    + STUDY_B_CLASSIFIER_FIGURES
    + CHECKS_FIGURES,
}


rule data:
    input:
        STAGE_TARGETS["data"],


rule drr:
    input:
        STAGE_TARGETS["drr"],


rule segmentation:
    input:
        STAGE_TARGETS["segmentation"],


rule generators:
    input:
        STAGE_TARGETS["generators"],


rule samples:
    input:
        STAGE_TARGETS["samples"],


rule classifiers:
    input:
        STAGE_TARGETS["classifiers"],


rule checks:
    input:
        STAGE_TARGETS["checks"],


rule stats:
    input:
        STAGE_TARGETS["stats"],


rule figures:
    input:
        STAGE_TARGETS["figures"],

# Stage drr: forward projection of every standardised CT volume into DRRs and bone projections.
# ASTRA 3D cone beam (FP3D_CUDA) on a GPU; ASTRA 2D fan beam as one sparse system-matrix
# product on CPU (see src/kneesynth/projection/drr.py). VOLUMES comes from common.smk.

DRR_DRR = expand("results/drr/{volume}.npz", volume=VOLUMES)


rule project_drr:
    input:
        ct="results/ct/{volume}.nii.gz",
    output:
        drr="results/drr/{volume}.npz",
    log:
        "logs/project_drr/{volume}.log",
    benchmark:
        "benchmarks/project_drr/{volume}.tsv"
    conda:
        "../../envs/kneesynth.yaml"
    threads: 1
    params:
        projection=config["projection"],
    script:
        "../scripts/project_drr.py"

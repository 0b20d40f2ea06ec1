"""Assemble the study A dataset from per-volume DRRs, segmentations and the volume split."""

from kneesynth.study_a.dataset import assemble_dataset
from kneesynth.workflow import run_script


def main(snakemake):
    assemble_dataset(
        snakemake.input.drr,
        snakemake.input.segmentation,
        snakemake.input.splits,
        snakemake.output[0],
        image_size=int(snakemake.params.study_a["image_size"]),
    )


run_script(main, snakemake)

"""Generate the study A test images of one model under one condition."""

from kneesynth.study_a.sample import sample_test_images
from kneesynth.workflow import run_script


def main(snakemake):
    sample_test_images(
        snakemake.wildcards.model,
        snakemake.wildcards.condition,
        snakemake.input.dataset,
        snakemake.input.weights,
        snakemake.output[0],
        snakemake.params.study_a,
        snakemake.params.compute,
    )


run_script(main, snakemake)

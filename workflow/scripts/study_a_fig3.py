"""Fig. 3 of Mei et al.: generated DRRs of every model beside the ground truth, error maps."""

from kneesynth.study_a.figures import figure3
from kneesynth.workflow import run_script


def main(snakemake):
    figure3(
        list(snakemake.input),
        snakemake.output.png,
        snakemake.output.pdf,
        cases=snakemake.params.cases,
    )


run_script(main, snakemake)

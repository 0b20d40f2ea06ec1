"""Table I (mean and std beside the paper's) and the paired Wilcoxon tests of study A."""

from kneesynth.study_a import paired_tests, table1
from kneesynth.workflow import run_script


def main(snakemake):
    table1(snakemake.input[0], snakemake.output.table)
    paired_tests(snakemake.input[0], snakemake.output.paired_tests)


run_script(main, snakemake)

from kneesynth.io import write_tsv
from kneesynth.tables import join_paired_tests
from kneesynth.workflow import run_script


def main(snakemake):
    write_tsv(snakemake.output[0], join_paired_tests(snakemake.input.tests))


run_script(main, snakemake)

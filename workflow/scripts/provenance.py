from kneesynth.io import write_tsv
from kneesynth.report.provenance import provenance_rows
from kneesynth.workflow import run_script


def main(snakemake):
    rows = provenance_rows(snakemake.params.config, list(snakemake.params.config_files))
    write_tsv(snakemake.output[0], rows)


run_script(main, snakemake)

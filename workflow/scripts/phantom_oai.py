"""Rule phantom_oai: config -> results/phantom/oai/{train,val,test}/{0..4}/*.png (Chen layout)."""

from kneesynth.workflow import run_script


def main(snakemake):
    from kneesynth.data.phantom_oai import radiograph_table, write_phantom_oai
    from kneesynth.io import write_tsv

    radiographs = write_phantom_oai(
        snakemake.params.oai,
        snakemake.params.seed,
        snakemake.params.split_fractions,
        snakemake.output.oai,
    )
    write_tsv(snakemake.output.truth, radiograph_table(radiographs))


run_script(main, snakemake)

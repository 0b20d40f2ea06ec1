"""Rule ingest_ct: one SICAS/SMIR (or phantom) volume -> results/ct/{volume}.nii.gz (HU float32)."""

from kneesynth.workflow import run_script


def main(snakemake):
    from kneesynth.data.ingest import ingest_volume

    ingest_volume(snakemake.input.volume, snakemake.output.volume, snakemake.params.ingest)


run_script(main, snakemake)

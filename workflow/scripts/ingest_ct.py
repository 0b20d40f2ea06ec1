"""Rule ingest_ct: SICAS/SMIR (or phantom) volumes -> results/ct/{volume}.nii.gz (HU float32)."""

from kneesynth.workflow import run_script


def main(snakemake):
    from kneesynth.ingest import ingest_volume

    for source, output in zip(snakemake.input.volumes, snakemake.output.volumes, strict=True):
        ingest_volume(source, output, snakemake.params.ingest)


run_script(main, snakemake)

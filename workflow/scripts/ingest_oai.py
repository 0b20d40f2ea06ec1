"""Rule ingest_oai: OAI folder (Chen layout, or the raw DICOM crops + KL tables) ->
results/oai/manifest.tsv and results/splits/participants.tsv."""

from kneesynth.workflow import run_script


def main(snakemake):
    from kneesynth.data.oai import ingest_oai

    ingest_oai(
        snakemake.input.oai,
        snakemake.params.oai_format,
        snakemake.output.manifest,
        snakemake.output.participants,
        snakemake.params.ingest,
        snakemake.params.splits,
        snakemake.params.seed,
        kl_tables=list(snakemake.input.kl_tables),
        crop_dirs=list(snakemake.input.crops) if snakemake.params.oai_format == "raw" else None,
    )


run_script(main, snakemake)

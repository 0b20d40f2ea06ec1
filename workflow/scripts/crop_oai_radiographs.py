"""Rule crop_oai_radiographs: one batch of raw OAI DICOM radiographs -> results/oai/crops/{batch}/
(8-bit PNG knee crops, radiographs.tsv, skipped.tsv)."""

from kneesynth.workflow import run_script


def main(snakemake):
    from kneesynth.data.oai_raw import crop_oai_batch

    crop_oai_batch(
        snakemake.params.oai_dir,
        snakemake.wildcards.batch,
        snakemake.output.crops,
        snakemake.params.ingest,
    )


run_script(main, snakemake)

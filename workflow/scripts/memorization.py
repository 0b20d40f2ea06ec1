"""Rules memorization_study_a / memorization_study_b: max correlation of every synthetic image
with the training set, calibrated on real held-out images (kneesynth.checks.memorization)."""

from kneesynth.workflow import run_script


def main(snakemake):
    from kneesynth.checks.memorization_report import (
        save_top_pairs,
        study_a_memorization,
        study_b_memorization,
    )
    from kneesynth.compute import device_for
    from kneesynth.io import write_tsv

    settings = snakemake.params.settings
    device = device_for(snakemake.params.compute)
    if hasattr(snakemake.input, "dataset"):
        summary, per_image, pairs = study_a_memorization(
            snakemake.input.dataset, list(snakemake.input.samples), settings, device
        )
    else:
        summary, per_image, pairs = study_b_memorization(
            snakemake.input.manifest,
            list(snakemake.input.samples),
            snakemake.input.features,
            settings,
            device,
        )
    write_tsv(snakemake.output.per_image, per_image)
    save_top_pairs(snakemake.output.pairs, pairs)
    write_tsv(snakemake.output.summary, summary)


run_script(main, snakemake)

"""Rules realism_study_a / realism_study_b: classifier two-sample test per generator."""

from kneesynth.workflow import run_script


def main(snakemake):
    from kneesynth.checks.realism_report import study_a_realism, study_b_realism
    from kneesynth.compute import device_for
    from kneesynth.io import write_tsv

    settings = snakemake.params.settings
    device = device_for(snakemake.params.compute)
    if hasattr(snakemake.input, "manifest"):
        rows = study_b_realism(
            snakemake.input.manifest, list(snakemake.input.samples), settings, device
        )
    else:
        rows = study_a_realism(list(snakemake.input.samples), settings, device)
    write_tsv(snakemake.output[0], rows)


run_script(main, snakemake)

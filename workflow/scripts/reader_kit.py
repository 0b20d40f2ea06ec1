"""Rule reader_kit: blinded, shuffled real + synthetic images per generator; keys kept apart."""

from kneesynth.workflow import run_script


def main(snakemake):
    from kneesynth.checks.reader_study import make_study_b_kits

    generators = list(snakemake.params.generators)
    settings = snakemake.params.settings
    make_study_b_kits(
        snakemake.input.manifest,
        dict(zip(generators, snakemake.input.samples, strict=True)),
        dict(zip(generators, snakemake.output.kits, strict=True)),
        dict(zip(generators, snakemake.output.answer_keys, strict=True)),
        settings,
    )


run_script(main, snakemake)

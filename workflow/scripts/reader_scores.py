"""Rule reader_scores: detection rates, sensitivity, specificity, binomial and Fisher tests of
the filled answer sheets (one row saying so when there are none)."""

from kneesynth.workflow import run_script


def main(snakemake):
    from kneesynth.checks.reader_study import score_reader_study
    from kneesynth.checks.settings import PAPER_DETECTION_RATE
    from kneesynth.io import write_tsv

    generators = list(snakemake.params.generators)
    table = score_reader_study(
        list(snakemake.input.responses),
        dict(zip(generators, snakemake.input.answer_keys, strict=True)),
        paper_detection_rate=PAPER_DETECTION_RATE,
        responses_dir=snakemake.params.responses_dir,
    )
    write_tsv(snakemake.output[0], table)


run_script(main, snakemake)

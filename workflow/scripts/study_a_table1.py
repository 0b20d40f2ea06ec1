"""Table I (mean, std and the CI clustered by volume beside the paper's) and the study A
model comparisons over test volumes."""

from kneesynth.study_a.evaluate import paired_tests, table1
from kneesynth.workflow import run_script


def main(snakemake):
    statistics = snakemake.params.statistics
    confidence = float(statistics["confidence_level"])
    table1(snakemake.input[0], snakemake.output.table, confidence)
    paired_tests(
        snakemake.input[0],
        snakemake.output.paired_tests,
        confidence,
        int(statistics["bootstrap_resamples"]),
        int(snakemake.params.seed),
    )


run_script(main, snakemake)

"""Rule memorization_table: memorization.tsv (both studies) and the closest-pairs figure."""

from kneesynth.workflow import run_script


def main(snakemake):
    from kneesynth.checks.memorization_report import (
        load_top_pairs,
        memorization_table,
        plot_top_pairs,
    )
    from kneesynth.io import write_tsv

    pairs = [p for path in snakemake.input.pairs for p in load_top_pairs(path)]
    plot_top_pairs(pairs, snakemake.output.figure)
    write_tsv(snakemake.output.table, memorization_table(list(snakemake.input.summaries)))


run_script(main, snakemake)

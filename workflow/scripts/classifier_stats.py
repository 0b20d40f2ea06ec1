"""Study B classifier metrics (kl_classification.tsv), paired tests against `real`, confusion."""

from kneesynth.workflow import run_script


def main(snakemake):
    from kneesynth.io import write_tsv
    from kneesynth.study_b.kl_metrics import (
        accuracy_intervals,
        kl_classification_table,
        metrics_per_seed,
        paired_tests_table,
        pooled_confusion,
        read_predictions,
    )

    statistics = snakemake.params.statistics
    # inputs are expand(task, arm, seed) in that order
    keys = [
        (task, arm, seed)
        for task in snakemake.params.tasks
        for arm in snakemake.params.arms
        for seed in snakemake.params.seeds
    ]
    paths = snakemake.input.predictions
    paths = [paths] if isinstance(paths, str) else list(paths)
    predictions = read_predictions(dict(zip(keys, paths, strict=True)))
    per_seed = metrics_per_seed(predictions)
    intervals = accuracy_intervals(predictions, statistics["confidence_level"])
    write_tsv(snakemake.output.per_seed, per_seed)
    write_tsv(snakemake.output.confusion, pooled_confusion(predictions))
    write_tsv(snakemake.output.table, kl_classification_table(per_seed, intervals))
    write_tsv(
        snakemake.output.paired_tests,
        paired_tests_table(predictions, confidence_level=statistics["confidence_level"]),
    )


run_script(main, snakemake)

"""Study B figures: seed-pooled confusion matrices and accuracy per arm with bootstrap CIs."""

from kneesynth.workflow import run_script


def main(snakemake):
    from kneesynth.io import read_tsv
    from kneesynth.study_b.kl_figures import plot_accuracy, plot_confusion_matrices

    table = read_tsv(snakemake.input.table, required=["model", "condition", "metric", "value"])
    per_seed = read_tsv(snakemake.input.per_seed, required=["task", "arm", "seed", "metric"])
    confusion = read_tsv(snakemake.input.confusion, required=["task", "arm", "true_class"])
    plot_confusion_matrices(confusion, snakemake.output.confusion, arms=snakemake.params.arms)
    plot_accuracy(table, per_seed, snakemake.output.accuracy)


run_script(main, snakemake)

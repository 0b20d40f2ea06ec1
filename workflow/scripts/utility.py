"""Rule utility: bone segmenter trained on CTM pairs vs real pairs (Dice ratio) and KL
classifier trained on synthetic only vs real only (accuracy ratio) -> utility.tsv."""

from kneesynth.workflow import run_script


def main(snakemake):
    from kneesynth.checks.utility_classifier import utility_table
    from kneesynth.compute import device_for
    from kneesynth.io import write_tsv

    table, per_image = utility_table(
        snakemake.input.dataset,
        snakemake.input.pairs,
        list(snakemake.input.predictions),
        snakemake.params.checks,
        device_for(snakemake.params.compute),
        snakemake.params.state_root,
    )
    write_tsv(snakemake.output.per_image, per_image)
    write_tsv(snakemake.output.table, table)


run_script(main, snakemake)

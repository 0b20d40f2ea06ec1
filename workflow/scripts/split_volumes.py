"""Rule split_volumes: volume names -> results/splits/volumes.tsv (study A)."""

from kneesynth.workflow import run_script


def main(snakemake):
    from kneesynth.data.splits import write_volume_splits
    from kneesynth.seeding import derive_seed

    splits = snakemake.params.splits
    write_volume_splits(
        snakemake.output.splits,
        snakemake.params.volumes,
        splits["fractions"],
        derive_seed(snakemake.params.seed, "splits", "volumes"),
        splits["mode"],
        snakemake.params.views,
    )


run_script(main, snakemake)

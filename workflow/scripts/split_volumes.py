"""Rule split_volumes: volume names -> results/splits/volumes.tsv (study A)."""

from kneesynth.workflow import run_script


def main(snakemake):
    from kneesynth.seeding import derive_seed
    from kneesynth.splits import write_volume_splits

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

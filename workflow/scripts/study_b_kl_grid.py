"""Rule kl_grid_figure: the abstract's Figure 1 (rows KL 0-4; real, WGAN, DDPMs)."""

from kneesynth.workflow import run_script


def main(snakemake):
    from kneesynth.study_b.synthetic import kl_grid_columns, plot_kl_grid

    columns = kl_grid_columns(snakemake.input.manifest, list(snakemake.input.samples))
    plot_kl_grid(
        snakemake.output[0],
        columns,
        per_cell=snakemake.params.per_cell,
        size=snakemake.params.image_size,
    )


run_script(main, snakemake)

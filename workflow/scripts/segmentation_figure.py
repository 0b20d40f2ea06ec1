"""Rule segmentation_figure: a few views of a few volumes (DRR, contour, contour + bone)."""

from kneesynth.workflow import run_script


def main(snakemake):
    from kneesynth.projection.segmentation import segmentation_figure

    segmentation_figure(
        list(snakemake.input.drr),
        list(snakemake.input.segmentation),
        snakemake.output[0],
        snakemake.params.segmentation,
    )


run_script(main, snakemake)

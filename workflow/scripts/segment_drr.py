"""Rule segment_drr: results/drr/{volume}.npz -> results/segmentation/{volume}.npz."""

from kneesynth.workflow import run_script


def main(snakemake):
    from kneesynth.projection.segmentation import segment_drr_file

    segment_drr_file(
        snakemake.input.drr, snakemake.output.segmentation, snakemake.params.segmentation
    )


run_script(main, snakemake)

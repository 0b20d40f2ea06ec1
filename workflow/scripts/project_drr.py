"""Rule project_drr: results/ct/{volume}.nii.gz -> results/drr/{volume}.npz."""

from kneesynth.workflow import run_script


def main(snakemake):
    from kneesynth.projection.drr import project_ct_file

    project_ct_file(snakemake.input.ct, snakemake.output.drr, snakemake.params.projection)


run_script(main, snakemake)

"""Rule utility_ctm_samples: the study A CTM (contour + bone) generates a DRR for every bone
mask of checks.utility.mask_split (validation masks it never saw): the synthetic pairs of the
train-on-synthetic utility check."""

from kneesynth.workflow import run_script


def main(snakemake):
    from kneesynth.checks.utility import sample_pairs

    utility = snakemake.params.utility
    sample_pairs(
        snakemake.input.dataset,
        snakemake.input.weights,
        snakemake.output[0],
        snakemake.params.study_a,
        utility["mask_split"],
        utility["max_images"],
        int(snakemake.params.seed),
        snakemake.params.compute,
    )


run_script(main, snakemake)

"""Rule train_study_b_generator: train ddpm_uncond, ddpm_cond or wgan on the real train split."""

from kneesynth.workflow import run_script


def main(snakemake):
    from kneesynth.compute import device_for
    from kneesynth.study_b.generators import train_generator

    train_generator(
        snakemake.wildcards.generator,
        snakemake.input.manifest,
        snakemake.params.generators,
        snakemake.output.weights,
        snakemake.params.state_dir,
        snakemake.params.seed,
        device=device_for(snakemake.params.compute),
        base_weights=snakemake.input.base[0] if snakemake.input.base else None,
        compute=snakemake.params.compute,
    )


run_script(main, snakemake)

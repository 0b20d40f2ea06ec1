"""Rule train_study_b_ddpm_base: the unconditional DDPM that ddpm_uncond and ddpm_cond are
fine-tuned from (and the full-data twin of the memorisation probe)."""

from kneesynth.workflow import run_script


def main(snakemake):
    from kneesynth.compute import device_for
    from kneesynth.study_b.generators import train_ddpm_base

    train_ddpm_base(
        snakemake.input.manifest,
        snakemake.params.generators,
        snakemake.output.weights,
        snakemake.params.state_dir,
        snakemake.params.seed,
        device=device_for(snakemake.params.compute),
        compute=snakemake.params.compute,
    )


run_script(main, snakemake)

"""Rule train_memorization_probe: the shared DDPM base trained further on a few training images
until it copies them (a positive control of the memorisation check; the base is its twin)."""

from kneesynth.workflow import run_script


def main(snakemake):
    from kneesynth.compute import device_for
    from kneesynth.study_b.generators import train_memorization_probe

    train_memorization_probe(
        snakemake.input.manifest,
        snakemake.params.generators,
        snakemake.params.probe,
        snakemake.output.weights,
        snakemake.params.state_dir,
        snakemake.params.seed,
        snakemake.input.base,
        device=device_for(snakemake.params.compute),
        compute=snakemake.params.compute,
    )


run_script(main, snakemake)

"""Rule train_fid_features: the KL classifier whose pooled features define our FID."""

from kneesynth.workflow import run_script


def main(snakemake):
    from kneesynth.compute import device_for
    from kneesynth.study_b.fid import train_feature_net

    train_feature_net(
        snakemake.input.manifest,
        snakemake.params.fid,
        snakemake.params.image_size,
        snakemake.output.weights,
        snakemake.params.state_dir,
        snakemake.params.seed,
        device=device_for(snakemake.params.compute),
        compute=snakemake.params.compute,
    )


run_script(main, snakemake)

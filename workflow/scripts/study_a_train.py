"""Train one study A model (CSM, CTM or U-Net baseline); resumes from its state folder."""

from kneesynth.study_a.train import train_model
from kneesynth.workflow import run_script


def main(snakemake):
    train_model(
        snakemake.params.kind,
        snakemake.params.condition,
        snakemake.input[0],
        snakemake.output[0],
        snakemake.params.state_dir,
        snakemake.params.study_a,
        snakemake.params.compute,
    )


run_script(main, snakemake)

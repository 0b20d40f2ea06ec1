"""MAE and PSNR of every generated study A test image."""

from kneesynth.study_a.evaluate import evaluate_samples
from kneesynth.workflow import run_script


def main(snakemake):
    evaluate_samples(list(snakemake.input), snakemake.output[0])


run_script(main, snakemake)

"""Rule study_a_controls: study A's controls as sample files (training DRRs, hold-out DRRs, noise)."""

from pathlib import Path

from kneesynth.workflow import run_script


def main(snakemake):
    from kneesynth.checks.controls import study_a_controls

    outputs = {Path(path).name.removesuffix(".npz"): path for path in snakemake.output}
    study_a_controls(
        snakemake.input.dataset, snakemake.params.checks, outputs, snakemake.params.seed
    )


run_script(main, snakemake)

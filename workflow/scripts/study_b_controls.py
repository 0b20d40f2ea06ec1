"""Rule study_b_controls: control_copy, control_holdout and control_noise as evaluation sets."""

from pathlib import Path

from kneesynth.workflow import run_script


def main(snakemake):
    from kneesynth.checks.controls import study_b_controls

    out_dirs = {Path(path).parent.name: Path(path).parent for path in snakemake.output.manifests}
    study_b_controls(
        snakemake.input.manifest,
        snakemake.params.checks,
        snakemake.params.image_size,
        out_dirs,
        snakemake.params.seed,
    )


run_script(main, snakemake)

"""Rule sample_study_b_generator: a generator's synthetic set (PNG, DICOM, manifest.tsv) and its
evaluation set (results/evaluation/study_b/{generator}: the test split's grade mix)."""

from pathlib import Path

from kneesynth.workflow import run_script


def main(snakemake):
    from kneesynth.compute import device_for
    from kneesynth.study_b.synthetic import make_synthetic_set

    make_synthetic_set(
        snakemake.input.weights,
        snakemake.input.manifest,
        snakemake.params.samples,
        snakemake.params.seed,
        Path(snakemake.output.manifest).parent,
        manifest_path=snakemake.output.manifest,
        device=device_for(snakemake.params.compute),
        evaluation_dir=Path(snakemake.output.evaluation).parent,
        checks=snakemake.params.checks,
    )


run_script(main, snakemake)

"""Rule sample_memorization_probe: evaluation sets of the probe and of its full-data twin (the
shared DDPM base)."""

from pathlib import Path

from kneesynth.workflow import run_script


def main(snakemake):
    from kneesynth.compute import device_for
    from kneesynth.study_b.synthetic import make_evaluation_set

    weights = {
        "memorization_probe": snakemake.input.probe,
        "memorization_probe_full": snakemake.input.full,
    }
    for manifest in snakemake.output.manifests:
        name = Path(manifest).parent.name
        make_evaluation_set(
            weights[name],
            snakemake.input.manifest,
            snakemake.params.samples,
            snakemake.params.checks,
            snakemake.params.seed,
            Path(manifest).parent,
            name,
            device=device_for(snakemake.params.compute),
        )


run_script(main, snakemake)

"""Rule phantom_ct: config -> results/phantom/sicas/{volume}.nii (int16 HU, like SMIR)."""

from kneesynth.workflow import run_script


def main(snakemake):
    from pathlib import Path

    from kneesynth.data.phantom_ct import write_phantom_ct

    out_dir = Path(snakemake.output.volumes[0]).parent
    written = write_phantom_ct(
        snakemake.params.phantom, snakemake.params.seed, out_dir, snakemake.output.parameters
    )
    expected = {Path(p).resolve() for p in snakemake.output.volumes}
    if {p.resolve() for p in written} != expected:
        raise RuntimeError("phantom volume names differ from the names computed at parse time")


run_script(main, snakemake)

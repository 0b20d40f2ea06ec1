"""Rule controls_table: every check on its controls (controls.tsv)."""

from kneesynth.workflow import run_script


def main(snakemake):
    from kneesynth.checks.controls_table import write_controls_table

    write_controls_table(
        snakemake.output[0],
        {
            "fid": snakemake.input.fid,
            "realism": snakemake.input.realism,
            "memorization": snakemake.input.memorization,
        },
        snakemake.params.z,
    )


run_script(main, snakemake)

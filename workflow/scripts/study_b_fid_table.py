"""Rule fid_table: FID and KID of every evaluation set (generators and controls) against the real
test split (fid.tsv)."""

from kneesynth.workflow import run_script


def main(snakemake):
    from kneesynth.compute import device_for
    from kneesynth.io import write_tsv
    from kneesynth.study_b.fid import fid_table

    table = fid_table(
        snakemake.input.manifest,
        list(snakemake.input.samples),
        snakemake.input.features,
        snakemake.params.fid,
        device=device_for(snakemake.params.compute),
        seed=snakemake.params.seed,
    )
    write_tsv(snakemake.output[0], table)


run_script(main, snakemake)

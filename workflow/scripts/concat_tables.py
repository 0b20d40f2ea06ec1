"""Stack per-study tables (same columns) into one final table."""

from kneesynth.workflow import run_script


def main(snakemake):
    import pandas as pd

    from kneesynth.io import read_tsv, write_tsv

    frames = [
        read_tsv(path, required=["study", "model", "condition", "metric", "value"])
        for path in snakemake.input
    ]
    write_tsv(snakemake.output[0], pd.concat(frames, ignore_index=True))


run_script(main, snakemake)

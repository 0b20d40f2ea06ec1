"""Rule scorecard_headline: the scorecard's headline for the report's front page."""

from kneesynth.io import atomic_path
from kneesynth.summary import headline_rst, read_scorecard
from kneesynth.workflow import run_script


def main(snakemake):
    text = headline_rst(read_scorecard(snakemake.input[0]), demo=snakemake.params.demo)
    with atomic_path(snakemake.output[0]) as tmp:
        tmp.write_text(text)


run_script(main, snakemake)

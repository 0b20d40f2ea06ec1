"""Rule scorecard: every claim and setting of the papers beside ours (kneesynth.report.scorecard)."""

import logging

from kneesynth.io import write_tsv
from kneesynth.report.scorecard import TABLES, build_scorecard, headline_text, write_scorecard_html
from kneesynth.workflow import run_script


def main(snakemake):
    tables = {name: getattr(snakemake.input, name, None) for name in TABLES}
    scorecard = build_scorecard(tables, snakemake.params.config)
    write_tsv(snakemake.output.tsv, scorecard)
    write_scorecard_html(snakemake.output.html, scorecard)
    logging.getLogger("kneesynth.report.scorecard").info("scorecard: %s", headline_text(scorecard))


run_script(main, snakemake)

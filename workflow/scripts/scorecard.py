import yaml

from kneesynth.io import write_tsv
from kneesynth.scorecard import TABLES, build_scorecard, write_scorecard_html
from kneesynth.workflow import run_script


def main(snakemake):
    with open(snakemake.input.paper_config) as handle:
        paper_config = yaml.safe_load(handle)
    tables = {name: snakemake.input[name] for name in TABLES}
    scorecard = build_scorecard(tables, snakemake.params.config, paper_config)
    write_tsv(snakemake.output.tsv, scorecard)
    write_scorecard_html(snakemake.output.html, scorecard)


run_script(main, snakemake)

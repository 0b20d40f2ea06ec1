# The HTML report's front page (workflow/report/workflow.rst) includes the scorecard's headline,
# written here from results/tables/scorecard.tsv. Library: src/kneesynth/summary.py.


rule scorecard_headline:
    input:
        "results/tables/scorecard.tsv",
    output:
        "results/report/scorecard_headline.rst",
    log:
        "logs/scorecard_headline/scorecard_headline.log",
    conda:
        "../../envs/kneesynth.yaml"
    threads: 1
    params:
        demo=not (config["data"]["sicas_dir"] or config["data"].get("oai_dir")),
    script:
        "../scripts/scorecard_headline.py"

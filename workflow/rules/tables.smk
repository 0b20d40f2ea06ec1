# Tables that join the studies: all paired tests, the reproduction scorecard, provenance.
LEAD_STATS = [
    "results/tables/paired_tests.tsv",
    "results/tables/provenance.tsv",
    "results/tables/scorecard.tsv",
]


rule paired_tests:
    input:
        tests=PAIRED_TEST_TABLES,
    output:
        report(
            "results/tables/paired_tests.tsv",
            caption="../report/paired_tests.rst",
            category="Scorecard",
            subcategory="stats",
        ),
    log:
        "logs/paired_tests/paired_tests.log",
    conda:
        "../../envs/kneesynth.yaml"
    script:
        "../scripts/paired_tests.py"


rule provenance:
    output:
        report(
            "results/tables/provenance.tsv",
            caption="../report/provenance.rst",
            category="Scorecard",
            subcategory="stats",
        ),
    log:
        "logs/provenance/provenance.log",
    conda:
        "../../envs/kneesynth.yaml"
    params:
        config=config,
        config_files=workflow.configfiles,
    script:
        "../scripts/provenance.py"


rule scorecard:
    input:
        table1_drr="results/tables/table1_drr.tsv",
        paired_tests="results/tables/paired_tests.tsv",
        fid="results/tables/fid.tsv",
        kl_classification="results/tables/kl_classification.tsv",
        realism="results/tables/realism.tsv",
        reader_study="results/tables/reader_study.tsv",
        utility="results/tables/utility.tsv",
        memorization="results/tables/memorization.tsv",
        controls="results/tables/controls.tsv",
    output:
        tsv=report(
            "results/tables/scorecard.tsv",
            caption="../report/scorecard.rst",
            category="Scorecard",
            subcategory="stats",
        ),
        html=report(
            "results/tables/scorecard.html",
            caption="../report/scorecard.rst",
            category="Scorecard",
            subcategory="stats",
        ),
    log:
        "logs/scorecard/scorecard.log",
    conda:
        "../../envs/kneesynth.yaml"
    params:
        config=config,
    script:
        "../scripts/scorecard.py"

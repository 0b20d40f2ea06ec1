# Tables that join the studies: all paired tests, the reproduction scorecard, provenance.
LEAD_STATS = [
    "results/tables/paired_tests.tsv",
    "results/tables/provenance.tsv",
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
    params:
        config=config,
        config_files=workflow.configfiles,
    script:
        "../scripts/provenance.py"

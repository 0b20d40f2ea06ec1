# Stage checks (study C and the checks of every generator): memorisation (max Pearson
# correlation with the training set, Akbar et al.), realism (classifier two-sample test), the
# reader-study kit and its scoring, and train-on-synthetic / test-on-real utility.
# Library: src/kneesynth/{memorization,realism,reader_study,utility}.py.
CHECKS_A_SAMPLE_FILES = expand(
    "results/samples/study_a/{sample}.npz", sample=config["checks"]["study_a_samples"]
)
CHECKS_B_SAMPLE_MANIFESTS = expand(
    "results/samples/study_b/{generator}/manifest.tsv",
    generator=config["checks"]["study_b_generators"],
)
CHECKS_READER_GENERATOR_NAMES = config["checks"]["reader_study"]["generators"]

CHECKS_CHECKS = [
    "results/tables/memorization.tsv",
    "results/tables/realism.tsv",
    "results/tables/utility.tsv",
    "results/tables/reader_study.tsv",
    *expand("results/reader_kit/{generator}", generator=CHECKS_READER_GENERATOR_NAMES),
    *expand(
        "results/reader_kit_keys/{generator}.csv",
        generator=CHECKS_READER_GENERATOR_NAMES,
    ),
]
CHECKS_FIGURES = ["results/figures/memorization_pairs.png"]


rule memorization_study_a:
    input:
        dataset="results/study_a/dataset.npz",
        samples=CHECKS_A_SAMPLE_FILES,
    output:
        summary="results/checks/memorization_study_a.tsv",
        per_image="results/checks/memorization_study_a_per_image.tsv",
        pairs="results/checks/memorization_study_a_pairs.npz",
    log:
        "logs/memorization_study_a/memorization_study_a.log",
    benchmark:
        "benchmarks/memorization_study_a/memorization_study_a.tsv"
    conda:
        "../../envs/kneesynth.yaml"
    threads: 1
    params:
        checks=config["checks"],
        compute=config["compute"],
    script:
        "../scripts/memorization.py"


rule memorization_study_b:
    input:
        manifest="results/oai/manifest.tsv",
        samples=CHECKS_B_SAMPLE_MANIFESTS,
        features="results/models/study_b/fid_features.pt",
    output:
        summary="results/checks/memorization_study_b.tsv",
        per_image="results/checks/memorization_study_b_per_image.tsv",
        pairs="results/checks/memorization_study_b_pairs.npz",
    log:
        "logs/memorization_study_b/memorization_study_b.log",
    benchmark:
        "benchmarks/memorization_study_b/memorization_study_b.tsv"
    conda:
        "../../envs/kneesynth.yaml"
    threads: 1
    params:
        checks=config["checks"],
        compute=config["compute"],
    script:
        "../scripts/memorization.py"


rule memorization_table:
    input:
        summaries=[
            "results/checks/memorization_study_a.tsv",
            "results/checks/memorization_study_b.tsv",
        ],
        pairs=[
            "results/checks/memorization_study_a_pairs.npz",
            "results/checks/memorization_study_b_pairs.npz",
        ],
    output:
        table=report(
            "results/tables/memorization.tsv",
            caption="../report/memorization.rst",
            category="Checks",
            subcategory="memorisation",
        ),
        figure=report(
            "results/figures/memorization_pairs.png",
            caption="../report/memorization_pairs.rst",
            category="Checks",
            subcategory="memorisation",
        ),
    log:
        "logs/memorization_table/memorization_table.log",
    conda:
        "../../envs/kneesynth.yaml"
    threads: 1
    script:
        "../scripts/memorization_table.py"


rule realism_study_a:
    input:
        samples=CHECKS_A_SAMPLE_FILES,
    output:
        "results/checks/realism_study_a.tsv",
    log:
        "logs/realism_study_a/realism_study_a.log",
    benchmark:
        "benchmarks/realism_study_a/realism_study_a.tsv"
    conda:
        "../../envs/kneesynth.yaml"
    threads: 1
    params:
        checks=config["checks"],
        compute=config["compute"],
    script:
        "../scripts/realism.py"


rule realism_study_b:
    input:
        manifest="results/oai/manifest.tsv",
        samples=CHECKS_B_SAMPLE_MANIFESTS,
    output:
        "results/checks/realism_study_b.tsv",
    log:
        "logs/realism_study_b/realism_study_b.log",
    benchmark:
        "benchmarks/realism_study_b/realism_study_b.tsv"
    conda:
        "../../envs/kneesynth.yaml"
    threads: 1
    params:
        checks=config["checks"],
        compute=config["compute"],
    script:
        "../scripts/realism.py"


rule realism_table:
    input:
        "results/checks/realism_study_a.tsv",
        "results/checks/realism_study_b.tsv",
    output:
        report(
            "results/tables/realism.tsv",
            caption="../report/realism.rst",
            category="Checks",
            subcategory="realism",
        ),
    log:
        "logs/realism_table/realism_table.log",
    conda:
        "../../envs/kneesynth.yaml"
    threads: 1
    script:
        "../scripts/concat_tables.py"


rule reader_kit:
    input:
        manifest="results/oai/manifest.tsv",
        samples=expand(
            "results/samples/study_b/{generator}/manifest.tsv",
            generator=CHECKS_READER_GENERATOR_NAMES,
        ),
    output:
        kits=directory(
            expand(
                "results/reader_kit/{generator}",
                generator=CHECKS_READER_GENERATOR_NAMES,
            )
        ),
        answer_keys=expand(
            "results/reader_kit_keys/{generator}.csv",
            generator=CHECKS_READER_GENERATOR_NAMES,
        ),
    log:
        "logs/reader_kit/reader_kit.log",
    conda:
        "../../envs/kneesynth.yaml"
    threads: 1
    params:
        generators=CHECKS_READER_GENERATOR_NAMES,
        checks=config["checks"],
    script:
        "../scripts/reader_kit.py"


rule reader_scores:
    input:
        answer_keys=expand(
            "results/reader_kit_keys/{generator}.csv",
            generator=CHECKS_READER_GENERATOR_NAMES,
        ),
        responses=checks_reader_responses,
    output:
        report(
            "results/tables/reader_study.tsv",
            caption="../report/reader_study.rst",
            category="Checks",
            subcategory="reader study",
        ),
    log:
        "logs/reader_scores/reader_scores.log",
    conda:
        "../../envs/kneesynth.yaml"
    threads: 1
    params:
        generators=CHECKS_READER_GENERATOR_NAMES,
        responses_dir=config["checks"]["reader_study"]["responses_dir"],
    script:
        "../scripts/reader_scores.py"


rule utility_ctm_samples:
    input:
        dataset="results/study_a/dataset.npz",
        weights="results/models/study_a/ctm_contour_bone.pt",
    output:
        "results/checks/utility_ctm_train_samples.npz",
    log:
        "logs/utility_ctm_samples/utility_ctm_samples.log",
    benchmark:
        "benchmarks/utility_ctm_samples/utility_ctm_samples.tsv"
    conda:
        "../../envs/kneesynth.yaml"
    threads: 1
    params:
        checks=config["checks"],
        study_a=config["study_a"],
        compute=config["compute"],
    script:
        "../scripts/utility_ctm_samples.py"


rule utility:
    input:
        dataset="results/study_a/dataset.npz",
        pairs="results/checks/utility_ctm_train_samples.npz",
        predictions=checks_kl_predictions,
    output:
        table=report(
            "results/tables/utility.tsv",
            caption="../report/utility.rst",
            category="Checks",
            subcategory="utility",
        ),
        per_image="results/checks/utility_segmentation_per_image.tsv",
    log:
        "logs/utility/utility.log",
    benchmark:
        "benchmarks/utility/utility.tsv"
    conda:
        "../../envs/kneesynth.yaml"
    threads: 1
    params:
        checks=config["checks"],
        compute=config["compute"],
        state_root="results/state/utility",
    script:
        "../scripts/utility.py"

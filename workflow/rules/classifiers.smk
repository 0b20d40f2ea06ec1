# Study B (Smits Serena et al., DKOU 2025): KL-grade classifiers trained on real images and on real
# + synthetic images (stage classifiers), their metrics and paired tests against the real-only arm
# (stage stats), confusion matrices and accuracy per arm (stage figures).
# Arms: real, real+<generator> (config study_b.classifiers.arms, the tables below) and, built on
# request for study C, syn-<generator> (synthetic images only).
# GPU rules: train_classifier_real, train_classifier_augmented, train_classifier_synthetic_only.

from kneesynth.study_b.settings import TASK_CLASSES

CLASSIFIERS_CONFIG = config["study_b"]["classifiers"]
# what a classifier's training reads: not the arms, tasks and seeds of the tables (tasks and
# seeds are passed per job) nor the statistics
CLASSIFIER_TRAINING = {
    key: value
    for key, value in CLASSIFIERS_CONFIG.items()
    if key not in ("arms", "tasks", "seeds", "statistics")
}
CLASSIFIER_PREDICTIONS = expand(
    "results/classifiers/{task}/{arm}/seed{seed}.tsv",
    task=CLASSIFIERS_CONFIG["tasks"],
    arm=CLASSIFIERS_CONFIG["arms"],
    seed=CLASSIFIERS_CONFIG["seeds"],
)

STUDY_B_CLASSIFIERS = CLASSIFIER_PREDICTIONS
STUDY_B_CLASSIFIER_STATS = [
    "results/tables/kl_classification.tsv",
    "results/study_b/paired_tests.tsv",
]
STUDY_B_CLASSIFIER_FIGURES = [
    "results/figures/kl_confusion.png",
    "results/figures/kl_accuracy.png",
]


rule train_classifier_real:
    input:
        manifest="results/oai/manifest.tsv",
    output:
        predictions=expand(
            "results/classifiers/{task}/real/seed{seed}.tsv",
            task=CLASSIFIERS_CONFIG["tasks"],
            seed=CLASSIFIERS_CONFIG["seeds"],
        ),
        history=expand(
            "results/classifiers/{task}/real/history.tsv",
            task=CLASSIFIERS_CONFIG["tasks"],
        ),
    log:
        "logs/train_classifier_real/real.log",
    benchmark:
        "benchmarks/train_classifier_real/real.tsv"
    conda:
        "../../envs/kneesynth.yaml"
    params:
        arm="real",
        classifiers=CLASSIFIER_TRAINING,
        tasks=CLASSIFIERS_CONFIG["tasks"],
        seeds=CLASSIFIERS_CONFIG["seeds"],
        compute=COMPUTE_TRAINING,
        state_dir="results/state/train_classifier_real/real",
    script:
        "../scripts/train_classifier.py"


rule train_classifier_augmented:
    input:
        manifest="results/oai/manifest.tsv",
        synthetic="results/samples/study_b/{generator}/manifest.tsv",
    output:
        predictions=expand(
            "results/classifiers/{task}/real+{{generator}}/seed{seed}.tsv",
            task=CLASSIFIERS_CONFIG["tasks"],
            seed=CLASSIFIERS_CONFIG["seeds"],
        ),
        history=expand(
            "results/classifiers/{task}/real+{{generator}}/history.tsv",
            task=CLASSIFIERS_CONFIG["tasks"],
        ),
    log:
        "logs/train_classifier_augmented/{generator}.log",
    benchmark:
        "benchmarks/train_classifier_augmented/{generator}.tsv"
    wildcard_constraints:
        generator="|".join(STUDY_B_GENERATOR_NAMES),
    conda:
        "../../envs/kneesynth.yaml"
    params:
        arm="real+{generator}",
        classifiers=CLASSIFIER_TRAINING,
        tasks=CLASSIFIERS_CONFIG["tasks"],
        seeds=CLASSIFIERS_CONFIG["seeds"],
        compute=COMPUTE_TRAINING,
        state_dir="results/state/train_classifier_augmented/{generator}",
    script:
        "../scripts/train_classifier.py"


rule train_classifier_synthetic_only:
    input:
        manifest="results/oai/manifest.tsv",
        synthetic="results/samples/study_b/{generator}/manifest.tsv",
    output:
        predictions=expand(
            "results/classifiers/{{task}}/syn-{{generator}}/seed{seed}.tsv",
            seed=CLASSIFIERS_CONFIG["seeds"],
        ),
        history="results/classifiers/{task}/syn-{generator}/history.tsv",
    log:
        "logs/train_classifier_synthetic_only/{task}/{generator}.log",
    benchmark:
        "benchmarks/train_classifier_synthetic_only/{task}/{generator}.tsv"
    wildcard_constraints:
        task="|".join(TASK_CLASSES),
        generator="|".join(STUDY_B_GENERATOR_NAMES),
    conda:
        "../../envs/kneesynth.yaml"
    params:
        arm="syn-{generator}",
        classifiers=CLASSIFIER_TRAINING,
        tasks="{task}",
        seeds=CLASSIFIERS_CONFIG["seeds"],
        compute=COMPUTE_TRAINING,
        state_dir="results/state/train_classifier_synthetic_only/{task}/{generator}",
    script:
        "../scripts/train_classifier.py"


rule classifier_stats:
    input:
        predictions=CLASSIFIER_PREDICTIONS,
    output:
        table=report(
            "results/tables/kl_classification.tsv",
            caption="../report/kl_classification.rst",
            category="Study B",
            subcategory="stats",
        ),
        paired_tests="results/study_b/paired_tests.tsv",
        per_seed="results/study_b/kl_metrics_per_seed.tsv",
        confusion="results/study_b/kl_confusion.tsv",
    log:
        "logs/classifier_stats/classifier_stats.log",
    conda:
        "../../envs/kneesynth.yaml"
    params:
        tasks=CLASSIFIERS_CONFIG["tasks"],
        arms=CLASSIFIERS_CONFIG["arms"],
        seeds=CLASSIFIERS_CONFIG["seeds"],
        statistics=CLASSIFIERS_CONFIG["statistics"],
    script:
        "../scripts/classifier_stats.py"


rule classifier_figures:
    input:
        table="results/tables/kl_classification.tsv",
        per_seed="results/study_b/kl_metrics_per_seed.tsv",
        confusion="results/study_b/kl_confusion.tsv",
    output:
        confusion=report(
            "results/figures/kl_confusion.png",
            caption="../report/kl_confusion.rst",
            category="Study B",
            subcategory="figures",
        ),
        accuracy=report(
            "results/figures/kl_accuracy.png",
            caption="../report/kl_accuracy.rst",
            category="Study B",
            subcategory="figures",
        ),
    log:
        "logs/classifier_figures/classifier_figures.log",
    conda:
        "../../envs/kneesynth.yaml"
    params:
        arms=CLASSIFIERS_CONFIG["arms"],
    script:
        "../scripts/classifier_figures.py"

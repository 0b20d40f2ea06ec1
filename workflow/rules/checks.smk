# Stage checks (study C and the checks of every generator): memorisation (max Pearson
# correlation with the training set, Akbar et al.), realism (classifier two-sample test), the
# reader-study kit and its scoring, and train-on-synthetic / test-on-real utility.
# Library: src/kneesynth/checks/ (memorization, memorization_report, realism, reader_study,
# utility, controls).
# Controls (kneesynth.checks.controls) run through the same rules as the generators: study A's as
# sample files beside the CSM/CTM samples, study B's as evaluation sets (study_b.smk); the
# memorisation probe (the shared DDPM base trained further on a few images until it copies them)
# and its full-data twin (the base) join the study B memorisation check. controls.tsv judges every
# check on its controls.
from kneesynth.checks.settings import CONTROLS, PROBE, PROBE_FULL

CHECKS_CONTROL_NAMES = list(CONTROLS)
CHECKS_A_CONTROL_FILES = expand(
    "results/checks/study_a_controls/{control}.npz", control=CHECKS_CONTROL_NAMES
)
CHECKS_A_SAMPLE_FILES = (
    expand(
        "results/samples/study_a/{sample}.npz",
        sample=config["checks"]["study_a_samples"],
    )
    + CHECKS_A_CONTROL_FILES
)
CHECKS_B_SAMPLE_MANIFESTS = expand(
    "results/evaluation/study_b/{name}/manifest.tsv",
    name=config["checks"]["study_b_generators"] + CHECKS_CONTROL_NAMES,
)
CHECKS_PROBE = config["checks"]["memorization_probe"]["enabled"]
CHECKS_PROBE_NAMES = [PROBE, PROBE_FULL] if CHECKS_PROBE else []
CHECKS_PROBE_MANIFESTS = expand(
    "results/evaluation/study_b/{name}/manifest.tsv", name=CHECKS_PROBE_NAMES
)
CHECKS_READER_GENERATOR_NAMES = config["checks"]["reader_study"]["generators"]

CHECKS_CHECKS = [
    "results/tables/controls.tsv",
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


rule study_a_controls:
    input:
        dataset="results/study_a/dataset.npz",
    output:
        CHECKS_A_CONTROL_FILES,
    log:
        "logs/study_a_controls/study_a_controls.log",
    conda:
        "../../envs/kneesynth.yaml"
    threads: 1
    params:
        checks=CHECKS_CONTROL_SETTINGS,
        seed=config["checks"]["seed"],
    script:
        "../scripts/study_a_controls.py"


if CHECKS_PROBE:

    rule train_memorization_probe:
        input:
            manifest="results/oai/manifest.tsv",
            base="results/models/study_b/ddpm_base.pt",
        output:
            weights="results/models/study_b/memorization_probe.pt",
        log:
            "logs/train_memorization_probe/train_memorization_probe.log",
        benchmark:
            "benchmarks/train_memorization_probe/train_memorization_probe.tsv"
        conda:
            "../../envs/kneesynth.yaml"
        params:
            generators=study_b_ddpm_settings,
            probe=config_subset(
                config["checks"]["memorization_probe"],
                ("train_images", "steps", "batch_size"),
            ),
            seed=config["seed"],
            compute=COMPUTE_TRAINING,
            state_dir="results/state/train_memorization_probe",
        script:
            "../scripts/train_memorization_probe.py"

    rule sample_memorization_probe:
        input:
            manifest="results/oai/manifest.tsv",
            probe="results/models/study_b/memorization_probe.pt",
            full="results/models/study_b/ddpm_base.pt",
        output:
            manifests=CHECKS_PROBE_MANIFESTS,
            png=directory(
                expand(
                    "results/evaluation/study_b/{name}/png", name=CHECKS_PROBE_NAMES
                )
            ),
        log:
            "logs/sample_memorization_probe/sample_memorization_probe.log",
        benchmark:
            "benchmarks/sample_memorization_probe/sample_memorization_probe.tsv"
        conda:
            "../../envs/kneesynth.yaml"
        params:
            samples=STUDY_B_EVALUATION_SAMPLER,
            checks=STUDY_B_EVALUATION_COUNTS,
            seed=config["seed"],
            compute=COMPUTE_DEVICE,
        script:
            "../scripts/sample_memorization_probe.py"


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
        settings=checks_settings("memorization"),
        compute=COMPUTE_DEVICE,
    script:
        "../scripts/memorization.py"


rule memorization_study_b:
    input:
        manifest="results/oai/manifest.tsv",
        samples=CHECKS_B_SAMPLE_MANIFESTS + CHECKS_PROBE_MANIFESTS,
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
        settings=checks_settings("memorization", "pca_components"),
        compute=COMPUTE_DEVICE,
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
        settings=checks_settings("realism"),
        compute=COMPUTE_DEVICE,
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
        settings=checks_settings("realism"),
        compute=COMPUTE_DEVICE,
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


rule controls_table:
    input:
        fid="results/tables/fid.tsv",
        realism="results/tables/realism.tsv",
        memorization="results/tables/memorization.tsv",
    output:
        report(
            "results/tables/controls.tsv",
            caption="../report/controls.rst",
            category="Checks",
            subcategory="controls",
        ),
    log:
        "logs/controls_table/controls_table.log",
    conda:
        "../../envs/kneesynth.yaml"
    threads: 1
    params:
        z=config["checks"]["controls"]["z"],
    script:
        "../scripts/controls_table.py"


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
        settings=checks_settings("reader_study", "generators", "responses_dir"),
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
        utility=config_subset(config["checks"]["utility"], ("mask_split", "max_images")),
        seed=config["checks"]["seed"],
        study_a=STUDY_A_CTM_SAMPLING,
        compute=COMPUTE_SAMPLING,
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
        checks=CHECKS_UTILITY,
        compute=COMPUTE_DEVICE,
        state_root="results/state/utility",
    script:
        "../scripts/utility.py"

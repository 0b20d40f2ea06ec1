# Study B (Smits Serena et al., DKOU 2025): DDPM and WGAN knee radiographs by KL grade, trained on
# the real training split of results/oai/manifest.tsv; synthetic sets (PNG + DICOM) that balance
# the grades; FID against the real test split; the abstract's Figure 1 grid.
# GPU rules: train_study_b_ddpm_base, train_study_b_generator, sample_study_b_generator,
# train_fid_features, fid_table.

# Every metric (FID/KID here, C2ST and memorisation in checks.smk) reads the evaluation sets in
# results/evaluation/study_b/{name}/: each generator's and each control's
# (kneesynth.checks.controls), all with the real test split's KL grade mix and the same counts.
from kneesynth.checks.settings import CONTROLS
from kneesynth.study_b.settings import GENERATORS

STUDY_B_GENERATOR_NAMES = list(GENERATORS)
STUDY_B_CONTROL_NAMES = list(CONTROLS)

STUDY_B_GENERATORS = (
    expand("results/models/study_b/{generator}.pt", generator=STUDY_B_GENERATOR_NAMES)
    + ["results/models/study_b/fid_features.pt"]
    + STUDY_B_BASE_WEIGHTS
)
STUDY_B_SAMPLES = expand(
    "results/samples/study_b/{generator}/manifest.tsv",
    generator=STUDY_B_GENERATOR_NAMES,
)
STUDY_B_EVALUATION = expand(
    "results/evaluation/study_b/{name}/manifest.tsv",
    name=STUDY_B_GENERATOR_NAMES + STUDY_B_CONTROL_NAMES,
)
STUDY_B_STATS = ["results/tables/fid.tsv"]
STUDY_B_FIGURES = ["results/figures/kl_grid.png"]


rule train_study_b_ddpm_base:
    input:
        manifest="results/oai/manifest.tsv",
    output:
        weights="results/models/study_b/ddpm_base.pt",
    log:
        "logs/train_study_b_ddpm_base/train_study_b_ddpm_base.log",
    benchmark:
        "benchmarks/train_study_b_ddpm_base/train_study_b_ddpm_base.tsv"
    conda:
        "../../envs/kneesynth.yaml"
    params:
        generators=study_b_ddpm_settings,
        seed=config["seed"],
        compute=COMPUTE_TRAINING,
        state_dir="results/state/train_study_b_ddpm_base",
    script:
        "../scripts/train_study_b_ddpm_base.py"


rule train_study_b_generator:
    input:
        manifest="results/oai/manifest.tsv",
        base=study_b_base_weights,
    output:
        weights="results/models/study_b/{generator}.pt",
    log:
        "logs/train_study_b_generator/{generator}.log",
    benchmark:
        "benchmarks/train_study_b_generator/{generator}.tsv"
    wildcard_constraints:
        generator="|".join(STUDY_B_GENERATOR_NAMES),
    conda:
        "../../envs/kneesynth.yaml"
    params:
        generators=study_b_generator_settings,
        seed=config["seed"],
        compute=COMPUTE_TRAINING,
        state_dir="results/state/train_study_b_generator/{generator}",
    script:
        "../scripts/train_study_b_generator.py"


rule sample_study_b_generator:
    input:
        weights="results/models/study_b/{generator}.pt",
        manifest="results/oai/manifest.tsv",
    output:
        manifest="results/samples/study_b/{generator}/manifest.tsv",
        png=directory("results/samples/study_b/{generator}/png"),
        dicom=directory("results/samples/study_b/{generator}/dicom"),
        evaluation="results/evaluation/study_b/{generator}/manifest.tsv",
        evaluation_png=directory("results/evaluation/study_b/{generator}/png"),
    log:
        "logs/sample_study_b_generator/{generator}.log",
    benchmark:
        "benchmarks/sample_study_b_generator/{generator}.tsv"
    wildcard_constraints:
        generator="|".join(STUDY_B_GENERATOR_NAMES),
    conda:
        "../../envs/kneesynth.yaml"
    params:
        samples=study_b_samples_settings,
        checks=STUDY_B_EVALUATION_COUNTS,
        seed=config["seed"],
        compute=COMPUTE_DEVICE,
    script:
        "../scripts/sample_study_b_generator.py"


rule study_b_controls:
    input:
        manifest="results/oai/manifest.tsv",
    output:
        manifests=expand(
            "results/evaluation/study_b/{control}/manifest.tsv",
            control=STUDY_B_CONTROL_NAMES,
        ),
        png=directory(
            expand(
                "results/evaluation/study_b/{control}/png",
                control=STUDY_B_CONTROL_NAMES,
            )
        ),
    log:
        "logs/study_b_controls/study_b_controls.log",
    conda:
        "../../envs/kneesynth.yaml"
    threads: 1
    params:
        checks=CHECKS_CONTROL_SETTINGS,
        image_size=config["study_b"]["generators"]["image_size"],
        seed=config["checks"]["seed"],
    script:
        "../scripts/study_b_controls.py"


rule train_fid_features:
    input:
        manifest="results/oai/manifest.tsv",
    output:
        weights="results/models/study_b/fid_features.pt",
    log:
        "logs/train_fid_features/train_fid_features.log",
    benchmark:
        "benchmarks/train_fid_features/train_fid_features.tsv"
    conda:
        "../../envs/kneesynth.yaml"
    params:
        fid=FID_FEATURE_TRAINING,
        image_size=config["study_b"]["generators"]["image_size"],
        seed=config["seed"],
        compute=COMPUTE_TRAINING,
        state_dir="results/state/train_fid_features",
    script:
        "../scripts/train_fid_features.py"


rule fid_table:
    input:
        manifest="results/oai/manifest.tsv",
        features="results/models/study_b/fid_features.pt",
        samples=STUDY_B_EVALUATION,
    output:
        report(
            "results/tables/fid.tsv",
            caption="../report/study_b_fid.rst",
            category="Study B",
            subcategory="stats",
        ),
    log:
        "logs/fid_table/fid_table.log",
    benchmark:
        "benchmarks/fid_table/fid_table.tsv"
    conda:
        "../../envs/kneesynth.yaml"
    params:
        fid=FID_TABLE_SETTINGS,
        compute=COMPUTE_DEVICE,
        seed=config["checks"]["seed"],
    script:
        "../scripts/study_b_fid_table.py"


rule kl_grid_figure:
    input:
        manifest="results/oai/manifest.tsv",
        samples=STUDY_B_SAMPLES,
    output:
        report(
            "results/figures/kl_grid.png",
            caption="../report/study_b_kl_grid.rst",
            category="Study B",
            subcategory="figures",
        ),
    log:
        "logs/kl_grid_figure/kl_grid_figure.log",
    conda:
        "../../envs/kneesynth.yaml"
    params:
        per_cell=config["study_b"]["samples"]["grid_per_cell"],
        image_size=config["study_b"]["generators"]["image_size"],
    script:
        "../scripts/study_b_kl_grid.py"

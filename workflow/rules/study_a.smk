# Study A (Mei et al.): NCSN++ score models CSM and CTM, the U-Net baseline, sampling,
# Table I, paired tests and Fig. 3. Logic in src/kneesynth/study_a/.
from kneesynth.study_a.settings import MODELS, CONDITIONS

STUDY_A_CONDITIONS = list(CONDITIONS)
STUDY_A_MODELS = list(MODELS)

STUDY_A_GENERATORS = ["results/models/study_a/csm.pt"] + expand(
    "results/models/study_a/{model}_{condition}.pt",
    model=["ctm", "unet"],
    condition=STUDY_A_CONDITIONS,
)
STUDY_A_SAMPLES = expand(
    "results/samples/study_a/{model}_{condition}.npz",
    model=STUDY_A_MODELS,
    condition=STUDY_A_CONDITIONS,
)
STUDY_A_STATS = [
    "results/study_a/metrics.tsv",
    "results/tables/table1_drr.tsv",
    "results/study_a/paired_tests.tsv",
]
STUDY_A_FIGURES = ["results/figures/fig3_drr.png", "results/figures/fig3_drr.pdf"]
# what training depends on: a sampler setting must not retrain the models
STUDY_A_TRAINING = {
    key: config["study_a"][key] for key in (*STUDY_A_TRAINING_KEYS, "checkpoint_every")
}


rule assemble_drr_dataset:
    input:
        drr=expand("results/drr/{volume}.npz", volume=VOLUMES),
        segmentation=expand("results/segmentation/{volume}.npz", volume=VOLUMES),
        splits="results/splits/volumes.tsv",
    output:
        "results/study_a/dataset.npz",
    log:
        "logs/assemble_drr_dataset/assemble_drr_dataset.log",
    conda:
        "../../envs/kneesynth.yaml"
    params:
        study_a={"image_size": config["study_a"]["image_size"]},
    script:
        "../scripts/study_a_assemble.py"


rule train_csm:
    input:
        "results/study_a/dataset.npz",
    output:
        "results/models/study_a/csm.pt",
    log:
        "logs/train_csm/csm.log",
    benchmark:
        "benchmarks/train_csm/csm.tsv"
    conda:
        "../../envs/kneesynth.yaml"
    params:
        kind="csm",
        condition=None,
        state_dir="results/state/train_csm/csm",
        study_a=STUDY_A_TRAINING,
        compute=COMPUTE_TRAINING,
    script:
        "../scripts/study_a_train.py"


rule train_ctm:
    input:
        "results/study_a/dataset.npz",
    output:
        "results/models/study_a/ctm_{condition}.pt",
    log:
        "logs/train_ctm/{condition}.log",
    benchmark:
        "benchmarks/train_ctm/{condition}.tsv"
    conda:
        "../../envs/kneesynth.yaml"
    params:
        kind="ctm",
        condition="{condition}",
        state_dir="results/state/train_ctm/{condition}",
        study_a=STUDY_A_TRAINING,
        compute=COMPUTE_TRAINING,
    script:
        "../scripts/study_a_train.py"


rule train_unet:
    input:
        "results/study_a/dataset.npz",
    output:
        "results/models/study_a/unet_{condition}.pt",
    log:
        "logs/train_unet/{condition}.log",
    benchmark:
        "benchmarks/train_unet/{condition}.tsv"
    conda:
        "../../envs/kneesynth.yaml"
    params:
        kind="unet",
        condition="{condition}",
        state_dir="results/state/train_unet/{condition}",
        study_a=STUDY_A_TRAINING,
        compute=COMPUTE_TRAINING,
    script:
        "../scripts/study_a_train.py"


rule sample_drr:
    input:
        dataset="results/study_a/dataset.npz",
        weights=study_a_weights,
    output:
        "results/samples/study_a/{model}_{condition}.npz",
    log:
        "logs/sample_drr/{model}_{condition}.log",
    benchmark:
        "benchmarks/sample_drr/{model}_{condition}.tsv"
    wildcard_constraints:
        model="|".join(STUDY_A_MODELS),
    conda:
        "../../envs/kneesynth.yaml"
    params:
        study_a=study_a_sampling_settings,
        compute=COMPUTE_SAMPLING,
    script:
        "../scripts/study_a_sample.py"


rule evaluate_drr:
    input:
        STUDY_A_SAMPLES,
    output:
        "results/study_a/metrics.tsv",
    log:
        "logs/evaluate_drr/evaluate_drr.log",
    conda:
        "../../envs/kneesynth.yaml"
    script:
        "../scripts/study_a_evaluate.py"


rule table1:
    input:
        "results/study_a/metrics.tsv",
    output:
        table=report(
            "results/tables/table1_drr.tsv",
            caption="../report/table1_drr.rst",
            category="Study A",
            subcategory="stats",
        ),
        paired_tests=report(
            "results/study_a/paired_tests.tsv",
            caption="../report/study_a_paired_tests.rst",
            category="Study A",
            subcategory="stats",
        ),
    log:
        "logs/table1/table1.log",
    conda:
        "../../envs/kneesynth.yaml"
    params:
        statistics=config["study_a"]["statistics"],
        seed=config["study_a"]["seed"],
    script:
        "../scripts/study_a_table1.py"


rule fig3:
    input:
        STUDY_A_SAMPLES,
    output:
        png=report(
            "results/figures/fig3_drr.png",
            caption="../report/fig3_drr.rst",
            category="Study A",
            subcategory="figures",
        ),
        pdf="results/figures/fig3_drr.pdf",
    log:
        "logs/fig3/fig3.log",
    conda:
        "../../envs/kneesynth.yaml"
    params:
        cases=config["study_a"].get("figure_cases", 2),
    script:
        "../scripts/study_a_fig3.py"
